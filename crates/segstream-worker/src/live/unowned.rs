//! Input partitions that no member of the group holds. Static members and
//! cooperative rebalancing leave such a gap when a member dies between the
//! two rounds of a rebalance and comes back within its session (see
//! `segstream_kafka::describe_shares`): nobody starts the second round, so
//! nobody reads those partitions, and no worker's own lanes show a stall.
//!
//! Every worker looks at the group's shares now and then. A gap in a
//! stable group that outlasts twice the session timeout (a dead member
//! that stays away is removed after one, which rebalances the group by
//! itself) is repaired by the workers holding the fewest partitions: they
//! leave the group and join again, which rebalances it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use segstream_kafka::GroupShares;

/// What a look at the group's shares calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Every partition is held, or the group is rebalancing.
    Held,
    /// These partitions have been held by nobody since then.
    Gap { partitions: BTreeSet<i32>, since: Instant },
    /// Leave the group and join again: these partitions have been held by
    /// nobody for too long, and this worker holds the fewest.
    Repair { partitions: BTreeSet<i32>, since: Instant },
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Unowned {
    every: Duration,
    grace: Duration,
    next: Instant,
    gap: Option<(BTreeSet<i32>, Instant)>,
}

impl Unowned {
    /// Looks every half session, repairs after two sessions.
    pub(crate) fn new(session: Duration, now: Instant) -> Self {
        Self { every: session / 2, grace: session * 2, next: now, gap: None }
    }

    /// Time for the next look.
    pub(crate) fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// The group's shares as seen at `now` (`None`: the description
    /// failed; the gap seen so far stands), of `partitions` partitions, of
    /// which this worker holds `held`.
    pub(crate) fn seen(
        &mut self,
        now: Instant,
        shares: Option<&GroupShares>,
        partitions: i32,
        held: usize,
    ) -> Verdict {
        self.next = now + self.every;
        let Some(shares) = shares else { return self.verdict() };
        let unowned = if shares.stable { shares.unowned(partitions) } else { BTreeSet::new() };
        if unowned.is_empty() {
            self.gap = None;
            return Verdict::Held;
        }
        if self.gap.as_ref().is_none_or(|(seen, _)| *seen != unowned) {
            self.gap = Some((unowned, now));
        }
        match self.gap.take() {
            Some((partitions, since))
                if now.saturating_duration_since(since) >= self.grace && held == shares.fewest() =>
            {
                Verdict::Repair { partitions, since }
            }
            gap => {
                self.gap = gap;
                self.verdict()
            }
        }
    }

    fn verdict(&self) -> Verdict {
        match &self.gap {
            Some((partitions, since)) => Verdict::Gap { partitions: partitions.clone(), since: *since },
            None => Verdict::Held,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(stable: bool, members: &[&[i32]]) -> GroupShares {
        GroupShares { stable, members: members.iter().map(|m| m.iter().copied().collect()).collect() }
    }

    #[test]
    fn a_gap_that_outlasts_two_sessions_is_repaired_by_a_worker_holding_the_fewest() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut u = Unowned::new(Duration::from_secs(6), t0);
        let gap = shares(true, &[&[3, 4, 5], &[]]);
        assert!(u.due(t0));
        assert_eq!(
            u.seen(t0, Some(&gap), 6, 3),
            Verdict::Gap { partitions: BTreeSet::from([0, 1, 2]), since: t0 }
        );
        assert!(!u.due(s(2)) && u.due(s(3)), "every half session");
        assert!(matches!(u.seen(s(11), Some(&gap), 6, 0), Verdict::Gap { .. }), "not two sessions yet");
        assert!(
            matches!(u.seen(s(12), Some(&gap), 6, 3), Verdict::Gap { .. }),
            "not the one with the fewest"
        );
        assert!(matches!(u.seen(s(13), None, 6, 0), Verdict::Gap { .. }), "no description: no repair");
        assert_eq!(
            u.seen(s(13), Some(&gap), 6, 0),
            Verdict::Repair { partitions: BTreeSet::from([0, 1, 2]), since: t0 }
        );
        // Repaired once: the next repair waits two sessions again.
        assert!(matches!(u.seen(s(14), Some(&gap), 6, 0), Verdict::Gap { since, .. } if since == s(14)));
    }

    #[test]
    fn a_rebalancing_group_or_another_gap_starts_the_clock_again() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut u = Unowned::new(Duration::from_secs(6), t0);
        u.seen(t0, Some(&shares(true, &[&[1]])), 2, 0);
        assert_eq!(u.seen(s(5), Some(&shares(false, &[&[1]])), 2, 0), Verdict::Held, "rebalancing");
        u.seen(s(6), Some(&shares(true, &[&[1]])), 2, 0);
        assert!(
            matches!(u.seen(s(12), Some(&shares(true, &[&[]])), 2, 0), Verdict::Gap { since, .. } if since == s(12))
        );
        assert_eq!(u.seen(s(30), Some(&shares(true, &[&[0, 1]])), 2, 2), Verdict::Held);
    }
}
