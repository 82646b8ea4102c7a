//! Liveness beyond "the pipeline thread runs": a lane that has records
//! waiting but does not advance, or a producer queue that stays full, makes
//! `/healthz` fail with the reason, so an orchestrator or an SRE sees a
//! worker that is up but stuck.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use segstream_events::Lane;

/// Tracks what should move and since when it has not.
#[derive(Debug)]
pub(crate) struct Progress {
    /// How long something may stand still before it is a problem.
    stall: Duration,
    /// A producer queue holding at least this many messages is full.
    queue_max: usize,
    /// Per owned lane: its processed offset and since when it has stood
    /// still with records waiting (`None`: nothing waiting, or moving).
    lanes: BTreeMap<(Lane, i32), (Option<i64>, Option<Instant>)>,
    /// Since when the producer queue has been full.
    queue_full_since: Option<Instant>,
    queue_len: usize,
    /// The last transaction committed (or the start).
    last_commit: Instant,
    /// Records are read, processed or in flight, waiting for a commit.
    work_waiting: bool,
    /// Since when transactions abort with no commit moving an offset.
    failing_since: Option<Instant>,
    /// Every partition owned in this run so far.
    seen: BTreeSet<i32>,
    /// Input partitions no member of the group holds, and since when.
    unowned: Option<(BTreeSet<i32>, Instant)>,
}

impl Progress {
    pub(crate) fn new(stall: Duration, queue_max: usize) -> Self {
        Self {
            stall,
            queue_max,
            lanes: BTreeMap::new(),
            queue_full_since: None,
            queue_len: 0,
            last_commit: Instant::now(),
            work_waiting: false,
            failing_since: None,
            seen: BTreeSet::new(),
            unowned: None,
        }
    }

    /// A lane's processed offset now, and how many records wait behind it.
    pub(crate) fn lane(
        &mut self,
        now: Instant,
        lane: Lane,
        partition: i32,
        offset: Option<i64>,
        waiting: i64,
    ) {
        let entry = self.lanes.entry((lane, partition)).or_insert((offset, None));
        if entry.0 != offset || waiting <= 0 {
            *entry = (offset, None);
        } else {
            entry.1.get_or_insert(now);
        }
    }

    /// Only the partitions `owned` says are this worker's still count.
    pub(crate) fn keep(&mut self, owned: impl Fn(i32) -> bool) {
        self.lanes.retain(|(_, p), _| owned(*p));
    }

    /// How many messages the producer holds unacknowledged now.
    pub(crate) fn queue(&mut self, now: Instant, len: usize) {
        self.queue_len = len;
        if len < self.queue_max {
            self.queue_full_since = None;
        } else {
            self.queue_full_since.get_or_insert(now);
        }
    }

    /// The partitions owned now: a partition new to this run starts the
    /// commit clock again (it may first rebuild, which commits nothing); the
    /// same partitions taken back after an aborted transaction do not.
    pub(crate) fn owned(&mut self, now: Instant, partitions: impl IntoIterator<Item = i32>) {
        let mut new = false;
        for p in partitions {
            new |= self.seen.insert(p);
        }
        if new {
            self.last_commit = now;
        }
    }

    /// A transaction committed; `advanced`: it moved an input offset.
    pub(crate) fn committed(&mut self, now: Instant, advanced: bool) {
        self.last_commit = now;
        self.work_waiting = false;
        if advanced {
            self.failing_since = None;
        }
    }

    /// A transaction aborted (the worker goes back to its committed state;
    /// commits that only repeat it do not count as progress).
    pub(crate) fn aborted(&mut self, now: Instant) {
        self.failing_since.get_or_insert(now);
    }

    /// The input partitions no member of the group held at the last look,
    /// and since when (`None`: every partition is held).
    pub(crate) fn unowned(&mut self, gap: Option<(BTreeSet<i32>, Instant)>) {
        self.unowned = gap;
    }

    /// Whether records wait to be processed or committed now (a worker
    /// with nothing to do is not stuck, however long since its last commit).
    pub(crate) fn work_waiting(&mut self, waiting: bool) {
        self.work_waiting = waiting;
    }

