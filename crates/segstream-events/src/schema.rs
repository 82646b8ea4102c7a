//! The Avro schemas of our topics, embedded from `schemas/*.avsc`, and the
//! schema ids they carry in the Confluent header.
//!
//! Until a schema registry is configured, ids are fixed per schema (below):
//! producers frame records with these ids and the worker accepts exactly
//! these. The `.avsc` files are the contract for clients in other languages.

use std::collections::HashMap;
use std::sync::OnceLock;

use apache_avro::Schema;

use crate::decision::Lane;

/// `schemas/clickstream.avsc`.
pub const CLICKSTREAM_AVSC: &str = include_str!("../../../schemas/clickstream.avsc");
/// `schemas/orders.avsc`.
pub const ORDERS_AVSC: &str = include_str!("../../../schemas/orders.avsc");
/// `schemas/segment-changes.avsc`.
pub const SEGMENT_CHANGES_AVSC: &str = include_str!("../../../schemas/segment-changes.avsc");
/// `schemas/customer-segments.avsc`.
pub const CUSTOMER_SEGMENTS_AVSC: &str = include_str!("../../../schemas/customer-segments.avsc");

/// `schemas/decisions.avsc`.
pub const DECISIONS_AVSC: &str = include_str!("../../../schemas/decisions.avsc");
/// `schemas/decisions-v1.avsc`: the layout of records with schema id 5.
pub const DECISIONS_V1_AVSC: &str = include_str!("../../../schemas/decisions-v1.avsc");
/// `schemas/decisions-v2.avsc`: the layout of records with schema id 6.
pub const DECISIONS_V2_AVSC: &str = include_str!("../../../schemas/decisions-v2.avsc");
/// `schemas/decisions-v3.avsc`: the layout of records with schema id 7.
pub const DECISIONS_V3_AVSC: &str = include_str!("../../../schemas/decisions-v3.avsc");

/// Schema id of `ClickEvent` v1 in the Confluent header.
pub const CLICKSTREAM_SCHEMA_ID: u32 = 1;
/// Schema id of `OrderEvent` v1.
pub const ORDERS_SCHEMA_ID: u32 = 2;
/// Schema id of `SegmentChange` v1.
pub const SEGMENT_CHANGES_SCHEMA_ID: u32 = 3;
/// Schema id of `CustomerSegments` v1.
pub const CUSTOMER_SEGMENTS_SCHEMA_ID: u32 = 4;
/// Schema id of `Decisions` v1 (internal decisions topic), still read.
pub const DECISIONS_V1_SCHEMA_ID: u32 = 5;
/// Schema id of `Decisions` v2 (adds `fire_timers` and `count`), still read.
pub const DECISIONS_V2_SCHEMA_ID: u32 = 6;
/// Schema id of `Decisions` v3 (adds `apply_definitions` and `definitions`), still read.
pub const DECISIONS_V3_SCHEMA_ID: u32 = 7;
/// Schema id of `Decisions` v4 (adds `apply_model` and `model`), written.
pub const DECISIONS_SCHEMA_ID: u32 = 8;

/// `schemas/segment-model.avsc`: what `segstream train` publishes.
pub const SEGMENT_MODEL_AVSC: &str = include_str!("../../../schemas/segment-model.avsc");
/// Schema id of `SegmentModel` v2 (adds the clustering algorithm and the
/// Gaussian mixture components), written.
pub const SEGMENT_MODEL_SCHEMA_ID: u32 = 10;
/// `schemas/segment-model-v1.avsc`: the layout of models with schema id 9.
pub const SEGMENT_MODEL_V1_AVSC: &str = include_str!("../../../schemas/segment-model-v1.avsc");
/// Schema id of `SegmentModel` v1, still read.
pub const SEGMENT_MODEL_V1_SCHEMA_ID: u32 = 9;

/// Parsed schemas: the built-in ones parsed once per process, and a
/// worker's copy that adds the writer schemas a registry gave it.
#[derive(Debug, Clone)]
pub struct Schemas {
    /// Reader schema for clicks.
    pub click: Schema,
    /// Reader schema for orders.
    pub order: Schema,
    /// Writer schema for segment changes.
    pub change: Schema,
    /// Writer schema for memberships.
    pub membership: Schema,
    /// Writer schema of the internal decisions topic.
    pub decisions: Schema,
    /// Writer schema of its older records (id 5).
    pub decisions_v1: Schema,
    /// Writer schema of its older records (id 6).
    pub decisions_v2: Schema,
    /// Writer schema of its older records (id 7).
    pub decisions_v3: Schema,
    /// Writer schemas we accept on the click topic, by id.
    click_writers: HashMap<u32, Writer>,
    /// Writer schemas we accept on the order topic, by id.
    order_writers: HashMap<u32, Writer>,
}

