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
    let mut directions =
        [t.from.map(|old| (old, ChangeType::Exited)), t.to.map(|new| (new, ChangeType::Entered))]
            .into_iter()
            .flatten()
            .peekable();
    let mut out = Vec::with_capacity(2);
    while let Some((segment, change)) = directions.next() {
        let event_id = id(segment, change);
        let record = SegmentChange {
            event_id,
            customer_id: customer.clone(),
            kind: t.kind,
            segment: segment.to_owned(),
            change,
            previous_segment: t.from.map(str::to_owned),
            cause_event_time: t.at,
            emit_time,
            trigger: t.trigger,
            cause_event_id: None,
            rule_id: String::new(),
            rule_version: t.rule_version,
            model_version: None,
            reason: String::new(),
            features: Default::default(),
        };
        // The exit of a pair copies the texts and values; the last record
        // takes them (they are most of a change's allocations).
        if directions.peek().is_some() {
            out.push(SegmentChange {
                cause_event_id: cause_event_id.clone(),
                rule_id: t.rule_id.clone(),
                model_version: t.model_version.clone(),
                reason: t.reason.clone(),
                features: t.features.clone(),
                ..record
            });
        } else {
            out.push(SegmentChange {
                cause_event_id,
                rule_id: t.rule_id,
                model_version: t.model_version,
                reason: t.reason,
                features: t.features,
                ..record
            });
            break;
        }
    }
    out
}