    /// What has stood still for longer than allowed, in words; empty when
    /// the worker makes progress.
    pub(crate) fn problems(&self, now: Instant) -> Vec<String> {
        let stalled = |since: Instant| now.saturating_duration_since(since) >= self.stall;
        let mut out: Vec<String> = self
            .lanes
            .iter()
            .filter_map(|((lane, partition), (offset, since))| {
                let since = since.filter(|s| stalled(*s))?;
                Some(format!(
                    "{} partition {partition} has records waiting but has not advanced past offset {} for {} s",
                    lane.as_str(),
                    offset.map_or_else(|| "(none)".to_owned(), |o| o.to_string()),
                    now.saturating_duration_since(since).as_secs()
                ))
            })
            .collect();
        if let Some(since) = self.queue_full_since.filter(|s| stalled(*s)) {
            out.push(format!(
                "the producer has held {} or more unacknowledged messages (health.producer_queue_max) for {} s",
                self.queue_len,
                now.saturating_duration_since(since).as_secs()
            ));
        }
        if let Some(since) = self.failing_since.filter(|s| stalled(*s)) {
            out.push(format!(
                "transactions have failed for {} s with no offset committed (is the output topic or the transaction coordinator unavailable?)",
                now.saturating_duration_since(since).as_secs()
            ));
        }
        if let Some((partitions, since)) = self.unowned.as_ref().filter(|(_, s)| stalled(*s)) {
            out.push(format!(
                "input partitions {partitions:?} have been held by no member of the group for {} s: nobody processes them (the workers holding the fewest leave the group and join again to make it rebalance; if the gap stays, stop one worker for longer than worker.session_timeout_ms)",
                now.saturating_duration_since(*since).as_secs()
            ));
        }
        if self.work_waiting && stalled(self.last_commit) {
            out.push(format!(
                "nothing has been committed for {} s while records wait (is the output topic or the transaction coordinator unavailable?)",
                now.saturating_duration_since(self.last_commit).as_secs()
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_with_records_waiting_that_does_not_move_is_reported_after_the_stall_time() {
        let t0 = Instant::now();
        let mut p = Progress::new(Duration::from_secs(60), 1000);
        p.lane(t0, Lane::Orders, 3, Some(10), 500);
        p.lane(t0 + Duration::from_secs(59), Lane::Orders, 3, Some(10), 500);
        assert!(p.problems(t0 + Duration::from_secs(59)).is_empty(), "not yet");
        let late = t0 + Duration::from_secs(61);
        p.lane(late, Lane::Orders, 3, Some(10), 500);
        let problems = p.problems(late);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("partition 3") && problems[0].contains("offset 10"), "{problems:?}");

        // It moves: healthy again; nothing waiting is never a stall.
        p.lane(late, Lane::Orders, 3, Some(11), 499);
        assert!(p.problems(late + Duration::from_secs(100)).is_empty());
        p.lane(late, Lane::Clicks, 3, Some(5), 0);
        assert!(p.problems(late + Duration::from_secs(100)).is_empty(), "idle is not stuck");
    }

    #[test]
    fn a_full_producer_queue_and_a_commit_that_does_not_come_are_reported_and_a_revoked_partition_is_forgotten()
     {
        let mut p = Progress::new(Duration::from_secs(10), 1000);
        let t0 = Instant::now();
        p.queue(t0, 1000);
        p.lane(t0, Lane::Clicks, 1, None, 7);
        p.work_waiting(true);
        let later = t0 + Duration::from_secs(11);
        assert_eq!(p.problems(later).len(), 3, "{:?}", p.problems(later));
        p.keep(|partition| partition != 1);
        p.queue(later, 999);
        p.committed(later, false);
        p.work_waiting(false);
        assert!(p.problems(later).is_empty());
        assert!(p.problems(later + Duration::from_secs(60)).is_empty(), "nothing to do is not stuck");
    }

    #[test]
    fn a_new_assignment_restarts_the_commit_clock() {
        let mut p = Progress::new(Duration::from_secs(10), 1000);
        let t0 = Instant::now();
        p.work_waiting(true);
        p.owned(t0 + Duration::from_secs(30), vec![0, 1]);
        assert!(p.problems(t0 + Duration::from_secs(35)).is_empty(), "5 s after the assignment");
        p.owned(t0 + Duration::from_secs(35), vec![]);
        p.owned(t0 + Duration::from_secs(36), vec![1, 0]);
        assert_eq!(
            p.problems(t0 + Duration::from_secs(41)).len(),
            1,
            "taken back after an abort: no new clock"
        );
    }

    #[test]
    fn aborts_with_only_commits_that_move_no_offset_are_reported_until_one_moves() {
        let mut p = Progress::new(Duration::from_secs(10), 1000);
        let t0 = Instant::now();
        p.aborted(t0);
        p.committed(t0 + Duration::from_secs(5), false);
        p.aborted(t0 + Duration::from_secs(6));
        let problems = p.problems(t0 + Duration::from_secs(11));
        assert!(
            problems.len() == 1 && problems[0].contains("transactions have failed for 11 s"),
            "{problems:?}"
        );
        p.committed(t0 + Duration::from_secs(12), true);
        assert!(p.problems(t0 + Duration::from_secs(30)).is_empty());
    }

    #[test]
    fn partitions_nobody_in_the_group_holds_are_reported_after_the_stall_time() {
        let mut p = Progress::new(Duration::from_secs(10), 1000);
        let t0 = Instant::now();
        p.unowned(Some((BTreeSet::from([0, 2]), t0)));
        assert!(p.problems(t0 + Duration::from_secs(9)).is_empty(), "not yet");
        let problems = p.problems(t0 + Duration::from_secs(10));
        assert!(problems.len() == 1 && problems[0].contains("{0, 2}"), "{problems:?}");
        p.unowned(None);
        assert!(p.problems(t0 + Duration::from_secs(60)).is_empty(), "held again");
    }
}