/// A writer schema, and whether it is the reader schema (decided once per
/// id, not per record).
#[derive(Debug, Clone)]
struct Writer {
    schema: Schema,
    ours: bool,
}

/// How the payloads of one schema id are read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Decoding<'s> {
    /// Written with our schema: read field by field, without generic values.
    Ours,
    /// Written with another schema: resolved against ours by apache_avro.
    Resolved(&'s Schema),
}

impl Schemas {
    /// The schemas compiled into this build.
    pub fn builtin() -> &'static Schemas {
        static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
        SCHEMAS.get_or_init(|| {
            // These are our own files, checked by the unit tests: failing here is a build defect.
            let parse = |text: &str, name: &str| {
                Schema::parse_str(text)
                    .unwrap_or_else(|e| panic!("embedded schema {name} does not parse: {e}"))
            };
            let click = parse(CLICKSTREAM_AVSC, "clickstream.avsc");
            let order = parse(ORDERS_AVSC, "orders.avsc");
            Schemas {
                click_writers: HashMap::from([(
                    CLICKSTREAM_SCHEMA_ID,
                    Writer { schema: click.clone(), ours: true },
                )]),
                order_writers: HashMap::from([(
                    ORDERS_SCHEMA_ID,
                    Writer { schema: order.clone(), ours: true },
                )]),
                click,
                order,
                change: parse(SEGMENT_CHANGES_AVSC, "segment-changes.avsc"),
                membership: parse(CUSTOMER_SEGMENTS_AVSC, "customer-segments.avsc"),
                decisions: parse(DECISIONS_AVSC, "decisions.avsc"),
                decisions_v1: parse(DECISIONS_V1_AVSC, "decisions-v1.avsc"),
                decisions_v2: parse(DECISIONS_V2_AVSC, "decisions-v2.avsc"),
                decisions_v3: parse(DECISIONS_V3_AVSC, "decisions-v3.avsc"),
            }
        })
    }

    /// How payloads of `lane`'s topic with this schema id are read, if
    /// they are.
    pub(crate) fn decoding(&self, lane: Lane, id: u32) -> Option<Decoding<'_>> {
        self.writers(lane)
            .get(&id)
            .map(|w| if w.ours { Decoding::Ours } else { Decoding::Resolved(&w.schema) })
    }

    /// The same reader schemas with no writer schema: with a registry, ids
    /// mean what the registry says, not the fixed ids of this build.
    pub fn without_writers(&self) -> Schemas {
        Schemas { click_writers: HashMap::new(), order_writers: HashMap::new(), ..self.clone() }
    }

    /// Whether a payload with this schema id decodes on `lane`'s topic.
    pub fn knows(&self, lane: Lane, id: u32) -> bool {
        self.writers(lane).contains_key(&id)
    }

    /// From now on payloads of `lane`'s topic with this schema id are read
    /// as written with the schema `writer` (Avro JSON text, as a registry
    /// gives it), resolved against our reader schema. An error says why the
    /// text is not a schema.
    pub fn add_writer(&mut self, lane: Lane, id: u32, writer: &str) -> Result<(), String> {
        let schema = Schema::parse_str(writer).map_err(|e| e.to_string())?;
        let (writers, reader) = match lane {
            Lane::Clicks => (&mut self.click_writers, &self.click),
            Lane::Orders => (&mut self.order_writers, &self.order),
        };
        let ours = schema.canonical_form() == reader.canonical_form();
        writers.insert(id, Writer { schema, ours });
        Ok(())
    }

    fn writers(&self, lane: Lane) -> &HashMap<u32, Writer> {
        match lane {
            Lane::Clicks => &self.click_writers,
            Lane::Orders => &self.order_writers,
        }
    }

    /// Ids accepted on the click topic (for error messages).
    pub fn click_ids(&self) -> Vec<u32> {
        sorted_keys(&self.click_writers)
    }

    /// Ids accepted on the order topic (for error messages).
    pub fn order_ids(&self) -> Vec<u32> {
        sorted_keys(&self.order_writers)
    }
}

fn sorted_keys(map: &HashMap<u32, Writer>) -> Vec<u32> {
    let mut ids: Vec<u32> = map.keys().copied().collect();
    ids.sort_unstable();
    ids
}
