//! The internal `segstream-decisions` topic (`schemas/decisions.avsc`): the
//! decisions a worker took at the live tail that depend on timing rather
//! than on the input's content, so that whoever rebuilds a partition's state
//! repeats them exactly.

use apache_avro::types::Value;

use crate::avro_fields::{Fields, invalid, opt_bytes_value, opt_string_value, read_datum, write_datum};
use crate::error::{DecodeError, EncodeError};
use crate::ids::EventTime;
use crate::schema::{
    DECISIONS_SCHEMA_ID, DECISIONS_V1_SCHEMA_ID, DECISIONS_V2_SCHEMA_ID, DECISIONS_V3_SCHEMA_ID, Schemas,
};
use crate::wire;

/// One of the two co-partitioned inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lane {
    /// `clickstream`. At equal event time clicks go first: the click that
    /// led to an order precedes it.
    Clicks,
    /// `orders`.
    Orders,
}

impl Lane {
    /// Both lanes, clicks first.
    pub const BOTH: [Lane; 2] = [Lane::Clicks, Lane::Orders];

    /// The other lane of the pair.
    pub const fn other(self) -> Lane {
        match self {
            Lane::Clicks => Lane::Orders,
            Lane::Orders => Lane::Clicks,
        }
    }

    /// Lower-case name, for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Lane::Clicks => "clicks",
            Lane::Orders => "orders",
        }
    }
}

/// Where the merge of a partition pair stands: per lane, the offset after
/// the last record released (the lane's start offset before any).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Positions {
    /// On `clickstream`.
    pub clicks: i64,
    /// On `orders`.
    pub orders: i64,
}

impl Positions {
    /// The position of one lane.
    pub const fn of(self, lane: Lane) -> i64 {
        match lane {
            Lane::Clicks => self.clicks,
            Lane::Orders => self.orders,
        }
    }

    /// True if some lane has gone past `other`'s position: `other` can no
    /// longer be reached.
    pub const fn passed(self, other: Positions) -> bool {
        self.clicks > other.clicks || self.orders > other.orders
    }
}

/// What was decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecisionAction {
    /// `lane`'s records went first, up to position `until`, while the other
    /// lane was at the end of its log.
    Alone {
        /// The lane released.
        lane: Lane,
        /// Its position after the release.
        until: i64,
    },
    /// The partition's stream time moved up to the input's watermark (its
    /// own inputs were quiet): its due timers fired.
    Follow {
        /// The stream time reached.
        stream_time: EventTime,
    },
    /// A part of a mass firing: the partition's next `count` timers due
    /// up to `up_to` fired (earliest first, ties in the order the
    /// partition's customers were first seen) before the next record; the
    /// stream time did not move.
    Fire {
        /// The due time up to which timers fired.
        up_to: EventTime,
        /// How many fired at most (a customer whose next timer is due too
        /// counts again).
        count: i64,
    },
    /// The segment definitions `text` (their `version`) came into force for
    /// the partition here, and every customer of it was evaluated under them.
    Definitions {
        /// The definitions' version.
        version: i32,
        /// The definitions file, whole: a rebuild needs nothing else.
        text: std::sync::Arc<str>,
    },
    /// The trained model `record` (its `version`) came into force for the
    /// partition here, and every customer of it was evaluated under it.
    Model {
        /// The model's version.
        version: i64,
        /// The segment-models record, whole: a rebuild needs nothing else.
        record: std::sync::Arc<[u8]>,
    },
}

/// One decision and the point of the merge it was taken at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Where the merge stood.
    pub at: Positions,
    /// What was decided.
    pub action: DecisionAction,
}

/// One record of the decisions topic: the decisions of one transaction for
/// one partition pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionRecord {
    /// Consumer group of the workers.
    pub group_id: String,
    /// Input partition pair.
    pub partition: i32,
    /// 0, 1, 2, ... per group and partition.
    pub seq: i64,
    /// In the order taken.
    pub decisions: Vec<Decision>,
}

/// The action symbols, in schema order.
const ACTIONS: [&str; 6] = [
    "release_clicks_alone",
    "release_orders_alone",
    "follow_watermark",
    "fire_timers",
    "apply_definitions",
    "apply_model",
];

/// The action's enum index, `value`, `count`, `definitions` and `model`.
fn action_fields(action: &DecisionAction) -> (u32, i64, i64, Option<String>, Option<&[u8]>) {
    match action {
        DecisionAction::Alone { lane: Lane::Clicks, until } => (0, *until, 0, None, None),
        DecisionAction::Alone { lane: Lane::Orders, until } => (1, *until, 0, None, None),
        DecisionAction::Follow { stream_time } => (2, stream_time.millis(), 0, None, None),
        DecisionAction::Fire { up_to, count } => (3, up_to.millis(), *count, None, None),
        DecisionAction::Definitions { version, text } => {
            (4, i64::from(*version), 0, Some(text.to_string()), None)
        }
        DecisionAction::Model { version, record } => (5, *version, 0, None, Some(record)),
    }
}

