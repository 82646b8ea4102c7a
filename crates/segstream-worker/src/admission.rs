//! Admission: what a record becomes before it enters the merge. Decoding
//! (straight into Arrow), then the checks that depend only on the record
//! itself and on its lane's history in offset order, so a replay of the same
//! input decides the same:
//! - the key must be the customer_id (else dead letter `key_mismatch`), and
//!   the record on the partition Kafka's default partitioner gives that key
//!   (else dead letter `wrong_partition`: another worker holds the
//!   customer's state);
//! - the event time may be at most `time.max_future_ms` after the Kafka
//!   timestamp (else dead letter `future_event`);
//! - an event older than its lane's largest event time minus the allowed
//!   lateness is late: counted, then applied or dead-lettered (`late_event`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use segstream_config::{Config, JsonUnknownFields, LatePolicy};
use segstream_events::schema::Schemas;
use segstream_events::{
    ClickBatch, EventTime, EventTimeRange, InputRules, Lane, OrderBatch, RawRecord, Rejected,
    UnknownJsonFields, decode_clicks, decode_orders,
};
use segstream_registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::error::WorkerError;

/// A record as it arrives from Kafka.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Incoming<'a> {
    /// Message key.
    pub(crate) key: Option<&'a [u8]>,
    /// Message value.
    pub(crate) payload: Option<&'a [u8]>,
    /// Source offset.
    pub(crate) offset: i64,
    /// Kafka record timestamp (ms), if any.
    pub(crate) timestamp: Option<i64>,
}

/// A record waiting in the merge.
#[derive(Debug)]
pub(crate) enum Item {
    /// A click: row `row` of `batch`.
    Click {
        /// The decoded poll it came in.
        batch: Arc<ClickBatch>,
        /// Its row.
        row: usize,
        /// Its Kafka timestamp, for the latency histogram.
        ts: Option<i64>,
    },
    /// An order: row `row` of `batch`.
    Order {
        /// The decoded poll it came in.
        batch: Arc<OrderBatch>,
        /// Its row.
        row: usize,
        /// Its Kafka timestamp.
        ts: Option<i64>,
    },
    /// Set aside for the dead-letter topic.
    Dead(Box<Rejection>),
}

/// Why a record is set aside, with its original bytes.
#[derive(Debug)]
pub(crate) struct Rejection {
    /// Original key.
    pub(crate) key: Option<Vec<u8>>,
    /// Original value.
    pub(crate) payload: Option<Vec<u8>>,
    /// Stable code (dead-letter header `segstream.error.code`).
    pub(crate) code: &'static str,
    /// Human-readable reason.
    pub(crate) message: String,
}

/// One decoded poll of a lane.
#[derive(Debug, Clone)]
pub(crate) enum Decoded {
    Clicks(Arc<ClickBatch>),
    Orders(Arc<OrderBatch>),
}

impl Decoded {
    /// Decodes a lane's payloads; the ones that did not decode come back
    /// with their offsets.
    pub(crate) fn decode<'a>(
        lane: Lane,
        records: impl IntoIterator<Item = RawRecord<'a>>,
        schemas: &Schemas,
        rules: InputRules,
    ) -> Result<(Self, Vec<Rejected>), WorkerError> {
        Ok(match lane {
            Lane::Clicks => {
                let d = decode_clicks(records, schemas, rules)?;
                (Self::Clicks(Arc::new(d.batch)), d.rejected)
            }
            Lane::Orders => {
                let d = decode_orders(records, schemas, rules)?;
                (Self::Orders(Arc::new(d.batch)), d.rejected)
            }
        })
    }

    /// Rows decoded.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Clicks(b) => b.len(),
            Self::Orders(b) => b.len(),
        }
    }

    /// Customer and event time of a row.
    pub(crate) fn row(&self, row: usize) -> (&str, EventTime) {
        match self {
            Self::Clicks(b) => (b.row(row).customer_id, b.row(row).event_time),
            Self::Orders(b) => (b.row(row).customer_id, b.row(row).event_time),
        }
    }

    fn item(&self, row: usize, ts: Option<i64>) -> Item {
        match self {
            Self::Clicks(b) => Item::Click { batch: Arc::clone(b), row, ts },
            Self::Orders(b) => Item::Order { batch: Arc::clone(b), row, ts },
        }
    }
}

