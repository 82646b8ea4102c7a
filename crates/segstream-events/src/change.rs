//! The records segstream writes: one [`SegmentChange`] per entered or exited
//! segment (`segment-changes`), and the current [`CustomerSegments`] of a
//! customer (compacted `customer-segments`).

use std::collections::BTreeMap;

use apache_avro::types::Value;

use serde::{Deserialize, Serialize};

use crate::avro_fields::{Fields, invalid, read_datum};
use crate::binary::Writer;
use crate::error::{DecodeError, EncodeError};
use crate::ids::{CustomerId, EventTime};
use crate::schema::{CUSTOMER_SEGMENTS_SCHEMA_ID, SEGMENT_CHANGES_SCHEMA_ID, Schemas};
use crate::wire;

macro_rules! symbols {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $sym:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            /// All symbols, in schema order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The Avro symbol.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $sym),+ }
            }

            /// Parses an Avro symbol.
            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

symbols!(
    /// Family of segments.
    SegmentKind {
        /// prospect, new, active, high_value, at_risk, churned, reactivated:
        /// exactly one per customer.
        Lifecycle => "lifecycle",
        /// Named RFM cells: exactly one per buyer.
        Rfm => "rfm",
        /// Behaviour segments (cart abandoner, discount hunter, category fan,
        /// ...): any number per customer.
        Behaviour => "behaviour",
        /// Trained clusters.
        Cluster => "cluster",
        /// User-defined SQL segments.
        Custom => "custom",
    }
);

symbols!(
    /// Direction of a change.
    ChangeType {
        /// The customer is now in the segment.
        Entered => "entered",
        /// The customer is no longer in the segment.
        Exited => "exited",
    }
);

symbols!(
    /// What caused an evaluation.
    Trigger {
        /// An event of the customer.
        Event => "event",
        /// Time passed with no event (silence).
        Timer => "timer",
        /// A new model was loaded.
        ModelUpdate => "model_update",
        /// A segment definition changed.
        DefinitionChange => "definition_change",
    }
);

/// One entered/exited record on `segment-changes` (`schemas/segment-changes.avsc`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentChange {
    /// Deterministic id (UUID v5 of the cause).
    pub event_id: String,
    /// Customer.
    pub customer_id: CustomerId,
    /// Segment family.
    pub kind: SegmentKind,
    /// Segment entered or exited.
    pub segment: String,
    /// Direction.
    pub change: ChangeType,
    /// Segment of this kind before the change.
    pub previous_segment: Option<String>,
    /// Event time of the cause (event time or due time).
    pub cause_event_time: EventTime,
    /// Wall-clock time of emission.
    pub emit_time: EventTime,
    /// What triggered it.
    pub trigger: Trigger,
    /// Input event that caused it (trigger `event` only).
    pub cause_event_id: Option<String>,
    /// Rule that decided.
    pub rule_id: String,
    /// Version of the definitions.
    pub rule_version: i32,
    /// Model version, if a model decided.
    pub model_version: Option<String>,
    /// Human-readable why.
    pub reason: String,
    /// Deciding feature values and thresholds.
    pub features: BTreeMap<String, f64>,
}

/// Membership of one segment, inside [`CustomerSegments`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Membership {
    /// Segment family.
    pub kind: SegmentKind,
    /// Segment name.
    pub segment: String,
    /// Event time the customer entered it.
    pub since: EventTime,
}

/// Current memberships of a customer (`schemas/customer-segments.avsc`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomerSegments {
    /// Customer.
    pub customer_id: CustomerId,
    /// All current memberships.
    pub segments: Vec<Membership>,
    /// Event time of the change that produced this record.
    pub updated_at: EventTime,
    /// Version of the definitions.
    pub rule_version: i32,
}

impl SegmentChange {
    /// Confluent-framed Avro, as written to `segment-changes`: written
    /// field by field in schema order (one per change made, so no generic
    /// values); the tests hold it to apache_avro's reader and writer.
    pub fn to_avro(&self) -> Result<Vec<u8>, EncodeError> {
        let text = self.event_id.len() + self.segment.len() + self.reason.len() + self.rule_id.len();
        let mut w = Writer::framed(SEGMENT_CHANGES_SCHEMA_ID, 64 + text + 24 * self.features.len());
        w.str(&self.event_id);
        w.str(self.customer_id.as_str());
        w.long(i64::from(self.kind as u32));
        w.str(&self.segment);
        w.long(i64::from(self.change as u32));
        w.opt_str(self.previous_segment.as_deref());
        w.long(self.cause_event_time.millis());
        w.long(self.emit_time.millis());
        w.long(i64::from(self.trigger as u32));
        w.opt_str(self.cause_event_id.as_deref());
        w.str(&self.rule_id);
        w.long(i64::from(self.rule_version));
        w.opt_str(self.model_version.as_deref());
        w.str(&self.reason);
        w.double_map(self.features.iter().map(|(k, v)| (k.as_str(), *v)));
        Ok(w.into_bytes())
    }

