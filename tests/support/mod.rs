//! Test harness: a real Apache Kafka broker started once per test binary on
//! free ports (torn down when the binary exits, even after a panic), unique
//! topics per test, the real `segstream` binary as a child process, and
//! plain rdkafka producers/readers.

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use segstream_config::Config;
use segstream_events::{
    ClickEvent, ClickEventType, CustomerId, EventTime, OrderEvent, OrderStatus, PayloadFormat, encode_click,
    encode_order,
};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn segstream_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_segstream"))
}

/// The broker of this test binary.
pub struct Broker {
    pub bootstrap: String,
    /// The SASL_PLAINTEXT listener: SCRAM-SHA-256, user `segstream`,
    /// password `segstream-secret`.
    pub sasl_bootstrap: String,
    pub dir: PathBuf,
}

fn run_script(args: &[&str]) -> Output {
    let mut script = Command::new(repo_root().join("scripts/kafka-broker.sh"));
    if let Some(profile) = JVM_PROFILE.get() {
        script.env("KAFKA_JVM_PROFILE", profile);
    }
    script.args(args).stdin(Stdio::null()).output().expect("running scripts/kafka-broker.sh")
}

/// The JVM settings of the brokers this process starts (`KAFKA_JVM_PROFILE`
/// of scripts/kafka-broker.sh), if not the test default.
static JVM_PROFILE: OnceLock<&'static str> = OnceLock::new();

impl Broker {
    /// Brokers started from now on run with the JVM settings of a
    /// production broker (benchmarks), not the quick-start test ones.
    pub fn production_jvm() {
        JVM_PROFILE.set("throughput").ok();
    }