impl DecisionRecord {
    /// Confluent-framed Avro, as written to the decisions topic.
    pub fn to_avro(&self) -> Result<Vec<u8>, EncodeError> {
        let decisions = self
            .decisions
            .iter()
            .map(|d| {
                let (index, value, count, definitions, model) = action_fields(&d.action);
                let symbol = ACTIONS.get(index as usize).copied().unwrap_or_default();
                Value::Record(vec![
                    ("clicks_position".into(), Value::Long(d.at.clicks)),
                    ("orders_position".into(), Value::Long(d.at.orders)),
                    ("action".into(), Value::Enum(index, symbol.to_owned())),
                    ("value".into(), Value::Long(value)),
                    ("count".into(), Value::Long(count)),
                    ("definitions".into(), opt_string_value(&definitions)),
                    ("model".into(), opt_bytes_value(model)),
                ])
            })
            .collect();
        let value = Value::Record(vec![
            ("group_id".into(), Value::String(self.group_id.clone())),
            ("partition".into(), Value::Int(self.partition)),
            ("seq".into(), Value::Long(self.seq)),
            ("decisions".into(), Value::Array(decisions)),
        ]);
        let body = write_datum(&Schemas::builtin().decisions, value)
            .map_err(|e| EncodeError::Avro { record: "Decisions", message: e.to_string() })?;
        Ok(wire::frame(DECISIONS_SCHEMA_ID, &body))
    }

    /// Reads a record written by [`DecisionRecord::to_avro`].
    pub fn from_avro(payload: &[u8]) -> Result<Self, DecodeError> {
        if payload.first() != Some(&wire::MAGIC) {
            return Err(DecodeError::UnknownFormat(payload.first().copied().unwrap_or_default()));
        }
        let (id, mut body) = wire::split(payload)?;
        let schemas = Schemas::builtin();
        // Older records are read through the current schema (count = 0).
        let (writer, reader) = match id {
            DECISIONS_SCHEMA_ID => (&schemas.decisions, None),
            DECISIONS_V3_SCHEMA_ID => (&schemas.decisions_v3, Some(&schemas.decisions)),
            DECISIONS_V2_SCHEMA_ID => (&schemas.decisions_v2, Some(&schemas.decisions)),
            DECISIONS_V1_SCHEMA_ID => (&schemas.decisions_v1, Some(&schemas.decisions)),
            _ => {
                return Err(DecodeError::UnknownSchemaId {
                    id,
                    topic_kind: "decisions",
                    known: vec![
                        DECISIONS_V1_SCHEMA_ID,
                        DECISIONS_V2_SCHEMA_ID,
                        DECISIONS_V3_SCHEMA_ID,
                        DECISIONS_SCHEMA_ID,
                    ],
                });
            }
        };
        let value = read_datum(writer, reader, &mut body).map_err(|e| DecodeError::Avro(e.to_string()))?;
        let mut r = Fields::new(value)?;
        let decisions = match r.take("decisions")? {
            Value::Array(items) => items.into_iter().map(decision).collect::<Result<_, _>>()?,
            other => return Err(invalid("decisions", format!("expected an array, found {other:?}"))),
        };
        Ok(Self {
            group_id: r.string("group_id")?,
            partition: r.int("partition")?,
            seq: r.long("seq")?,
            decisions,
        })
    }
}

fn decision(item: Value) -> Result<Decision, DecodeError> {
    let mut d = Fields::new(item)?;
    let at = Positions { clicks: d.long("clicks_position")?, orders: d.long("orders_position")? };
    let action = d.symbol("action", |s| ACTIONS.iter().position(|a| *a == s))?;
    let value = d.long("value")?;
    let count = d.long("count")?;
    let action = match action {
        0 => DecisionAction::Alone { lane: Lane::Clicks, until: value },
        1 => DecisionAction::Alone { lane: Lane::Orders, until: value },
        2 => DecisionAction::Follow { stream_time: EventTime::from_millis(value) },
        3 => DecisionAction::Fire { up_to: EventTime::from_millis(value), count },
        5 => DecisionAction::Model {
            version: value,
            record: d
                .opt_bytes("model")?
                .ok_or_else(|| invalid("model", "apply_model without a model".to_owned()))?
                .into(),
        },
        _ => DecisionAction::Definitions {
            version: i32::try_from(value)
                .map_err(|_| invalid("value", format!("version {value} out of range")))?,
            text: d
                .opt_string("definitions")?
                .ok_or_else(|| invalid("definitions", "apply_definitions without definitions".to_owned()))?
                .into(),
        },
    };
    Ok(Decision { at, action })
}