/// The writer schemas input payloads are decoded with: the built-in ones
/// and, with a schema registry, those it has for the ids records carry
/// (looked up once, then cached).
#[derive(Debug, Clone)]
pub(crate) struct InputSchemas {
    schemas: Arc<Schemas>,
    registry: Option<Registry>,
    /// Ids the registry did not have, and when it was asked: asked again
    /// after [`ASK_AGAIN`], not per record.
    missing: HashMap<(Lane, u32), Instant>,
    /// Set when the worker stops: a wait for the registry ends.
    stop: Option<CancellationToken>,
}

/// How long an id the registry did not have is not asked for again.
const ASK_AGAIN: Duration = Duration::from_secs(60);

impl InputSchemas {
    pub(crate) fn new(config: &Config) -> Result<Self, WorkerError> {
        let registry = Registry::from_config(&config.schema_registry)?;
        let schemas = if registry.is_some() {
            Schemas::builtin().without_writers()
        } else {
            Schemas::builtin().clone()
        };
        Ok(Self { schemas: Arc::new(schemas), registry, missing: HashMap::new(), stop: None })
    }

    pub(crate) fn schemas(&self) -> &Schemas {
        &self.schemas
    }

    /// Makes sure every schema id among `payloads` is known, asking the
    /// registry for the ones that are not. While the registry does not
    /// answer this waits and tries again (records are not dead-lettered
    /// for an outage); an id it does not have stays unknown and its
    /// records are dead-lettered (`unknown_schema_id`).
    pub(crate) fn resolve<'a>(
        &mut self,
        lane: Lane,
        payloads: impl Iterator<Item = &'a [u8]>,
    ) -> Result<(), WorkerError> {
        let Some(registry) = &self.registry else { return Ok(()) };
        for id in payloads.filter_map(segstream_events::wire::schema_id) {
            if self.schemas.knows(lane, id)
                || self.missing.get(&(lane, id)).is_some_and(|at| at.elapsed() < ASK_AGAIN)
            {
                continue;
            }
            // Records are held, not dead-lettered, while the registry does not answer.
            let stop = &self.stop;
            let text = registry
                .waiting(&|| stop.as_ref().is_some_and(CancellationToken::is_cancelled), |r| r.schema(id))?;
            match text.map(|t| Arc::make_mut(&mut self.schemas).add_writer(lane, id, &t)) {
                Some(Ok(())) => {
                    tracing::info!(id, lane = lane.as_str(), "schema registry: writer schema added")
                }
                Some(Err(e)) => {
                    tracing::warn!(id, error = %e, "schema registry: the schema with this id does not parse; its records are dead-lettered");
                    self.missing.insert((lane, id), Instant::now());
                }
                None => {
                    self.missing.insert((lane, id), Instant::now());
                }
            }
        }
        Ok(())
    }
}

/// Where a record was read: its partition and the topic's partition count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placement {
    pub(crate) partition: i32,
    pub(crate) partitions: i32,
}

