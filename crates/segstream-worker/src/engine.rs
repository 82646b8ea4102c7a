//! Event-time processing behind the merge: stream time and watermark per
//! partition, timers, and the customer state. It sees records in merge order and knows nothing of Kafka,
//! so a replay of the same records gives the same transitions.

use std::collections::HashMap;

use compact_str::CompactString;

use segstream_config::Config;
use segstream_events::{ClickRow, CustomerId, EventTime, OrderRow};
use segstream_segments::{SegmentRules, Transition};

use crate::error::WorkerError;
use crate::store::CustomerStore;

/// A released record, as the engine sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Input<'a> {
    Click(ClickRow<'a>),
    Order(OrderRow<'a>),
    /// A record that only moves time (or not even that): a dead letter.
    Other,
}

/// Transitions of one customer and what caused them.
#[derive(Debug)]
pub(crate) struct Fired {
    pub(crate) id: CustomerId,
    pub(crate) transitions: Vec<Transition>,
    /// The cause event id: the click's event id, `order_id:status` for an
    /// order, `None` for a timer.
    pub(crate) cause: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Engine {
    pub(crate) store: CustomerStore,
    /// Largest event time released per partition pair (its stream time).
    stream_time: foldhash::HashMap<i32, EventTime>,
    lateness_ms: i64,
    /// Erased customers and when: their events up to then move time only.
    erased: HashMap<CompactString, EventTime>,
    /// Such events since the last [`Engine::take_erased_events`].
    erased_events: u64,
}

impl Engine {
    pub(crate) fn new(config: &Config) -> Result<Self, WorkerError> {
        Ok(Self {
            store: CustomerStore::new(SegmentRules::from_config(config)?, config.features.clone())?,
            stream_time: foldhash::HashMap::default(),
            lateness_ms: i64::try_from(config.time.allowed_lateness_ms).unwrap_or(i64::MAX),
            erased: HashMap::new(),
            erased_events: 0,
        })
    }

    /// Processes one released record of `partition`: the timers its
    /// watermark passes fire first (as part of this record, so a replay fires
    /// them at the same point), then the record applies, then any timer it
    /// armed that the watermark has passed fires.
    pub(crate) fn process(
        &mut self,
        partition: i32,
        time: Option<EventTime>,
        input: Input<'_>,
    ) -> Vec<Fired> {
        let mut out = Vec::new();
        let mut watermark = None;
        if let Some(t) = time {
            let stream = self.stream_time.entry(partition).or_insert(t);
            *stream = (*stream).max(t);
            let w = stream.plus_millis(-self.lateness_ms);
            watermark = Some(w);
            for (id, transitions) in self.store.fire_timers(partition, w, usize::MAX) {
                out.push(Fired { id, transitions, cause: None });
            }
        }
        // An erased customer's events up to the erasure move time (other
        // customers' timers fire as in any run) and nothing else.
        let forgotten = |id: &str, t: EventTime| self.erased.get(id).is_some_and(|at| t <= *at);
        let erased = match &input {
            Input::Click(r) => forgotten(r.customer_id, r.event_time),
            Input::Order(r) => forgotten(r.customer_id, r.event_time),
            Input::Other => false,
        };
        if erased {
            self.erased_events += 1;
            return out;
        }
        // A late event (older than the watermark) is judged as of the
        // watermark: the customer's timers have run that far, and an older
        // evaluation would replay them as a chain of invented transitions.
        let judged = |t: EventTime| watermark.map_or(t, |w: EventTime| t.max(w));
        // The cause is written out only for a record that moved something.
        let fired = match input {
            Input::Click(mut r) => {
                r.partition = partition;
                self.store.on_click(&r, judged(r.event_time)).map(|(id, tr)| (id, tr, r.event_id.to_owned()))
            }
            Input::Order(mut r) => {
                r.partition = partition;
                let changed = self.store.on_order(&r, judged(r.event_time));
                changed.map(|(id, tr)| (id, tr, crate::store::order_cause(&r)))
            }
            Input::Other => None,
        };
        if let Some((id, transitions, cause)) = fired {
            out.push(Fired { id, transitions, cause: Some(cause) });
        }
        // A late event can arm a timer the watermark has already passed (a
        // compaction a window after the event): it fires now, not whenever
        // the next record comes, which at the end of the input is never.
        if let Some(w) = watermark {
            for (id, transitions) in self.store.fire_timers(partition, w, usize::MAX) {
                out.push(Fired { id, transitions, cause: None });
            }
        }
        out
    }

    /// Moves a partition's stream time up to `target` (its inputs are quiet;
    /// `target` is the input's watermark), so its timers fire although none
    /// of its customers send anything (earliest first). Nothing happens if
    /// the partition is already there.
    pub(crate) fn follow(&mut self, partition: i32, target: EventTime) -> Option<Vec<Fired>> {
        if self.stream_time.get(&partition).is_some_and(|stream| *stream >= target) {
            return None;
        }
        self.stream_time.insert(partition, target);
        let fired = self.store.fire_timers(partition, target.plus_millis(-self.lateness_ms), usize::MAX);
        Some(fired.into_iter().map(|(id, transitions)| Fired { id, transitions, cause: None }).collect())
    }

    /// If releasing a record of `time` (or following up to it) would fire
    /// more than `budget` timers of `partition`: the watermark it would
    /// reach, up to which parts of them fire first ([`Engine::fire_part`]).
    pub(crate) fn split_point(&self, partition: i32, time: EventTime, budget: usize) -> Option<EventTime> {
        let stream = self.stream_time.get(&partition).map_or(time, |s| (*s).max(time));
        let watermark = stream.plus_millis(-self.lateness_ms);
        self.store.due_more_than(partition, watermark, budget).then_some(watermark)
    }

    /// Fires the next `count` timers of `partition` due up to `up_to` (a
    /// part of a mass firing), earliest first; the stream time does not move.
    pub(crate) fn fire_part(&mut self, partition: i32, up_to: EventTime, count: usize) -> Vec<Fired> {
        let fired = self.store.fire_timers(partition, up_to, count);
        fired.into_iter().map(|(id, transitions)| Fired { id, transitions, cause: None }).collect()
    }

    /// Sets a partition's stream time (restored from a checkpoint).
    pub(crate) fn set_stream_time(&mut self, partition: i32, time: Option<EventTime>) {
        match time {
            Some(t) => self.stream_time.insert(partition, t),
            None => self.stream_time.remove(&partition),
        };
    }

    /// The partition's watermark (stream time − allowed lateness), if it
    /// has a stream time.
    pub(crate) fn watermark(&self, partition: i32) -> Option<EventTime> {
        self.stream_time(partition).map(|t| t.plus_millis(-self.lateness_ms))
    }

    /// The partition's stream time, if it has one.
    pub(crate) fn stream_time(&self, partition: i32) -> Option<EventTime> {
        self.stream_time.get(&partition).copied()
    }

    /// A new erasure: the customer's held state goes now (returns whether
    /// there was any), and their events up to `requested_at` are not
    /// applied from now on.
    pub(crate) fn erase(&mut self, id: &CustomerId, requested_at: EventTime) -> bool {
        let at = self.erased.entry(CompactString::from(id.as_str())).or_insert(requested_at);
        *at = (*at).max(requested_at);
        !self.store.erase(|held, _| held == id.as_str()).is_empty()
    }

    /// Events of erased customers skipped since the last call.
    pub(crate) fn take_erased_events(&mut self) -> u64 {
        std::mem::take(&mut self.erased_events)
    }

    /// After a restore: drops the held customers an erasure names whose
    /// latest event is not after it (a checkpoint older than the erasure);
    /// returns their ids.
    pub(crate) fn drop_erased(&mut self) -> Vec<CustomerId> {
        if self.erased.is_empty() {
            return Vec::new();
        }
        let erased = &self.erased;
        self.store.erase(|id, last| erased.get(id).is_some_and(|at| last.is_none_or(|l| l <= *at)))
    }

    /// Forgets a partition: its customers, timers and times. Returns how many
    /// customers were dropped.
    pub(crate) fn forget_partition(&mut self, partition: i32) -> usize {
        self.stream_time.remove(&partition);
        self.store.drop_partition(partition)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use segstream_events::{SegmentKind, Trigger};

    use super::*;

    const DAY: i64 = 86_400_000;
    const T0: i64 = 1_700_000_000_000;

    fn order(customer: &'static str, id: &'static str, day: i64) -> Input<'static> {
        Input::Order(crate::store::tests::order(customer, id, day))
    }
    #[test]
    fn a_partition_that_never_released_a_record_follows_the_input_watermark() {
        let config = Config::default();
        // A snapshot's customer of partition 1, as a warm start brings it.
        let mut history = Engine::new(&config).expect("engine");
        history.process(1, Some(EventTime::from_millis(T0)), order("b", "b1", 0));
        let mut engine = Engine::new(&config).expect("engine");
        for saved in history.store.to_snapshot(EventTime::from_millis(T0), 2).customers {
            engine.store.insert_saved(saved);
        }
        // Only partition 0 sends anything; partition 1 never does.
        let at = EventTime::from_millis(T0 + 400 * DAY);
        engine.process(0, Some(at), order("a", "a1", 400));
        let stages: Vec<&str> = engine
            .follow(1, at)
            .unwrap_or_default()
            .into_iter()
            .flat_map(|f| {
                f.transitions.into_iter().filter(|t| t.kind == SegmentKind::Lifecycle).filter_map(|t| t.to)
            })
            .collect();
        assert_eq!(stages, ["active", "at_risk", "churned"], "b's timers fire on the input's time");
        assert!(engine.follow(1, at).is_none(), "once there, nothing more");
    }

    /// A history exported sorted by customer: every order of the second
    /// customer comes after the first's whole year, all of it late.
    #[test]
    fn late_orders_of_a_steady_buyer_are_judged_as_of_the_watermark_without_invented_chains() {
        let config = Config::default();
        let mut engine = Engine::new(&config).expect("engine");
        let days: Vec<i64> = (0..=12).map(|k| k * 30).collect();
        let id = |c: &str, d: i64| -> &'static str { Box::leak(format!("{c}{d}").into_boxed_str()) };
        for d in &days {
            engine.process(0, Some(EventTime::from_millis(T0 + d * DAY)), order("first", id("f", *d), *d));
        }
        let mut moves = Vec::new();
        for d in &days {
            let fired =
                engine.process(0, Some(EventTime::from_millis(T0 + d * DAY)), order("late", id("l", *d), *d));
            moves.extend(fired.into_iter().filter(|f| f.id.as_str() == "late").flat_map(|f| f.transitions));
        }
        let stages: Vec<(Option<&str>, Option<&str>, Trigger)> = moves
            .iter()
            .filter(|t| t.kind == SegmentKind::Lifecycle)
            .map(|t| (t.from, t.to, t.trigger))
            .collect();
        assert_eq!(
            stages,
            [
                (None, Some("churned"), Trigger::Event),
                (Some("churned"), Some("at_risk"), Trigger::Event),
                (Some("at_risk"), Some("active"), Trigger::Event),
            ],
            "each late order moves the customer to what is known now: no timer chain, no reactivation"
        );
        let watermark = EventTime::from_millis(T0 + 360 * DAY - 3_600_000);
        assert!(moves.iter().all(|t| t.at == watermark), "judged as of the watermark");
    }

    /// A configuration whose definitions file holds these user-defined
    /// segments (the file lives as long as the returned handle).
    pub(crate) fn with_custom(segments: &[(&str, &str)]) -> (Config, tempfile::NamedTempFile) {
        let mut text = String::from("version = 7\n");
        for (name, sql) in segments {
            text.push_str(&format!("[[custom]]\nname = \"{name}\"\nsql = \"{sql}\"\n"));
        }
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write definitions");
        let mut config = Config::default();
        config.segments.definitions = file.path().display().to_string();
        (config, file)
    }

    /// (customer, segment, entered, trigger, at) of user-defined changes.
    type Moves = Vec<(String, &'static str, bool, Trigger, EventTime)>;

    fn custom_moves(engine: &mut Engine) -> Moves {
        let (fired, failures) = engine.store.evaluate_custom().expect("evaluate");
        assert!(failures.is_empty());
        fired
            .into_iter()
            .flat_map(|f| {
                let id = f.id.as_str().to_owned();
                f.transitions.into_iter().map(move |t| {
                    (id.clone(), t.to.or(t.from).unwrap_or_default(), t.to.is_some(), t.trigger, t.at)
                })
            })
            .collect()
    }

    #[test]
    fn a_user_defined_segment_is_entered_on_an_event_and_left_by_a_timer_whatever_the_batches() {
        let (config, _file) =
            with_custom(&[("regular", "lifetime_orders >= 2 AND days_since_last_order <= 30")]);
        let inputs = [("a", "a1", 0), ("a", "a2", 10), ("b", "b1", 100)];
        // Evaluated once at the end of one batch, or after every record.
        let mut one_batch = Engine::new(&config).expect("engine");
        let mut per_record = Engine::new(&config).expect("engine");
        let mut moves = Vec::new();
        for (customer, id, day) in inputs {
            let time = Some(EventTime::from_millis(T0 + day * DAY));
            one_batch.process(0, time, order(customer, id, day));
            per_record.process(0, time, order(customer, id, day));
            moves.extend(custom_moves(&mut per_record));
        }
        let left = EventTime::from_millis(T0 + 40 * DAY + 1);
        let expected: Moves = vec![
            ("a".into(), "regular", true, Trigger::Event, EventTime::from_millis(T0 + 10 * DAY)),
            ("a".into(), "regular", false, Trigger::Timer, left),
        ];
        assert_eq!(moves, expected, "entered on the second order, left 30 days and 1 ms after it");
        assert_eq!(custom_moves(&mut one_batch), expected, "one batch decides the same");
    }

    #[test]
    fn new_definitions_evaluate_every_customer_once_and_end_the_segments_they_drop() {
        let (config, _file) = with_custom(&[]);
        let mut engine = Engine::new(&config).expect("engine");
        for (customer, id, day) in [("a", "a1", 0), ("a", "a2", 5), ("b", "b1", 8)] {
            engine.process(0, Some(EventTime::from_millis(T0 + day * DAY)), order(customer, id, day));
        }
        let configured = engine.store.definitions(0).text.to_string();
        let with =
            |custom: &str| format!("{configured}\n[[custom]]\nname = \"repeat\"\nsql = \"{custom}\"\n");
        let mut redefine = |text: &str| -> Moves {
            let rules = engine.store.rules_with(0, text, "test").expect("rules");
            let at = engine.watermark(0).expect("watermark");
            let mut moves: Moves = engine
                .store
                .redefine(0, std::sync::Arc::new(rules), at, segstream_events::Trigger::DefinitionChange)
                .into_iter()
                .flat_map(|(id, ts)| {
                    ts.into_iter().map(move |t| {
                        (
                            id.as_str().to_owned(),
                            t.to.or(t.from).unwrap_or_default(),
                            t.to.is_some(),
                            t.trigger,
                            t.at,
                        )
                    })
                })
                .collect();
            moves.extend(custom_moves(&mut engine));
            moves
        };
        let at = EventTime::from_millis(T0 + 8 * DAY - 3_600_000);
        let added = redefine(&with("lifetime_orders >= 2"));
        assert_eq!(added, [("a".to_owned(), "repeat", true, Trigger::DefinitionChange, at)]);
        assert!(
            redefine(&with("lifetime_orders >= 2")).is_empty(),
            "the same definitions again change nothing"
        );
        let changed = redefine(&with("lifetime_orders >= 1"));
        // b's latest evaluation (its order) is after the watermark: judged as of then.
        let b_at = EventTime::from_millis(T0 + 8 * DAY);
        assert_eq!(changed, [("b".to_owned(), "repeat", true, Trigger::DefinitionChange, b_at)]);
        let removed = redefine(&configured.replace("version = 7", "version = 9"));
        let left: Vec<(&str, bool)> = removed.iter().map(|m| (m.0.as_str(), m.2)).collect();
        assert_eq!(left, [("a", false), ("b", false)], "a segment no longer defined is left: {removed:?}");
    }
}
