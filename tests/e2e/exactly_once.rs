//! Exactly-once: the committed output is a function of the input topics'
//! content. Uninterrupted runs, `segstream replay` and a group of workers
//! under SIGKILL, rebalances and a pause past its session all commit the
//! same changes (same ids, same payloads, emit time aside), each once, and
//! leave the same memberships on the compacted topic.
//!
//! The inputs are a backlog: a micro-batch takes longer than every idle and
//! timeout setting (`worker.partition_idle_ms` 0, commit interval 100 ms,
//! `time.idle_partition_ms` 200 ms), so anything that depended on fetch
//! timing would show.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use segstream_events::{CustomerSegments, SegmentChange};

use crate::support::{Setup, WorkerProc, http_get, metric, metric_sum};

/// A change as compared across runs: everything but the emit time.
fn comparable(c: &SegmentChange) -> String {
    let mut v = serde_json::to_value(c).unwrap();
    v.as_object_mut().unwrap().remove("emit_time");
    v.to_string()
}

/// The changes and memberships `segstream replay` gives over the same input.
struct Reference {
    changes: Vec<String>,
    memberships: BTreeMap<String, String>,
    events: usize,
}

/// Generated history on the setup's input topics and as files; the replay
/// of the files is the reference.
fn workload(setup: &Setup, customers: u32, days: u32, seed: u32) -> Reference {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let generate = [
        "generate",
        "--customers",
        &customers.to_string(),
        "--days",
        &days.to_string(),
        "--seed",
        &seed.to_string(),
    ];
    let out = setup.cli(&[&generate[..], &["--to", "files", "--out", path]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = setup.cli(&generate);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (changes_file, members_file) = (dir.path().join("changes.jsonl"), dir.path().join("members.jsonl"));
    let out = setup.cli(&[
        "replay",
        "--input",
        path,
        "--output",
        changes_file.to_str().unwrap(),
        "--memberships",
        members_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = |p: &Path| std::fs::read_to_string(p).unwrap().lines().map(str::to_owned).collect::<Vec<_>>();
    let mut changes: Vec<String> =
        lines(&changes_file).iter().map(|l| comparable(&serde_json::from_str(l).unwrap())).collect();
    changes.sort();
    let memberships = lines(&members_file)
        .iter()
        .map(|l| {
            let m: CustomerSegments = serde_json::from_str(l).unwrap();
            (m.customer_id.to_string(), serde_json::to_string(&m).unwrap())
        })
        .collect();
    let events = ["clickstream.jsonl", "orders.jsonl"].iter().map(|f| lines(&dir.path().join(f)).len()).sum();
    Reference { changes, memberships, events }
}

/// What a run committed: changes (read_committed, not de-duplicated) and
/// the last membership record per customer.
fn committed(setup: &Setup, want: usize, timeout: Duration) -> (Vec<String>, BTreeMap<String, String>) {
    let records = setup.read(&setup.topic("changes"), want, timeout);
    let mut changes: Vec<String> = records
        .iter()
        .map(|r| comparable(&SegmentChange::from_avro(r.payload.as_deref().unwrap()).unwrap()))
        .collect();
    changes.sort();
    let mut memberships = BTreeMap::new();
    for r in setup.read(&setup.topic("members"), 1, Duration::from_secs(30)) {
        let m = CustomerSegments::from_avro(r.payload.as_deref().unwrap()).unwrap();
        memberships.insert(m.customer_id.to_string(), serde_json::to_string(&m).unwrap());
    }
    (changes, memberships)
}

/// Asserts `got` holds exactly the reference's changes and memberships.
fn assert_same(what: &str, reference: &Reference, got: &(Vec<String>, BTreeMap<String, String>)) {
    let (changes, memberships) = got;
    let mut repeated = changes.clone();
    repeated.dedup();
    let repeats = changes.len() - repeated.len();
    let twice: Vec<&String> = changes.windows(2).filter(|w| w[0] == w[1]).map(|w| &w[0]).take(10).collect();
    if repeats > 0 || changes.len() != reference.changes.len() {
        crate::support::keep_logs();
    }
    let only_got: Vec<&String> =
        changes.iter().filter(|c| reference.changes.binary_search(c).is_err()).take(3).collect();
    let missing: Vec<&String> =
        reference.changes.iter().filter(|c| changes.binary_search(c).is_err()).take(3).collect();
    assert!(
        repeats == 0 && only_got.is_empty() && missing.is_empty() && changes.len() == reference.changes.len(),
        "{what}: {} changes committed, {} in the reference, {repeats} repeated: {twice:#?}\nnot in the reference: {only_got:#?}\nmissing: {missing:#?}",
        changes.len(),
        reference.changes.len(),
    );
    assert_same_memberships(what, reference, memberships);
}

/// Asserts the last membership record of each customer is the reference's.
fn assert_same_memberships(what: &str, reference: &Reference, memberships: &BTreeMap<String, String>) {
    let differing: Vec<&String> = reference
        .memberships
        .keys()
        .filter(|k| memberships.get(*k) != reference.memberships.get(*k))
        .take(3)
        .collect();
    assert!(
        differing.is_empty() && memberships.len() == reference.memberships.len(),
        "{what}: memberships differ for {differing:?} ({} customers vs {})",
        memberships.len(),
        reference.memberships.len()
    );
}

/// Settings of every run here: a backlog never idles, quiet partitions
/// follow soon after their end.
fn backlog_setup(name: &str) -> Setup {
    Setup::new(name, 6)
        .with("time.idle_partition_ms=200")
        .with("worker.partition_idle_ms=0")
        // Every segment kind, RFM timers included.
        .with("segments.definitions=")
}

#[test]
fn uninterrupted_runs_and_a_replay_give_the_same_changes_ids_and_memberships() {
    let setup = backlog_setup("twice");
    let reference = workload(&setup, 300, 365, 21);
    assert!(reference.changes.len() > 5_000, "a real history: {} changes", reference.changes.len());
    // Two independent groups over the same input, at the same time.
    let runs: Vec<Setup> = ["a", "b"].iter().map(|s| setup.second_run(s)).collect();
    let mut workers: Vec<WorkerProc> = runs.iter().map(Setup::spawn_worker).collect();
    for (run, worker) in runs.iter().zip(&mut workers) {
        let got = committed(run, reference.changes.len(), Duration::from_secs(240));
        let addr = worker.http_addr(Duration::from_secs(5));
        let metrics = http_get(&addr, "/metrics").1;
        assert!(
            metric(&metrics, "segstream_batch_duration_seconds_sum")
                / metric(&metrics, "segstream_batch_duration_seconds_count")
                > 0.2,
            "batches take longer than time.idle_partition_ms:\n{metrics}"
        );
        assert_same(&run.name, &reference, &got);
    }
    for mut w in workers {
        assert!(w.terminate(Duration::from_secs(30)).0.success());
    }
}

/// Inputs written by a transactional producer, with aborted transactions
/// between the committed ones, have gaps in their logs (commit markers,
/// aborted records). The worker reads each lane again at its first gap to
/// tell a gap in the log from records its consumer skipped, then takes the
/// lane's gaps as they come: the changes are replay's, no aborted record is
/// read (none is a dead letter), and the gaps are counted.
#[test]
fn inputs_written_in_transactions_with_aborted_ones_between_give_the_changes_of_replay() {
    let source = backlog_setup("txsource");
    let reference = workload(&source, 150, 365, 17);
    let setup = source
        .second_run("txcopy")
        .with(&format!("topics.clickstream=clicks-txcopy-{}", source.name))
        .with(&format!("topics.orders=orders-txcopy-{}", source.name));
    let out = setup.cli(&["topics", "create"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (from, to) = (source.config(), setup.config());
    for (src, dst) in
        [(&from.topics.clickstream, &to.topics.clickstream), (&from.topics.orders, &to.topics.orders)]
    {
        let copy = std::process::Command::new(crate::support::python())
            .arg(crate::support::repo_root().join("tests/support/transactional_copy.py"))
            .args([to.kafka.bootstrap_servers.as_str(), src, dst, "200"])
            .output()
            .unwrap();
        assert!(copy.status.success(), "{}", String::from_utf8_lossy(&copy.stderr));
        eprintln!("{src} -> {dst}: {}", String::from_utf8_lossy(&copy.stdout).trim());
    }
    let mut worker = setup.spawn_worker();
    let got = committed(&setup, reference.changes.len(), Duration::from_secs(240));
    let metrics = http_get(&worker.http_addr(Duration::from_secs(5)), "/metrics").1;
    assert_same("transactional inputs", &reference, &got);
    let jumps = |topic: &str, kind: &str| {
        metric_sum(
            &metrics,
            "segstream_input_offset_jumps_total",
            &format!("topic=\"{topic}\",kind=\"{kind}\""),
        )
    };
    for topic in [&to.topics.clickstream, &to.topics.orders] {
        let (gaps, skipped) = (jumps(topic, "log_gap"), jumps(topic, "skipped"));
        eprintln!(
            "{topic}: {gaps} offsets without a record; {skipped} records skipped by the consumer and read again"
        );
        assert!(gaps > 0.0, "the gaps in {topic} are counted:\n{metrics}");
    }
    assert_eq!(metric_sum(&metrics, "segstream_dead_letters_total", ""), 0.0, "no aborted record was read");
    assert!(worker.terminate(Duration::from_secs(30)).0.success());
}

/// A small deterministic random source for the chaos schedule.
struct Dice(u64);

impl Dice {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.next(to - from))
    }
}

/// A worker of the crash test: its instance id, the running process, and
/// how long each start took to become ready.
struct Member {
    setup: Setup,
    proc: Option<WorkerProc>,
    /// The log of every start.
    logs: Vec<std::path::PathBuf>,
    /// Set when the current process is killed, so its readiness watch stops.
    gone: Arc<AtomicBool>,
}

impl Member {
    fn new(setup: &Setup, id: &str) -> Self {
        Self {
            setup: setup.with(&format!("worker.instance_id={id}")),
            proc: None,
            logs: Vec::new(),
            gone: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Starts the worker and measures its time to ready in the background.
    fn start(&mut self, ready: &Arc<Mutex<Vec<Duration>>>) {
        let started = Instant::now();
        let proc = self.setup.spawn_worker();
        self.logs.push(proc.log.clone());
        let (log, gone, ready) = (proc.log.clone(), Arc::new(AtomicBool::new(false)), Arc::clone(ready));
        self.gone = Arc::clone(&gone);
        std::thread::spawn(move || {
            let mut addr = None;
            while !gone.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(300) {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if addr.is_none() {
                    addr = text
                        .split("serving http://")
                        .nth(1)
                        .and_then(|r| r.split('/').next())
                        .map(str::to_owned);
                }
                if let Some(a) = &addr
                    && http_get(a, "/readyz").0 == 200
                {
                    ready.lock().unwrap().push(started.elapsed());
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        self.proc = Some(proc);
    }

    fn kill(&mut self) {
        self.gone.store(true, Ordering::SeqCst);
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }
}

#[test]
fn three_workers_under_sigkill_rebalances_and_a_pause_commit_exactly_the_uninterrupted_changes() {
    // Checkpoints every second: most restores start from one.
    let setup = backlog_setup("crash").with("checkpoint.interval_ms=1000");
    let reference = workload(&setup, 600, 365, 5);
    let ready = Arc::new(Mutex::new(Vec::new()));
    let mut members: Vec<Member> = (0..4).map(|i| Member::new(&setup, &format!("crash-w{i}"))).collect();
    for m in &mut members[..3] {
        m.start(&ready);
    }
    // Another schedule: SEGSTREAM_CRASH_SEED=<number>.
    let seed = std::env::var("SEGSTREAM_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_cafe);
    let mut dice = Dice(seed);
    let (mut kills, mut pauses, mut joins) = (0, 0, 0);
    let began = Instant::now();
    let mut step = 0;
    while kills < 22 {
        step += 1;
        std::thread::sleep(dice.millis(500, 2_500));
        match step {
            // A fourth worker joins, and later leaves (SIGTERM).
            4 => {
                eprintln!("{:>6.1} s: a fourth worker joins", began.elapsed().as_secs_f64());
                members[3].start(&ready);
                joins += 1;
            }
            14 => {
                eprintln!("{:>6.1} s: the fourth worker leaves (SIGTERM)", began.elapsed().as_secs_f64());
                let (status, _) = members[3].proc.as_mut().unwrap().terminate(Duration::from_secs(30));
                assert!(status.success(), "the fourth worker stops cleanly");
                members[3].proc = None;
            }
            // One worker paused past its session (6 s), then resumed: it rejoins.
            9 => {
                let i = usize::try_from(dice.next(3)).unwrap();
                let p = members[i].proc.as_ref().unwrap();
                eprintln!("{:>6.1} s: worker {i} paused for 10 s", began.elapsed().as_secs_f64());
                p.signal("STOP");
                std::thread::sleep(Duration::from_secs(10));
                p.signal("CONT");
                pauses += 1;
            }
            _ => {
                let i = usize::try_from(dice.next(3)).unwrap();
                eprintln!("{:>6.1} s: SIGKILL worker {i}", began.elapsed().as_secs_f64());
                members[i].kill();
                kills += 1;
                std::thread::sleep(dice.millis(0, 1_000));
                members[i].start(&ready);
            }
        }
        for m in &mut members {
            if let Some(status) = m.proc.as_mut().and_then(WorkerProc::exited) {
                panic!("a worker exited by itself ({status:?}):\n{}", m.proc.as_ref().unwrap().log_text());
            }
        }
    }
    let chaos = began.elapsed();
    let got = committed(&setup, reference.changes.len(), Duration::from_secs(300));
    // Assignments handled by every incarnation of every worker.
    let assignments: usize = members
        .iter()
        .flat_map(|m| &m.logs)
        .map(|log| std::fs::read_to_string(log).unwrap_or_default().matches("partitions assigned").count())
        .sum();
    let restores: usize = members
        .iter()
        .flat_map(|m| &m.logs)
        .map(|log| {
            std::fs::read_to_string(log).unwrap_or_default().matches("restoring from a checkpoint").count()
        })
        .sum();
    let mut times = ready.lock().unwrap().clone();
    times.sort();
    eprintln!(
        "crash test (seed {seed}): {} events, {kills} SIGKILLs, {pauses} pause past the session, {joins} join and leave, {assignments} assignments handled ({restores} partitions restored from checkpoints), {:.0} s of chaos; {} changes committed ({} expected); restart to ready: min {:?}, median {:?}, max {:?} over {} starts",
        reference.events,
        chaos.as_secs_f64(),
        got.0.len(),
        reference.changes.len(),
        times.first().unwrap(),
        times[times.len() / 2],
        times.last().unwrap(),
        times.len(),
    );
    assert_same("three workers under SIGKILL", &reference, &got);
    assert!(restores > 0, "no partition was restored from a checkpoint");
    for m in &mut members {
        if let Some(mut p) = m.proc.take() {
            assert!(p.terminate(Duration::from_secs(30)).0.success());
        }
    }
}

/// Rebalance after rebalance while two workers work off a backlog: a
/// plain consumer joins the group and leaves it again, over and over.
/// librdkafka pauses a member's partitions when it hands it a rebalance,
/// and fetches them again from the position after the last record the
/// member polled; records polled in the same poll as the rebalance, just
/// before it, must therefore be processed for the partitions the worker
/// keeps (they were dropped, to be "read again" from the committed
/// offsets, which a kept partition never is).
#[test]
fn records_polled_with_a_rebalance_of_partitions_the_worker_keeps_are_processed() {
    let setup = backlog_setup("keeping");
    let reference = workload(&setup, 800, 365, 13);
    let ready = Arc::new(Mutex::new(Vec::new()));
    let mut members: Vec<Member> = (0..2).map(|i| Member::new(&setup, &format!("keeping-w{i}"))).collect();
    for m in &mut members {
        m.start(&ready);
    }
    let addrs: Vec<String> =
        members.iter().map(|m| m.proc.as_ref().unwrap().http_addr(Duration::from_secs(30))).collect();
    let config = setup.config();
    let rounds = 30;
    let flapping = std::process::Command::new(crate::support::python())
        .arg(crate::support::repo_root().join("tests/support/flapping_member.py"))
        .args([
            config.kafka.bootstrap_servers.as_str(),
            &config.kafka.group_id,
            &config.topics.clickstream,
            &rounds.to_string(),
            "0.2",
        ])
        .output()
        .unwrap();
    assert!(flapping.status.success(), "{}", String::from_utf8_lossy(&flapping.stderr));
    // Still meaningful: the workers were still working off their backlog
    // when the last rebalance came (records consumed count re-reads after
    // restores, so the committed changes tell).
    let by_then = setup.read_to_end(&setup.topic("changes"), Duration::from_secs(120)).len();
    assert!(
        by_then < reference.changes.len(),
        "the backlog ran out before the rebalances did: {by_then} of {} changes committed by then",
        reference.changes.len()
    );
    let got = committed(&setup, reference.changes.len(), Duration::from_secs(300));
    let rebalances: f64 =
        addrs.iter().map(|a| metric_sum(&http_get(a, "/metrics").1, "segstream_rebalances_total", "")).sum();
    eprintln!(
        "{rounds} joins and leaves of another member: {rebalances} rebalances handled by the workers, {by_then} changes committed by then; {} committed in the end ({} expected)",
        got.0.len(),
        reference.changes.len()
    );
    assert_same("two workers through rebalances", &reference, &got);
    for m in &mut members {
        if let Some(mut p) = m.proc.take() {
            assert!(p.terminate(Duration::from_secs(30)).0.success());
        }
    }
}

/// `worker.threads = 2`: each worker process runs two pipelines, each its
/// own group member and transactional producer. Two such workers over a
/// backlog, SIGKILLed and restarted (both threads die at once), then one
/// stopped and started again with SIGTERM, commit exactly the changes and
/// memberships of `segstream replay`; `/metrics` shows each thread.
#[test]
fn workers_of_two_pipeline_threads_under_sigkill_commit_exactly_the_uninterrupted_changes() {
    let setup = backlog_setup("threads").with("checkpoint.interval_ms=1000").with("worker.threads=2");
    let reference = workload(&setup, 400, 365, 8);
    let ready = Arc::new(Mutex::new(Vec::new()));
    let mut members: Vec<Member> = (0..2).map(|i| Member::new(&setup, &format!("threads-w{i}"))).collect();
    for m in &mut members {
        m.start(&ready);
    }
    let mut dice = Dice(0x7e4d_5eed);
    for kill in 0..8 {
        std::thread::sleep(dice.millis(700, 2_500));
        let i = usize::try_from(dice.next(2)).unwrap();
        if kill == 2 {
            // Both threads of worker 0 show.
            let addr = members[0].proc.as_ref().unwrap().http_addr(Duration::from_secs(30));
            let metrics = http_get(&addr, "/metrics").1;
            for n in 0..2 {
                let label = format!("segstream_assigned_partitions{{pipeline=\"{n}\"}}");
                assert!(metrics.contains(&label), "{label}:\n{metrics}");
            }
        }
        eprintln!("SIGKILL worker {i} (both its pipeline threads)");
        members[i].kill();
        std::thread::sleep(dice.millis(0, 1_000));
        members[i].start(&ready);
    }
    members[1].proc.as_ref().unwrap().wait_ready(Duration::from_secs(120));
    let (status, _) = members[1].proc.as_mut().unwrap().terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "a worker of two threads stops cleanly on SIGTERM:\n{}",
        members[1].proc.as_ref().unwrap().log_text()
    );
    members[1].proc = None;
    members[1].start(&ready);
    let got = committed(&setup, reference.changes.len(), Duration::from_secs(300));
    assert_same("two workers of two pipeline threads under SIGKILL", &reference, &got);
    for m in &mut members {
        if let Some(mut p) = m.proc.take() {
            let (status, _) = p.terminate(Duration::from_secs(30));
            assert!(status.success(), "{}", p.log_text());
        }
    }
}

/// The latest WARN and ERROR lines of every start of every member.
fn troubles(members: &[Member]) -> String {
    let lines: Vec<String> = members
        .iter()
        .flat_map(|m| &m.logs)
        .flat_map(|log| {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let name = log.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            text.lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .map(|l| format!("{name}: {}", l.chars().take(400).collect::<String>()))
                .collect::<Vec<_>>()
        })
        .collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A trained model published while three workers work off a backlog and are
/// SIGKILLed: every other change is exactly the replay's, each once; every
/// customer's cluster records form one unbroken chain (no entry twice, no
/// exit of a segment not held), the model's swap reached each customer at
/// most once, and the memberships left hold each buyer's last cluster.
#[test]
fn a_model_swapped_in_during_a_backlog_under_sigkill_is_emitted_once_and_changes_nothing_else() {
    let setup = Setup::new("modelkill", 6)
        .with("time.idle_partition_ms=200")
        .with("worker.partition_idle_ms=0")
        .with("checkpoint.interval_ms=1000")
        .with("trainer.k_min=2");
    let (customers, days, seed) = (400, 365, 9);
    let reference = workload(&setup, customers, days, seed);
    // The model, fitted on a backfill of the same history.
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    let generate = ["generate", "--customers", "400", "--days", "365", "--seed", "9"];
    let out = setup.cli(&[&generate[..], &["--to", "files", "--out", history.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let snapshot = dir.path().join("state.snap");
    let backfill =
        ["backfill", "--input", history.to_str().unwrap(), "--snapshot", snapshot.to_str().unwrap()];
    let out = setup.cli(&[&backfill[..], &["--partitions", "6"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let ready = Arc::new(Mutex::new(Vec::new()));
    let mut members: Vec<Member> = (0..3).map(|i| Member::new(&setup, &format!("model-w{i}"))).collect();
    for m in &mut members {
        m.start(&ready);
    }
    let mut dice = Dice(0x0dd_ba11);
    for step in 0..10 {
        std::thread::sleep(dice.millis(500, 2_000));
        if step == 2 {
            let out = setup.cli(&["train", "--snapshot", snapshot.to_str().unwrap()]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            eprintln!("model 1 published");
            continue;
        }
        let i = usize::try_from(dice.next(3)).unwrap();
        members[i].kill();
        std::thread::sleep(dice.millis(0, 1_000));
        members[i].start(&ready);
        for m in &mut members {
            if let Some(status) = m.proc.as_mut().and_then(WorkerProc::exited) {
                panic!("a worker exited by itself ({status:?}):\n{}", m.proc.as_ref().unwrap().log_text());
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    let (all, others) = loop {
        let all = setup
            .read_to_end(&setup.topic("changes"), Duration::from_secs(120))
            .iter()
            .map(|r| SegmentChange::from_avro(r.payload.as_deref().unwrap()).unwrap())
            .collect::<Vec<_>>();
        let mut others: Vec<String> =
            all.iter().filter(|c| c.kind.as_str() != "cluster").map(comparable).collect();
        others.sort();
        let swapped = all.iter().any(|c| c.trigger == segstream_events::Trigger::ModelUpdate);
        if (others.len() >= reference.changes.len() && swapped) || Instant::now() > deadline {
            break (all, others);
        }
        // A worker that stops by itself now would leave the rest undone: say why.
        for m in &mut members {
            if let Some(status) = m.proc.as_mut().and_then(WorkerProc::exited) {
                crate::support::keep_logs();
                panic!(
                    "a worker exited by itself ({status:?}) with {} of {} changes out:\n{}",
                    others.len(),
                    reference.changes.len(),
                    m.proc.as_ref().unwrap().log_text()
                );
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    if others.len() != reference.changes.len() {
        crate::support::keep_logs();
    }
    let mut memberships = BTreeMap::new();
    let mut clusters_held = BTreeMap::new();
    for r in setup.read(&setup.topic("members"), 1, Duration::from_secs(30)) {
        let mut m = CustomerSegments::from_avro(r.payload.as_deref().unwrap()).unwrap();
        let id = m.customer_id.to_string();
        let (cluster, rest): (Vec<_>, Vec<_>) =
            m.segments.into_iter().partition(|s| s.kind.as_str() == "cluster");
        clusters_held.insert(id.clone(), cluster.into_iter().map(|s| s.segment).collect::<BTreeSet<_>>());
        m.segments = rest;
        memberships.insert(
            id,
            m.segments.iter().map(|s| format!("{}/{}", s.kind.as_str(), s.segment)).collect::<BTreeSet<_>>(),
        );
    }
    // Every change but the clusters: exactly the replay's, each once.
    let mut repeated = others.clone();
    repeated.dedup();
    assert!(
        repeated.len() == others.len() && others == reference.changes,
        "{} changes besides clusters ({} distinct), {} in the replay; warnings and errors of the workers:\n{}",
        others.len(),
        repeated.len(),
        reference.changes.len(),
        troubles(&members)
    );
    for (id, m) in &reference.memberships {
        let m: CustomerSegments = serde_json::from_str(m).unwrap();
        let want: BTreeSet<String> =
            m.segments.iter().map(|s| format!("{}/{}", s.kind.as_str(), s.segment)).collect();
        assert_eq!(memberships.get(id), Some(&want), "{id}");
    }
    // The clusters: one unbroken chain per customer, each id once.
    let ids: BTreeSet<&str> = all.iter().map(|c| c.event_id.as_str()).collect();
    assert_eq!(ids.len(), all.len(), "a change committed twice");
    let mut held: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut swaps: BTreeMap<String, usize> = BTreeMap::new();
    let mut chain: Vec<&SegmentChange> = all.iter().filter(|c| c.kind.as_str() == "cluster").collect();
    // Per customer, in offset order (a customer's records are on one
    // partition; the sort is stable).
    chain.sort_by_key(|c| c.customer_id.to_string());
    for c in &chain {
        let set = held.entry(c.customer_id.to_string()).or_default();
        match c.change.as_str() {
            "entered" => assert!(set.insert(c.segment.clone()), "{c:?} entered twice"),
            _ => assert!(set.remove(&c.segment), "{c:?} exits what it did not hold"),
        }
        if c.trigger == segstream_events::Trigger::ModelUpdate
            && c.change.as_str() == "entered"
            && c.segment.starts_with("cluster_")
        {
            *swaps.entry(c.customer_id.to_string()).or_default() += 1;
            assert_eq!(c.model_version.as_deref(), Some("1"));
        }
    }
    assert!(swaps.values().all(|n| *n == 1), "the swap reached a customer twice");
    assert!(!swaps.is_empty(), "the swap reached no customer already there");
    for (id, segments) in &held {
        assert!(
            segments.is_empty() || segments.len() == 2,
            "{id}: a cluster and a micro-segment, {segments:?}"
        );
        assert_eq!(clusters_held.get(id).cloned().unwrap_or_default(), *segments, "{id}");
    }
    eprintln!(
        "model under SIGKILL: {} changes besides clusters, {} cluster changes, {} customers reached by the swap",
        others.len(),
        chain.len(),
        swaps.len()
    );
    for m in &mut members {
        if let Some(mut p) = m.proc.take() {
            assert!(p.terminate(Duration::from_secs(30)).0.success());
        }
    }
}

/// Static members and cooperative rebalancing: a member that dies between
/// the two rounds of a rebalance and comes back within its session gets
/// back what the first round left it, without a rebalance, and the
/// partitions the first round took from it (for the second round, which
/// it would have started) are held by nobody. The workers see that in the
/// group's description and make the group hand them out: every change is
/// committed, once.
#[test]
fn partitions_left_to_nobody_by_a_member_dying_between_rebalance_rounds_are_taken_up() {
    use std::io::BufRead;
    let setup = backlog_setup("unowned");
    let reference = workload(&setup, 100, 120, 5);
    let config = setup.config();
    let mut doomed = std::process::Command::new(crate::support::python())
        .arg(crate::support::repo_root().join("tests/support/dies_on_revoke.py"))
        .args([
            config.kafka.bootstrap_servers.as_str(),
            &config.kafka.group_id,
            &config.topics.clickstream,
            "unowned-w1",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (said, lines) = std::sync::mpsc::channel();
    let stdout = std::io::BufReader::new(doomed.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if said.send(line).is_err() {
                return;
            }
        }
    });
    let next = || lines.recv_timeout(Duration::from_secs(60)).expect("the plain consumer says nothing");
    assert_eq!(next(), "assigned 6", "alone in the group, it holds every partition");

    let ready = Arc::new(Mutex::new(Vec::new()));
    let mut members: Vec<Member> =
        ["unowned-w0", "unowned-w1"].iter().map(|id| Member::new(&setup, id)).collect();
    // The first worker's join starts a rebalance: its first round takes
    // three partitions from the plain consumer, which dies instead of
    // giving them up and joining the second round.
    members[0].start(&ready);
    assert_eq!(next(), "revoked 3");
    assert!(doomed.wait().unwrap().success());
    // Back under the dead member's instance id, within its session.
    members[1].start(&ready);

    let got = committed(&setup, reference.changes.len(), Duration::from_secs(240));
    let repairs: f64 = members
        .iter()
        .map(|m| {
            let addr = m.proc.as_ref().unwrap().http_addr(Duration::from_secs(5));
            metric(&http_get(&addr, "/metrics").1, "segstream_rebalances_total{kind=\"repair\"}")
        })
        .sum();
    assert_same("two workers after a member died between rebalance rounds", &reference, &got);
    assert!(
        repairs >= 1.0,
        "the gap was repaired by a worker leaving and joining again: {}",
        troubles(&members)
    );
}

/// At-least-once: the changes are readable as soon as they are made, long
/// before the transaction that commits their offsets; a SIGKILL in a
/// backlog loses none of them (the commit waits for the outputs'
/// deliveries first), and what it sends again is the same changes, with the
/// same ids.
#[test]
fn at_least_once_changes_are_readable_before_their_commit_and_a_sigkill_loses_none() {
    // Readable before the commit: one transaction every 30 s.
    let soon = Setup::new("alosoon", 2)
        .with("worker.processing_guarantee=at_least_once")
        .with("worker.commit_interval_ms=30000")
        .with("worker.transaction_timeout_ms=60000");
    let order = crate::support::order_record("alo-1", "o-1", 1_704_103_200_000);
    crate::support::produce(&soon.producer(), &soon.topic("orders"), &[order]);
    let mut worker = soon.spawn_worker();
    let addr = worker.wait_ready(Duration::from_secs(60));
    let started = Instant::now();
    let changes = soon.read(&soon.topic("changes"), 1, Duration::from_secs(20));
    let commits =
        metric(&http_get(&addr, "/metrics").1, "segstream_transactions_total{result=\"committed\"}");
    assert!(
        !changes.is_empty() && commits == 0.0,
        "{} changes readable {:?} after ready, {commits} transactions committed",
        changes.len(),
        started.elapsed()
    );
    assert!(worker.terminate(Duration::from_secs(60)).0.success());

    // A SIGKILL in a backlog.
    let setup = backlog_setup("alokill").with("worker.processing_guarantee=at_least_once");
    let reference = workload(&setup, 200, 365, 13);
    let mut worker = setup.spawn_worker();
    let some = setup.read(&setup.topic("changes"), reference.changes.len() / 3, Duration::from_secs(120));
    assert!(!some.is_empty(), "nothing came out before the kill:\n{}", worker.log_text());
    worker.kill();
    let mut worker = setup.spawn_worker();
    let deadline = Instant::now() + Duration::from_secs(300);
    let (all, distinct, memberships) = loop {
        let (all, memberships) = committed(&setup, reference.changes.len(), Duration::from_secs(30));
        let mut distinct = all.clone();
        distinct.dedup();
        if distinct.len() >= reference.changes.len() || Instant::now() > deadline {
            break (all, distinct, memberships);
        }
    };
    assert!(
        distinct == reference.changes,
        "{} changes ({} distinct) after a SIGKILL, {} in the reference:\n{}",
        all.len(),
        distinct.len(),
        reference.changes.len(),
        worker.log_text()
    );
    eprintln!("at-least-once after a SIGKILL: {} changes, {} distinct", all.len(), distinct.len());
    assert_same_memberships("at-least-once after a SIGKILL", &reference, &memberships);
    assert!(worker.terminate(Duration::from_secs(60)).0.success());
}