/// A record that decoded but breaks a check of its own: the dead-letter code
/// and message. `placement`: checked against the key when given.
pub(crate) fn own_check(
    customer: &str,
    key: Option<&[u8]>,
    placement: Option<Placement>,
    time: EventTime,
    timestamp: Option<i64>,
    max_future_ms: i64,
) -> Result<(), (&'static str, String)> {
    let Some(key) = key.filter(|k| *k == customer.as_bytes()) else {
        return Err((
            "key_mismatch",
            format!(
                "message key {:?} is not the customer_id {customer:?}: key every record by customer_id so both topics are co-partitioned",
                key.map(String::from_utf8_lossy)
            ),
        ));
    };
    if let Some(Placement { partition, partitions }) = placement {
        let expected = segstream_kafka::partition_for(key, partitions);
        if expected != partition {
            return Err((
                "wrong_partition",
                format!(
                    "the record of customer {customer:?} is on partition {partition}, Kafka's default partitioner (murmur2 of the key) puts it on {expected} of {partitions}: produce with the default partitioner (librdkafka clients: partitioner=murmur2_random)"
                ),
            ));
        }
    }
    if let Some(ts) = timestamp
        && time > EventTime::from_millis(ts).plus_millis(max_future_ms)
    {
        return Err((
            "future_event",
            format!(
                "event time {time} is more than time.max_future_ms ({max_future_ms} ms) after the record's Kafka timestamp"
            ),
        ));
    }
    Ok(())
}

/// What `config` asks of input payloads: event times from
/// `time.earliest_event_date` (which validation checked) to 2100, and
/// `input.json_unknown_fields`.
pub fn input_rules(config: &Config) -> InputRules {
    let range = config
        .time
        .earliest_event_millis()
        .map_or_else(EventTimeRange::default, |ms| EventTimeRange::from(EventTime::from_millis(ms)));
    let unknown_json_fields = match config.input.json_unknown_fields {
        JsonUnknownFields::Ignore => UnknownJsonFields::Ignore,
        JsonUnknownFields::DeadLetter => UnknownJsonFields::Reject,
    };
    InputRules { range, unknown_json_fields }
}

/// What admission found, for the caller's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Goes into the merge as an event.
    Event,
    /// Did not decode.
    Undecodable(&'static str),
    /// Decoded but broke its own check (key, future).
    Refused(&'static str),
    /// Later than the allowed lateness, applied anyway.
    LateApplied,
    /// Later than the allowed lateness, set aside.
    LateSetAside,
}

/// The admission rules of one worker.
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    /// The writer schemas payloads are decoded with.
    schemas: InputSchemas,
    /// What inputs must satisfy beyond their schema.
    rules: InputRules,
    max_future_ms: i64,
    late: LatePolicy,
    lateness_ms: i64,
    /// The input topics' partition count, once known: records are checked
    /// to be on their key's partition.
    partitions: Option<i32>,
}

impl Admission {
    pub(crate) fn new(config: &Config) -> Result<Self, WorkerError> {
        Ok(Self {
            schemas: InputSchemas::new(config)?,
            rules: input_rules(config),
            max_future_ms: i64::try_from(config.time.max_future_ms).unwrap_or(i64::MAX),
            late: config.time.late_events,
            lateness_ms: i64::try_from(config.time.allowed_lateness_ms).unwrap_or(i64::MAX),
            partitions: None,
        })
    }

    /// The event time of a Kafka record as admission would let it in (no
    /// lateness judged): `None` when it would be dead-lettered.
    pub(crate) fn admissible(
        &mut self,
        lane: Lane,
        record: &Incoming<'_>,
        placement: Placement,
    ) -> Result<Option<EventTime>, WorkerError> {
        let raw =
            RawRecord { payload: record.payload, partition: placement.partition, offset: record.offset };
        self.schemas.resolve(lane, record.payload.into_iter())?;
        let (decoded, _) = Decoded::decode(lane, [raw], self.schemas.schemas(), self.rules)?;
        if decoded.len() != 1 {
            return Ok(None);
        }
        let (customer, time) = decoded.row(0);
        let ok = own_check(customer, record.key, Some(placement), time, record.timestamp, self.max_future_ms);
        Ok(ok.is_ok().then_some(time))
    }

    /// A wait for the schema registry ends when `stop` is cancelled.
    pub(crate) fn stop_waiting_on(&mut self, stop: CancellationToken) {
        self.schemas.stop = Some(stop);
    }