    /// Reads a record written by [`SegmentChange::to_avro`] (for subscribers and tests).
    pub fn from_avro(payload: &[u8]) -> Result<Self, DecodeError> {
        Self::read(read_record(payload, Some(SEGMENT_CHANGES_SCHEMA_ID), &Schemas::builtin().change)?)
    }

    /// Reads a record a worker wrote with whatever schema id it was given
    /// (a registry's): the layout is always `schemas/segment-changes.avsc`.
    pub fn from_output_avro(payload: &[u8]) -> Result<Self, DecodeError> {
        Self::read(read_record(payload, None, &Schemas::builtin().change)?)
    }

    fn read(mut r: Fields) -> Result<Self, DecodeError> {
        Ok(Self {
            event_id: r.string("event_id")?,
            customer_id: CustomerId::new(r.string("customer_id")?),
            kind: r.symbol("kind", SegmentKind::parse)?,
            segment: r.string("segment")?,
            change: r.symbol("change", ChangeType::parse)?,
            previous_segment: r.opt_string("previous_segment")?,
            cause_event_time: r.time("cause_event_time")?,
            emit_time: r.time("emit_time")?,
            trigger: r.symbol("trigger", Trigger::parse)?,
            cause_event_id: r.opt_string("cause_event_id")?,
            rule_id: r.string("rule_id")?,
            rule_version: r.int("rule_version")?,
            model_version: r.opt_string("model_version")?,
            reason: r.string("reason")?,
            features: match r.take("features")? {
                Value::Map(m) => m
                    .into_iter()
                    .map(|(k, v)| match v {
                        Value::Double(d) => Ok((k, d)),
                        other => Err(invalid("features", format!("expected doubles, found {other:?}"))),
                    })
                    .collect::<Result<_, _>>()?,
                other => return Err(invalid("features", format!("expected a map, found {other:?}"))),
            },
        })
    }
}

impl CustomerSegments {
    /// Confluent-framed Avro, as written to `customer-segments` (field by
    /// field, as [`SegmentChange::to_avro`]).
    pub fn to_avro(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::framed(CUSTOMER_SEGMENTS_SCHEMA_ID, 32 + 32 * self.segments.len());
        w.str(self.customer_id.as_str());
        // The array in one block, then the end.
        if !self.segments.is_empty() {
            w.long(i64::try_from(self.segments.len()).unwrap_or(i64::MAX));
            for m in &self.segments {
                w.long(i64::from(m.kind as u32));
                w.str(&m.segment);
                w.long(m.since.millis());
            }
        }
        w.long(0);
        w.long(self.updated_at.millis());
        w.long(i64::from(self.rule_version));
        Ok(w.into_bytes())
    }

    /// Reads a record written by [`CustomerSegments::to_avro`].
    pub fn from_avro(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = read_record(payload, Some(CUSTOMER_SEGMENTS_SCHEMA_ID), &Schemas::builtin().membership)?;
        let segments = match r.take("segments")? {
            Value::Array(items) => items
                .into_iter()
                .map(|item| {
                    let mut m = Fields::new(item)?;
                    Ok(Membership {
                        kind: m.symbol("kind", SegmentKind::parse)?,
                        segment: m.string("segment")?,
                        since: m.time("since")?,
                    })
                })
                .collect::<Result<_, DecodeError>>()?,
            other => return Err(invalid("segments", format!("expected an array, found {other:?}"))),
        };
        Ok(Self {
            customer_id: CustomerId::new(r.string("customer_id")?),
            segments,
            updated_at: r.time("updated_at")?,
            rule_version: r.int("rule_version")?,
        })
    }
}

fn read_record(
    payload: &[u8],
    expected_id: Option<u32>,
    schema: &apache_avro::Schema,
) -> Result<Fields, DecodeError> {
    if payload.first() != Some(&wire::MAGIC) {
        return Err(DecodeError::UnknownFormat(payload.first().copied().unwrap_or_default()));
    }
    let (id, mut body) = wire::split(payload)?;
    if let Some(expected) = expected_id.filter(|e| *e != id) {
        return Err(DecodeError::UnknownSchemaId { id, topic_kind: "output", known: vec![expected] });
    }
    let value = read_datum(schema, None, &mut body).map_err(|e| DecodeError::Avro(e.to_string()))?;
    Fields::new(value)
}