    /// Starts the broker on first use; later calls share it.
    pub fn shared() -> &'static Broker {
        static BROKER: OnceLock<Broker> = OnceLock::new();
        BROKER.get_or_init(|| Broker::start("segstream-test-broker"))
    }

    /// A broker of one test's own (one that test may stop and restart),
    /// torn down with the test process.
    pub fn own(name: &str) -> Broker {
        Broker::start(&format!("segstream-test-broker-{name}"))
    }

    fn start(name: &str) -> Broker {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).expect("broker dir");
        let free_port =
            || String::from_utf8(run_script(&["free-port"]).stdout).expect("port").trim().to_owned();
        let (port, sasl_port) = (free_port(), free_port());
        // Tear the broker down when this test process exits, whatever the way.
        // The watchdog outlives us on purpose: a short-lived shell starts it in
        // its own session and returns.
        let watchdog = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; '{script}' stop --dir '{dir}' >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            script = repo_root().join("scripts/kafka-broker.sh").display(),
            dir = dir.display(),
        );
        let status = Command::new("bash")
            .args(["-c", "setsid bash -c \"$1\" >/dev/null 2>&1 < /dev/null &", "watchdog", &watchdog])
            .status()
            .expect("broker watchdog");
        assert!(status.success());
        let out = run_script(&[
            "start",
            "--dir",
            dir.to_str().unwrap(),
            "--port",
            &port,
            "--sasl-port",
            &sasl_port,
        ]);
        assert!(
            out.status.success(),
            "broker did not start:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Broker {
            bootstrap: format!("127.0.0.1:{port}"),
            sasl_bootstrap: format!("127.0.0.1:{sasl_port}"),
            dir,
        }
    }

    pub fn stop(&self) {
        let out = run_script(&["stop", "--dir", self.dir.to_str().unwrap()]);
        assert!(out.status.success(), "stop: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Restarts on the same log directory and port, after `down` without a broker.
    pub fn restart(&self, down: Duration) {
        self.stop();
        std::thread::sleep(down);
        let port = self.bootstrap.rsplit(':').next().unwrap();
        let out = run_script(&["start", "--dir", self.dir.to_str().unwrap(), "--port", port]);
        assert!(out.status.success(), "restart: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// With `SEGSTREAM_TEST_KEEP=DIR`, copies the broker's directory (its log and
/// every worker's log of this test run) to DIR, which a failing test calls
/// before it panics: the directory itself goes with the test process.
pub fn keep_logs() {
    let Some(to) = std::env::var_os("SEGSTREAM_TEST_KEEP") else { return };
    let status = Command::new("cp").arg("-r").arg(&Broker::shared().dir).arg(&to).status();
    eprintln!("broker and worker logs copied to {} ({status:?})", PathBuf::from(to).display());
}

/// Keeps the logs (see [`keep_logs`]) if the test panics while it lives.
pub struct KeepLogsOnPanic;

impl Drop for KeepLogsOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            keep_logs();
        }
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Unique names for one test: topics, group, instance.
#[derive(Clone, Debug)]
pub struct Setup {
    pub name: String,
    pub sets: Vec<String>,
    /// A TOML config file under the `--set`s (for keys `--set` cannot name).
    pub config_file: Option<PathBuf>,
    /// Environment variables of every segstream process it runs.
    pub env: Vec<(String, String)>,
}

impl Setup {
    /// Topics and group of a fresh test, created on the shared broker.
    pub fn new(test: &str, partitions: i32) -> Self {
        Self::on(Broker::shared(), test, partitions)
    }

    /// The same on `broker`.
    pub fn on(broker: &Broker, test: &str, partitions: i32) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("{test}-{}-{n}", std::process::id());
        let sets = vec![
            format!("kafka.bootstrap_servers={}", broker.bootstrap),
            format!("kafka.group_id=g-{name}"),
            format!("topics.clickstream=clicks-{name}"),
            format!("topics.orders=orders-{name}"),
            format!("topics.segment_changes=changes-{name}"),
            format!("topics.customer_segments=members-{name}"),
            format!("topics.dead_letter=dlq-{name}"),
            format!("topics.decisions=decisions-{name}"),
            format!("topics.erasures=erasures-{name}"),
            format!("topics.definitions=definitions-{name}"),
            format!("topics.models=models-{name}"),
            format!("topics.partitions={partitions}"),
            format!("worker.instance_id=w-{name}"),
            // Shared by every worker of the test, as by a group's workers.
            format!("checkpoint.url={}", broker.dir.join(format!("checkpoints-{name}")).display()),
            // The broker's smallest session (group.min.session.timeout.ms).
            "worker.session_timeout_ms=6000".to_owned(),
            "http.listen=127.0.0.1:0".to_owned(),
            "sql.listen=127.0.0.1:0".to_owned(),
            // Lifecycle and cart only: most tests count exact records of
            // those. The tests of RFM and of the guarantees take the
            // built-in definitions (`.with("segments.definitions=")`).
            format!(
                "segments.definitions={}",
                repo_root().join("tests/support/lifecycle-only.toml").display()
            ),
        ];
        let setup = Self { name, sets, config_file: None, env: Vec::new() };
        let out = setup.cli(&["topics", "create"]);
        assert!(out.status.success(), "topics create: {}", String::from_utf8_lossy(&out.stderr));
        setup
    }

    /// The same inputs, other outputs and group: an independent second run.
    pub fn second_run(&self, suffix: &str) -> Self {
        let mut sets: Vec<String> = self
            .sets
            .iter()
            .filter(|s| {
                !(s.starts_with("kafka.group_id")
                    || s.starts_with("topics.segment_changes")
                    || s.starts_with("topics.customer_segments")
                    || s.starts_with("topics.dead_letter")
                    || s.starts_with("worker.instance_id"))
            })
            .cloned()
            .collect();
        let name = format!("{}-{suffix}", self.name);
        sets.extend([
            format!("kafka.group_id=g-{name}"),
            format!("topics.segment_changes=changes-{name}"),
            format!("topics.customer_segments=members-{name}"),
            format!("topics.dead_letter=dlq-{name}"),
            format!("worker.instance_id=w-{name}"),
        ]);
        let s = Self { name, sets, config_file: self.config_file.clone(), env: self.env.clone() };
        let out = s.cli(&["topics", "create"]);
        assert!(out.status.success(), "topics create: {}", String::from_utf8_lossy(&out.stderr));
        s
    }

    pub fn with(&self, set: &str) -> Self {
        let mut s = self.clone();
        s.sets.push(set.to_owned());
        s
    }

    /// The same with `name=value` in the processes' environment.
    pub fn with_env(&self, name: &str, value: &str) -> Self {
        let mut s = self.clone();
        s.env.push((name.to_owned(), value.to_owned()));
        s
    }

    pub fn config(&self) -> Config {
        Config::load(self.config_file.as_deref(), &self.sets).expect("test config")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(segstream_bin());
        if let Some(file) = &self.config_file {
            c.arg("--config").arg(file);
        }
        for s in &self.sets {
            c.arg("--set").arg(s);
        }
        c.args(args)
            .stdin(Stdio::null())
            .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
            .env("SEGSTREAM_SQL_TOKEN", SQL_TOKEN)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Runs a segstream subcommand to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running segstream")
    }

    /// Starts `segstream worker`; logs go to a file next to the broker.
    pub fn spawn_worker(&self) -> WorkerProc {
        self.spawn(&["worker"])
    }

    /// Starts a long-running segstream subcommand; logs go to a file next
    /// to the broker.
    pub fn spawn(&self, args: &[&str]) -> WorkerProc {
        let log = Broker::shared().dir.join(format!(
            "{}-{}-{}.log",
            args[0],
            self.name,
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let file = std::fs::File::create(&log).expect("process log");
        let child =
            self.command(args).stdout(Stdio::null()).stderr(file).spawn().expect("spawning the worker");
        WorkerProc { child: Some(child), log }
    }

    /// Deletes `topic` (`topics create` makes it again).
    pub fn delete_topic(&self, topic: &str) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.config().kafka.bootstrap_servers)
            .create()
            .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let done =
            runtime.block_on(admin.delete_topics(&[topic], &AdminOptions::new())).expect("delete topic");
        for r in done {
            assert!(r.is_ok(), "deleting {topic}: {r:?}");
        }
    }

    /// The value of a topic's config entry `key`, as the broker has it.
    pub fn topic_config(&self, topic: &str, key: &str) -> Option<String> {
        use rdkafka::admin::ResourceSpecifier;
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.config().kafka.bootstrap_servers)
            .create()
            .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let described = runtime
            .block_on(admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new()))
            .expect("describe configs");
        let resource = described.into_iter().next()?.ok()?;
        resource.get(key).and_then(|e| e.value.clone())
    }

    /// Deletes every record of partition `partition` of `topic` (as
    /// retention would).
    pub fn delete_records(&self, topic: &str, partition: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.config().kafka.bootstrap_servers)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::End).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let done =
            runtime.block_on(admin.delete_records(&tpl, &AdminOptions::new())).expect("delete records");
        for e in done.elements() {
            assert!(e.error().is_ok(), "deleting records of {topic}[{partition}]: {:?}", e.error());
        }
    }

    pub fn producer(&self) -> ThreadedProducer<DefaultProducerContext> {
        segstream_kafka::producer_config(&self.config(), None).unwrap().create().unwrap()
    }

    pub fn topic(&self, key: &str) -> String {
        let c = self.config();
        match key {
            "clickstream" => c.topics.clickstream,
            "orders" => c.topics.orders,
            "changes" => c.topics.segment_changes,
            "members" => c.topics.customer_segments,
            "dlq" => c.topics.dead_letter,
            "erasures" => c.topics.erasures,
            "definitions" => c.topics.definitions,
            "models" => c.topics.models,
            other => panic!("unknown topic key {other}"),
        }
    }

    /// Reads `topic` from the beginning (read_committed) until `want` records
    /// arrived or `timeout` passed, then one more second, so that records
    /// beyond `want` (duplicates, extras) are seen too.
    pub fn read(&self, topic: &str, want: usize, timeout: Duration) -> Vec<Record> {
        let consumer = self.reader(topic, false);
        let mut deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut settling = false;
        while Instant::now() < deadline {
            if !settling && out.len() >= want {
                settling = true;
                deadline = Instant::now() + Duration::from_secs(1);
            }
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                // librdkafka reports transient trouble (a connection dropped
                // under load) as errors and recovers by itself.
                match m {
                    Ok(m) => out.push(Record::of(&m)),
                    Err(e) => eprintln!("reading {topic}: {e} (retrying)"),
                }
            }
        }
        out
    }

    /// Every record of `topic` committed now: read from the start until
    /// each partition reports its end, however long that takes under load
    /// (up to `timeout`, then it panics).
    pub fn read_to_end(&self, topic: &str, timeout: Duration) -> Vec<Record> {
        let consumer = self.reader(topic, true);
        let partitions = consumer.assignment().unwrap().count();
        let deadline = Instant::now() + timeout;
        let mut ended = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        while ended.len() < partitions {
            assert!(
                Instant::now() < deadline,
                "{topic}: {} of {partitions} partitions read to their end",
                ended.len()
            );
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => out.push(Record::of(&m)),
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    ended.insert(p);
                }
                Some(Err(e)) => eprintln!("reading {topic}: {e} (retrying)"),
                None => {}
            }
        }
        out
    }

    /// A read_committed reader of every partition of `topic` from its start.
    fn reader(&self, topic: &str, eof: bool) -> BaseConsumer {
        let group = format!("reader-{}-{}", self.name, COUNTER.fetch_add(1, Ordering::SeqCst));
        let mut config = segstream_kafka::reader_config(&self.config(), &group).unwrap();
        config.set("enable.partition.eof", eof.to_string());
        let consumer: BaseConsumer = config.create().unwrap();
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in md.topics()[0].partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        consumer
    }
}

pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
}

impl Record {
    fn of(m: &rdkafka::message::BorrowedMessage<'_>) -> Self {
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Record {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: m.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Sends keyed payloads and waits for delivery.
pub fn produce(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    records: &[(String, Vec<u8>)],
) {
    for (key, payload) in records {
        producer.send(BaseRecord::to(topic).key(key.as_str()).payload(payload.as_slice())).expect("enqueue");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// Sends keyed payloads with their own Kafka timestamps (ms) and waits for delivery.
pub fn produce_at(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    records: &[(String, Vec<u8>, i64)],
) {
    for (key, payload, ts) in records {
        loop {
            let record = BaseRecord::to(topic).key(key.as_str()).payload(payload.as_slice()).timestamp(*ts);
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    _,
                )) => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => panic!("enqueue: {e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
}

/// A running `segstream worker`.
pub struct WorkerProc {
    child: Option<Child>,
    pub log: PathBuf,
}

impl WorkerProc {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// The address the worker's HTTP server bound (it logs it).
    pub fn http_addr(&self, timeout: Duration) -> String {
        self.logged_addr("serving http://", timeout)
    }

    /// The address of the worker's `/sql` listener (it logs it).
    pub fn sql_addr(&self) -> String {
        self.logged_addr("serving SQL on http://", Duration::from_secs(60))
    }

    /// The address the latest log line starting with `prefix` names.
    fn logged_addr(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(pos) = text.rfind(prefix) {
                let rest = &text[pos + prefix.len()..];
                return rest.split('/').next().unwrap().to_owned();
            }
            assert!(Instant::now() < deadline, "worker did not log {prefix}:\n{text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until /readyz answers 200.
    pub fn wait_ready(&self, timeout: Duration) -> String {
        let addr = self.http_addr(timeout);
        let deadline = Instant::now() + timeout;
        while http_get(&addr, "/readyz").0 != 200 {
            assert!(Instant::now() < deadline, "worker not ready:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
        addr
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait for the exit (at most `deadline`).
    pub fn terminate(&mut self, deadline: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("kill");
        assert!(status.success());
        let mut child = self.child.take().expect("running");
        loop {
            if let Some(s) = child.try_wait().expect("wait") {
                return (s, started.elapsed());
            }
            if started.elapsed() > deadline {
                child.kill().ok();
                panic!("worker did not stop within {deadline:?} of SIGTERM:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, and reap the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`, ...).
    pub fn signal(&self, name: &str) {
        let status =
            Command::new("kill").args([&format!("-{name}"), &self.pid().to_string()]).status().expect("kill");
        assert!(status.success(), "kill -{name} {}", self.pid());
    }

    /// Exited already (by itself)?
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let started = Instant::now();
        let mut child = self.child.take().expect("running");
        loop {
            if let Some(s) = child.try_wait().expect("wait") {
                return s;
            }
            assert!(started.elapsed() < timeout, "worker still running:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

/// The bearer token of the test workers' `/sql`.
pub const SQL_TOKEN: &str = "test-token-3f9c";

/// GET on a worker's `/sql` listener, with its token.
pub fn sql_get(addr: &str, path: &str) -> (u16, String) {
    request(addr, "GET", path, &format!("Authorization: Bearer {SQL_TOKEN}\r\n"), "")
}

/// POST of `body` to a worker's `/sql` listener, with its token.
pub fn sql_post(addr: &str, path: &str, body: &str) -> (u16, String) {
    request(addr, "POST", path, &format!("Authorization: Bearer {SQL_TOKEN}\r\n"), body)
}

/// Minimal HTTP/1.0 GET: (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    request(addr, "GET", path, "", "")
}

/// One HTTP/1.0 request with extra `headers` (each ending in CRLF).
pub fn request(addr: &str, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    let len = body.len();
    http(
        addr,
        &format!(
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}Content-Type: text/plain\r\nContent-Length: {len}\r\n\r\n{body}"
        ),
    )
}

/// Sends one HTTP/1.0 request; the status and body of the answer (0 and
/// nothing if there was none).
fn http(addr: &str, request: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else { return (0, String::new()) };
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    if s.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut text = String::new();
    s.read_to_string(&mut text).ok();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// The value of an unlabelled or fully-labelled metric line, 0 if absent.
/// Customer ids the batch SQL over the history files in `dir` selects.
pub fn batch_ids(setup: &Setup, dir: &std::path::Path, query: &str) -> std::collections::BTreeSet<String> {
    let out = setup.cli(&["sql", "--input", dir.to_str().unwrap(), "--format", "json", query]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    rows.iter().map(|r| r["customer_id"].as_str().unwrap().to_owned()).collect()
}

/// The sum of every series of `name` whose labels include `labels`
/// (`a="x",b="y"`; empty: all): a worker with several pipeline threads
/// has one series per thread.
pub fn metric_sum(body: &str, name: &str, labels: &str) -> f64 {
    let wanted: Vec<&str> = labels.split(',').filter(|l| !l.is_empty()).collect();
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (line_name, line_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let have: Vec<&str> = line_labels.split(',').collect();
            (line_name == name && wanted.iter().all(|w| have.contains(w)))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

pub fn metric(body: &str, name_and_labels: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A minimal click of `customer` at `ms`, Avro-encoded, keyed by the customer.
pub fn click_record(customer: &str, ms: i64, event_type: ClickEventType) -> (String, Vec<u8>) {
    let e = ClickEvent {
        event_id: format!("t-{customer}-{ms}"),
        customer_id: CustomerId::new(customer),
        session_id: None,
        event_type,
        event_time: EventTime::from_millis(ms),
        device: None,
        page: None,
        product_id: None,
        category: None,
        price: None,
        search_query: None,
    };
    (customer.to_owned(), encode_click(&e, PayloadFormat::Avro).unwrap())
}

/// A minimal placed order `id` of `customer` at `ms`, Avro-encoded, keyed by
/// the customer.
pub fn order_record(customer: &str, id: &str, ms: i64) -> (String, Vec<u8>) {
    let o = OrderEvent {
        order_id: id.to_owned(),
        customer_id: CustomerId::new(customer),
        event_time: EventTime::from_millis(ms),
        status: OrderStatus::Placed,
        total: 25.0,
        currency: "EUR".into(),
        discount_amount: 0.0,
        item_count: 1,
        categories: vec![],
        payment_method: None,
    };
    (customer.to_owned(), encode_order(&o, PayloadFormat::Avro).unwrap())
}

/// The Python of the test tools (`make test` installs them into .local/venv).
pub fn python() -> PathBuf {
    let venv = repo_root().join(".local/venv/bin/python");
    let python = std::env::var_os("SEGSTREAM_PYTHON").map(PathBuf::from).unwrap_or(venv);
    assert!(
        python.exists(),
        "{} not found: run `make test`, which installs the Python test tools into .local/venv (or set SEGSTREAM_PYTHON)",
        python.display()
    );
    python
}

/// An S3-compatible server (moto) on 127.0.0.1 with one bucket, stopped on drop.
pub struct S3Server {
    child: Child,
    pub endpoint: String,
}

impl S3Server {
    pub fn start(bucket: &str) -> Self {
        let port = String::from_utf8(run_script(&["free-port"]).stdout).expect("port").trim().to_owned();
        let child = Command::new(python())
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto's server");
        let server = Self { child, endpoint: format!("http://127.0.0.1:{port}") };
        let create = format!(
            "import boto3, time\n\
             for _ in range(300):\n\
             \x20   try:\n\
             \x20       boto3.client('s3', endpoint_url='{}', aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1').create_bucket(Bucket='{bucket}'); break\n\
             \x20   except Exception:\n\
             \x20       time.sleep(0.1)\n\
             else:\n\
             \x20   raise SystemExit('moto did not answer')\n",
            server.endpoint
        );
        let out = Command::new(python()).args(["-c", &create]).output().expect("creating the bucket");
        assert!(out.status.success(), "creating bucket {bucket}: {}", String::from_utf8_lossy(&out.stderr));
        server
    }

    /// Keys of the objects under `prefix` in `bucket`.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let list = format!(
            "import boto3\n\
             c = boto3.client('s3', endpoint_url='{}', aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1')\n\
             for o in c.list_objects_v2(Bucket='{bucket}', Prefix='{prefix}').get('Contents', []): print(o['Key'])\n",
            self.endpoint
        );
        let out = Command::new(python()).args(["-c", &list]).output().expect("listing the bucket");
        assert!(out.status.success(), "listing {bucket}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// A server of the Confluent Schema Registry REST API
/// (tests/support/schema_registry.py), stopped on drop; its schemas survive
/// a [`SchemaRegistry::restart`].
pub struct SchemaRegistry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: String,
}

impl SchemaRegistry {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("registry dir");
        let mut r = Self { child: None, dir, port: "0".into() };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let port_file = self.dir.path().join("port");
        std::fs::remove_file(&port_file).ok();
        let child = Command::new(python())
            .arg(repo_root().join("tests/support/schema_registry.py"))
            .arg(&port_file)
            .arg(self.dir.path().join("state.json"))
            .arg(&self.port)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting the schema registry");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !port_file.exists() {
            assert!(Instant::now() < deadline, "the schema registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.port = std::fs::read_to_string(&port_file).expect("port").trim().to_owned();
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Schema reads answer 503 (`available` false) or work again; registrations always work.
    pub fn set_reads(&self, available: bool) {
        let (status, body) =
            request(&self.addr(), "POST", "/test/reads", "", &format!("{{\"available\": {available}}}"));
        assert_eq!(status, 200, "{body}");
    }

    /// Down: nothing listens on its port.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }

    /// Up again on the same port, with the same schemas.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Produces `count` orders of customers `prefix-i` through this
    /// registry; see [`produce_avro_orders`].
    pub fn produce_orders(
        &self,
        bootstrap: &str,
        topic: &str,
        count: usize,
        prefix: &str,
        extra: &str,
    ) -> u32 {
        produce_avro_orders(bootstrap, &self.url(), topic, count, prefix, extra)
    }
}

/// Produces `count` orders of customers `prefix-i` with confluent-kafka's
/// AvroSerializer and the registry at `registry` (tests/support/avro_produce.py),
/// their schema ours plus the optional field `extra`; the schema id they carry.
pub fn produce_avro_orders(
    bootstrap: &str,
    registry: &str,
    topic: &str,
    count: usize,
    prefix: &str,
    extra: &str,
) -> u32 {
    let out = Command::new(python())
        .arg(repo_root().join("tests/support/avro_produce.py"))
        .args([bootstrap, registry, topic])
        .arg(repo_root().join("schemas/orders.avsc"))
        .args([&count.to_string(), prefix, extra])
        .output()
        .expect("running avro_produce.py");
    assert!(out.status.success(), "avro_produce.py: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("the schema id")
}

impl Drop for SchemaRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}