    /// From now on records are checked to be on their key's partition of
    /// `partitions`.
    pub(crate) fn check_placement(&mut self, partitions: i32) {
        self.partitions = Some(partitions);
    }

    /// The Kafka records of one poll of a lane, in offset order, as merge
    /// items. `lane_max` is the lane's largest event time so far (in offset
    /// order) and is moved along.
    pub(crate) fn admit(
        &mut self,
        lane: Lane,
        partition: i32,
        records: &[Incoming<'_>],
        lane_max: &mut Option<EventTime>,
        mut verdict: impl FnMut(Verdict),
    ) -> Result<Vec<(i64, Option<EventTime>, Item)>, WorkerError> {
        let raw = records.iter().map(|r| RawRecord { payload: r.payload, partition: 0, offset: r.offset });
        self.schemas.resolve(lane, records.iter().filter_map(|r| r.payload))?;
        let (decoded, rejected) = Decoded::decode(lane, raw, self.schemas.schemas(), self.rules)?;
        // Decoded rows keep input order minus the rejects: walk both in step.
        let mut rejected = rejected.into_iter().peekable();
        let mut row = 0;
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            let dead = |code, message| {
                Item::Dead(Box::new(Rejection {
                    key: r.key.map(<[u8]>::to_vec),
                    payload: r.payload.map(<[u8]>::to_vec),
                    code,
                    message,
                }))
            };
            if let Some(e) = rejected.next_if(|e| e.offset == r.offset) {
                verdict(Verdict::Undecodable(e.error.code()));
                out.push((r.offset, None, dead(e.error.code(), e.error.to_string())));
                continue;
            }
            let (customer, time) = decoded.row(row);
            let item = decoded.item(row, r.timestamp);
            row += 1;
            let placement = self.partitions.map(|partitions| Placement { partition, partitions });
            if let Err((code, message)) =
                own_check(customer, r.key, placement, time, r.timestamp, self.max_future_ms)
            {
                verdict(Verdict::Refused(code));
                out.push((r.offset, None, dead(code, message)));
                continue;
            }
            let (time, item) = self.judge(time, item, lane_max, &mut verdict, dead);
            out.push((r.offset, time, item));
        }
        Ok(out)
    }

    /// Rows of a history file (no key or Kafka timestamp to check), as merge
    /// items; see [`Admission::admit`].
    pub(crate) fn admit_rows(
        &self,
        decoded: &Decoded,
        rows: &[(usize, i64)],
        lane_max: &mut Option<EventTime>,
        mut verdict: impl FnMut(Verdict),
    ) -> Vec<(i64, Option<EventTime>, Item)> {
        rows.iter()
            .map(|&(row, offset)| {
                let (_, time) = decoded.row(row);
                let (time, item) =
                    self.judge(time, decoded.item(row, None), lane_max, &mut verdict, |code, message| {
                        Item::Dead(Box::new(Rejection { key: None, payload: None, code, message }))
                    });
                (offset, time, item)
            })
            .collect()
    }

    /// Lateness.
    fn judge(
        &self,
        time: EventTime,
        item: Item,
        lane_max: &mut Option<EventTime>,
        verdict: &mut impl FnMut(Verdict),
        dead: impl FnOnce(&'static str, String) -> Item,
    ) -> (Option<EventTime>, Item) {
        let max = *lane_max.get_or_insert(time);
        *lane_max = Some(max.max(time));
        let limit = max.plus_millis(-self.lateness_ms);
        if time >= limit {
            verdict(Verdict::Event);
            return (Some(time), item);
        }
        match self.late {
            LatePolicy::Apply => {
                verdict(Verdict::LateApplied);
                (Some(time), item)
            }
            LatePolicy::DeadLetter => {
                verdict(Verdict::LateSetAside);
                let message = format!(
                    "event time {time} is before {limit}: later than time.allowed_lateness_ms ({} ms) behind its partition",
                    self.lateness_ms
                );
                (None, dead("late_event", message))
            }
        }
    }
}
