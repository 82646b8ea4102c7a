//! Each input lane must reach the merge in offset order and whole: a
//! record the consumer skipped would be lost for good once a later offset
//! is committed, and one it delivered twice would be counted twice.
//!
//! A gap is not always a loss: a transactional producer's commit markers,
//! its aborted records (read as `read_committed`) and compaction leave gaps
//! in a log. The only way to tell is to read the log again from the
//! expected offset: if the same gap comes back, it is in the log, and that
//! lane's gaps are taken as they come from then on (re-reading at every
//! commit marker of a transactional producer would cost a fetch each); if
//! the missing records come, they had been skipped. Under librdkafka 2.12
//! the crash tests saw a fetch's worth of records (about 1 MiB) skipped
//! now and then around rebalances, in a log without gaps.

use std::collections::BTreeMap;

use segstream_events::Lane;

/// What to do with one record of a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The next record: admit it.
    Take,
    /// The next record, read again after the consumer had skipped it and
    /// `skipped` records after it: admit it.
    TakeRecovered {
        /// Records the consumer had skipped.
        skipped: i64,
    },
    /// Admit it: it follows a gap of `missing` offsets that is in the log.
    TakeAfterGap {
        /// Offsets without a record.
        missing: i64,
        /// This gap, read twice, showed that the lane's log has gaps.
        first: bool,
    },
    /// Already admitted (the consumer delivered it again): drop it.
    Repeat,
    /// Records before it are missing: drop it and the lane's later records
    /// of this poll, and read the lane again from `from`.
    Refetch {
        /// The first missing offset.
        from: i64,
    },
}

#[derive(Debug, Default)]
struct LaneWatch {
    /// A gap read again: the offset expected and the one that came.
    suspect: Option<(i64, i64)>,
    /// A gap came back when read again: the log has gaps.
    gaps_in_log: bool,
}

/// See the module documentation. Keyed by lane and partition, kept for the
/// worker's life: what it learns is about the logs, not the assignment.
#[derive(Debug, Default)]
pub(crate) struct OffsetWatch {
    lanes: BTreeMap<(Lane, i32), LaneWatch>,
    /// Lanes read again whose missing records have not come yet (the
    /// records of the others skip the map).
    suspects: usize,
}

impl OffsetWatch {
    /// The step for the record at `offset` when the lane expects
    /// `expected` next; moves `expected` past a record to admit.
    pub(crate) fn step(&mut self, lane: Lane, partition: i32, expected: &mut i64, offset: i64) -> Step {
        if offset < *expected {
            return Step::Repeat;
        }
        if offset == *expected && self.suspects == 0 {
            *expected = offset + 1;
            return Step::Take;
        }
        let watch = self.lanes.entry((lane, partition)).or_default();
        let was_suspect = watch.suspect.is_some();
        let step = if offset == *expected {
            match watch.suspect.take() {
                Some((from, got)) if from == offset => Step::TakeRecovered { skipped: got - from },
                _ => Step::Take,
            }
        } else if watch.gaps_in_log || watch.suspect == Some((*expected, offset)) {
            let first = !watch.gaps_in_log;
            watch.gaps_in_log = true;
            watch.suspect = None;
            Step::TakeAfterGap { missing: offset - *expected, first }
        } else {
            watch.suspect = Some((*expected, offset));
            Step::Refetch { from: *expected }
        };
        match (was_suspect, watch.suspect.is_some()) {
            (false, true) => self.suspects += 1,
            (true, false) => self.suspects -= 1,
            _ => {}
        }
        if matches!(step, Step::Refetch { .. }) {
            return step;
        }
        *expected = offset + 1;
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(watch: &mut OffsetWatch, expected: &mut i64, offsets: &[i64]) -> Vec<Step> {
        let mut steps = Vec::new();
        for &o in offsets {
            let step = watch.step(Lane::Clicks, 0, expected, o);
            steps.push(step);
            if matches!(step, Step::Refetch { .. }) {
                break;
            }
        }
        steps
    }

    #[test]
    fn contiguous_records_are_taken() {
        let (mut w, mut e) = (OffsetWatch::default(), 10);
        assert_eq!(run(&mut w, &mut e, &[10, 11, 12]), vec![Step::Take; 3]);
        assert_eq!(e, 13);
    }

    #[test]
    fn records_delivered_again_are_dropped() {
        let (mut w, mut e) = (OffsetWatch::default(), 10);
        assert_eq!(run(&mut w, &mut e, &[8, 9, 10]), vec![Step::Repeat, Step::Repeat, Step::Take]);
        assert_eq!(e, 11);
    }

    #[test]
    fn a_skip_is_read_again_and_the_missing_records_are_taken() {
        let (mut w, mut e) = (OffsetWatch::default(), 10);
        assert_eq!(run(&mut w, &mut e, &[10, 500, 501]), vec![Step::Take, Step::Refetch { from: 11 }]);
        assert_eq!(e, 11);
        assert_eq!(run(&mut w, &mut e, &[11, 12]), vec![Step::TakeRecovered { skipped: 489 }, Step::Take]);
        // A later skip of the same lane is read again too.
        assert_eq!(run(&mut w, &mut e, &[900]), vec![Step::Refetch { from: 13 }]);
    }

    #[test]
    fn a_gap_that_comes_back_is_in_the_log_and_later_gaps_of_the_lane_are_taken() {
        let (mut w, mut e) = (OffsetWatch::default(), 10);
        assert_eq!(run(&mut w, &mut e, &[12]), vec![Step::Refetch { from: 10 }]);
        assert_eq!(
            run(&mut w, &mut e, &[12, 13]),
            vec![Step::TakeAfterGap { missing: 2, first: true }, Step::Take]
        );
        assert_eq!(run(&mut w, &mut e, &[20]), vec![Step::TakeAfterGap { missing: 6, first: false }]);
        assert_eq!(e, 21);
        // Other lanes are not affected.
        let mut other = 5;
        assert_eq!(w.step(Lane::Orders, 0, &mut other, 7), Step::Refetch { from: 5 });
        assert_eq!(w.step(Lane::Clicks, 1, &mut other, 7), Step::Refetch { from: 5 });
    }

    #[test]
    fn a_different_gap_after_a_refetch_is_read_again() {
        let (mut w, mut e) = (OffsetWatch::default(), 10);
        assert_eq!(run(&mut w, &mut e, &[30]), vec![Step::Refetch { from: 10 }]);
        assert_eq!(run(&mut w, &mut e, &[20]), vec![Step::Refetch { from: 10 }]);
        assert_eq!(run(&mut w, &mut e, &[20]), vec![Step::TakeAfterGap { missing: 10, first: true }]);
    }

    #[test]
    fn skips_of_several_lanes_are_each_told_when_their_records_come() {
        let mut w = OffsetWatch::default();
        let (mut clicks, mut orders) = (10, 3);
        assert_eq!(w.step(Lane::Clicks, 0, &mut clicks, 40), Step::Refetch { from: 10 });
        assert_eq!(w.step(Lane::Orders, 0, &mut orders, 9), Step::Refetch { from: 3 });
        assert_eq!(w.step(Lane::Orders, 0, &mut orders, 3), Step::TakeRecovered { skipped: 6 });
        let mut other = 0;
        assert_eq!(w.step(Lane::Clicks, 1, &mut other, 0), Step::Take);
        assert_eq!(w.step(Lane::Clicks, 0, &mut clicks, 10), Step::TakeRecovered { skipped: 30 });
        assert_eq!(w.step(Lane::Clicks, 0, &mut clicks, 11), Step::Take);
    }
}
