use segstream_events::{ChangeType, CustomerId, EventTime, SegmentChange, Trigger};
use uuid::Uuid;

use crate::lifecycle::Transition;

/// Namespace of change-event ids (UUID v5), fixed forever: changing it
/// would change every id and break consumers' de-duplication.
const CHANGE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5e9c_57e4_0c1a_4b8e_9d3f_2a61_7c0d_e1f3);

/// What caused a transition, for ids and the record.
#[derive(Clone, Copy, Debug)]
pub struct Cause<'a> {
    /// The input event being applied, if any; kept on the record only for
    /// an event-triggered change.
    pub event_id: Option<&'a str>,
}

/// Turns a transition into its change records: `exited` the old segment
/// (if any), then `entered` the new one.
///
/// The id hashes the customer, segment, direction, cause time, rule version
/// and, for event-driven changes, the causing event's id. A timer-driven
/// change depends only on its due time, not on which later event revealed
/// it, and carries no cause event id.
pub fn to_changes(
    customer: &CustomerId,
    t: Transition,
    cause: Cause<'_>,
    emit_time: EventTime,
) -> Vec<SegmentChange> {
    let cause_event_id = (t.trigger == Trigger::Event).then(|| cause.event_id.map(str::to_owned)).flatten();
    let id = |segment: &str, change: ChangeType| {
        let key = format!(
            "{customer}|{kind}|{segment}|{change}|{at}|{trigger}|{cause}|{version}",
            kind = t.kind,
            at = t.at.millis(),
            trigger = t.trigger,
            cause = cause_event_id.as_deref().unwrap_or(""),
            version = t.rule_version,
        );
        Uuid::new_v5(&CHANGE_ID_NAMESPACE, key.as_bytes()).to_string()
    };
    let exit = t.from.map(|old| (old, ChangeType::Exited));
    let Some((segment, change)) = t.to.map(|new| (new, ChangeType::Entered)).or(exit) else {
        return Vec::new();
    };
    let event_id = id(segment, change);
    // An exit before an entry: the same record but for its segment,
    // direction and id.
    let exit = exit.filter(|_| change == ChangeType::Entered).map(|(old, c)| (old, c, id(old, c)));
    // The last record takes the transition's texts and values (most of a
    // change's allocations); an exit before it copies them.
    let last = SegmentChange {
        event_id,
        customer_id: customer.clone(),
        kind: t.kind,
        segment: segment.to_owned(),
        change,
        previous_segment: t.from.map(str::to_owned),
        cause_event_time: t.at,
        emit_time,
        trigger: t.trigger,
        cause_event_id,
        rule_id: t.rule_id,
        rule_version: t.rule_version,
        model_version: t.model_version,
        reason: t.reason,
        features: t.features,
    };
    match exit {
        Some((old, exited, event_id)) => {
            vec![SegmentChange { event_id, segment: old.to_owned(), change: exited, ..last.clone() }, last]
        }
        None => vec![last],
    }
}
