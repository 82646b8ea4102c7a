//! Payload codecs for the input topics: Confluent-framed Avro or JSON in,
//! with the validation rules the schema docs state; Avro or JSON out (used by
//! the generator and by tests that play a producer).

use apache_avro::Schema;
use apache_avro::types::Value;

use crate::avro_fields::{Fields, invalid, opt_string_value, read_datum, write_datum};
use crate::binary::{ClickView, OrderView, read_click, read_order};
use crate::decision::Lane;
use crate::error::{DecodeError, EncodeError};
use crate::ids::{CustomerId, EventTime};
use crate::model::{ClickEvent, ClickEventType, OrderEvent, OrderStatus};
use crate::schema::{CLICKSTREAM_SCHEMA_ID, Decoding, ORDERS_SCHEMA_ID, Schemas};
use crate::wire;

/// How a producer encodes event payloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadFormat {
    /// Confluent wire format with the built-in schema id.
    Avro,
    /// A JSON object with the schema's field names.
    Json,
}

/// The event times inputs may carry: from a configurable earliest time
/// (`time.earliest_event_date`) to 2100-01-01. Later means a unit mistake
/// (microseconds) or a broken clock; a time in seconds read as milliseconds
/// lands in January 1970, before any earliest time worth setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventTimeRange {
    earliest: EventTime,
}

/// 2100-01-01T00:00:00Z.
const LATEST_EVENT_TIME_MS: i64 = 4_102_444_800_000;

impl EventTimeRange {
    /// From `earliest` to 2100-01-01.
    pub const fn from(earliest: EventTime) -> Self {
        Self { earliest }
    }

    fn check(self, time: EventTime) -> Result<(), DecodeError> {
        if time >= self.earliest && time.millis() < LATEST_EVENT_TIME_MS {
            return Ok(());
        }
        Err(DecodeError::EventTimeOutOfRange {
            millis: time.millis(),
            time: time.to_string(),
            earliest: self.earliest.to_string(),
        })
    }
}

/// What a field of a JSON payload that the schema does not have does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnknownJsonFields {
    /// Ignored: a producer may add a field before the schema does.
    #[default]
    Ignore,
    /// The payload is refused (`invalid_json`, naming the field).
    Reject,
}

/// What an input payload must satisfy beyond its schema.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InputRules {
    /// The event times it may carry.
    pub range: EventTimeRange,
    /// What a JSON field the schema does not have does.
    pub unknown_json_fields: UnknownJsonFields,
}

impl Default for EventTimeRange {
    /// From 1975-01-01, the default of `time.earliest_event_date`.
    fn default() -> Self {
        Self::from(EventTime::from_millis(157_766_400_000))
    }
}

enum Body<'a> {
    Avro(u32, &'a [u8]),
    Json(&'a [u8]),
}

fn classify(payload: &[u8]) -> Result<Body<'_>, DecodeError> {
    match payload.first() {
        None => Err(DecodeError::EmptyPayload),
        Some(&wire::MAGIC) => {
            let (id, body) = wire::split(payload)?;
            Ok(Body::Avro(id, body))
        }
        Some(b'{') => Ok(Body::Json(payload)),
        Some(&other) => Err(DecodeError::UnknownFormat(other)),
    }
}

/// A click body read by apache_avro with our schema (the reference the
/// field-by-field reader is held to).
#[cfg(test)]
pub(crate) fn generic_click(body: &[u8]) -> Result<ClickEvent, DecodeError> {
    let s = Schemas::builtin();
    click_from_value(avro_record(&s.click, &s.click, body)?)
}

/// An order body read by apache_avro with our schema.
#[cfg(test)]
pub(crate) fn generic_order(body: &[u8]) -> Result<OrderEvent, DecodeError> {
    let s = Schemas::builtin();
    order_from_value(avro_record(&s.order, &s.order, body)?)
}

/// A record written with another schema than ours, resolved against ours.
fn avro_record(writer: &Schema, reader: &Schema, mut body: &[u8]) -> Result<Value, DecodeError> {
    let value = read_datum(writer, Some(reader), &mut body).map_err(|e| DecodeError::Avro(e.to_string()))?;
    if !body.is_empty() {
        return Err(DecodeError::Avro(format!("{} trailing bytes after the record", body.len())));
    }
    Ok(value)
}

/// A JSON event; an error names the field it is about. Fields the schema
/// does not have are ignored (a producer can add one before we do) or,
/// with [`UnknownJsonFields::Reject`], refuse the payload.
fn from_json<T: serde::de::DeserializeOwned>(
    text: &[u8],
    unknown: UnknownJsonFields,
) -> Result<T, DecodeError> {
    let mut json = serde_json::Deserializer::from_slice(text);
    let mut extra: Option<String> = None;
    let mut note_extra = |path: serde_ignored::Path<'_>| {
        extra.get_or_insert_with(|| path.to_string());
    };
    let value: T =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(&mut json, &mut note_extra))
            .map_err(|e| DecodeError::Json { path: e.path().to_string(), problem: e.inner().to_string() })?;
    json.end().map_err(|e| DecodeError::Json { path: ".".into(), problem: e.to_string() })?;
    if let (UnknownJsonFields::Reject, Some(path)) = (unknown, extra) {
        return Err(DecodeError::Json {
            path,
            problem: "the schema has no such field (input.json_unknown_fields = \"dead_letter\")".into(),
        });
    }
    Ok(value)
}

/// Decodes and validates one click payload.
pub fn decode_click(payload: &[u8], schemas: &Schemas, rules: InputRules) -> Result<ClickEvent, DecodeError> {
    decode_click_view(payload, schemas, rules).map(ClickView::into_owned)
}

/// Decodes and validates one click payload, its text borrowed from the
/// payload when it was written with our schema.
pub(crate) fn decode_click_view<'a>(
    payload: &'a [u8],
    schemas: &Schemas,
    rules: InputRules,
) -> Result<ClickView<'a>, DecodeError> {
    let event = match classify(payload)? {
        Body::Avro(id, body) => match schemas.decoding(Lane::Clicks, id) {
            Some(Decoding::Ours) => read_click(body)?,
            Some(Decoding::Resolved(writer)) => {
                click_from_value(avro_record(writer, &schemas.click, body)?)?.into()
            }
            None => {
                return Err(DecodeError::UnknownSchemaId {
                    id,
                    topic_kind: "clickstream",
                    known: schemas.click_ids(),
                });
            }
        },
        Body::Json(text) => from_json::<ClickEvent>(text, rules.unknown_json_fields)?.into(),
    };
    validate_common(&event.customer_id)?;
    rules.range.check(event.event_time)?;
    if let Some(price) = event.price {
        validate_amount("price", price)?;
    }
    Ok(event)
}

/// Decodes and validates one order payload.
pub fn decode_order(payload: &[u8], schemas: &Schemas, rules: InputRules) -> Result<OrderEvent, DecodeError> {
    decode_order_view(payload, schemas, rules).map(OrderView::into_owned)
}

/// Decodes and validates one order payload, its text borrowed from the
/// payload when it was written with our schema.
pub(crate) fn decode_order_view<'a>(
    payload: &'a [u8],
    schemas: &Schemas,
    rules: InputRules,
) -> Result<OrderView<'a>, DecodeError> {
    let event = match classify(payload)? {
        Body::Avro(id, body) => match schemas.decoding(Lane::Orders, id) {
            Some(Decoding::Ours) => read_order(body)?,
            Some(Decoding::Resolved(writer)) => {
                order_from_value(avro_record(writer, &schemas.order, body)?)?.into()
            }
            None => {
                return Err(DecodeError::UnknownSchemaId {
                    id,
                    topic_kind: "orders",
                    known: schemas.order_ids(),
                });
            }
        },
        Body::Json(text) => from_json::<OrderEvent>(text, rules.unknown_json_fields)?.into(),
    };
    validate_common(&event.customer_id)?;
    rules.range.check(event.event_time)?;
    if event.order_id.is_empty() {
        return Err(invalid("order_id", "must not be empty"));
    }
    validate_amount("total", event.total)?;
    validate_amount("discount_amount", event.discount_amount)?;
    if event.item_count < 0 {
        return Err(invalid("item_count", format!("{} is negative", event.item_count)));
    }
    Ok(event)
}

fn validate_common(customer: &str) -> Result<(), DecodeError> {
    if customer.trim().is_empty() {
        return Err(invalid("customer_id", "must not be empty"));
    }
    Ok(())
}

/// Largest amount accepted on one event: a billion currency units.
const MAX_AMOUNT: f64 = 1.0e9;

fn validate_amount(field: &'static str, amount: f64) -> Result<(), DecodeError> {
    if !amount.is_finite() || amount < 0.0 {
        return Err(invalid(field, format!("{amount} is not a finite, non-negative amount")));
    }
    if amount > MAX_AMOUNT {
        return Err(invalid(field, format!("{amount} is above the 1e9 limit of one event")));
    }
    Ok(())
}

fn click_from_value(value: Value) -> Result<ClickEvent, DecodeError> {
    let mut f = Fields::new(value)?;
    Ok(ClickEvent {
        event_id: f.string("event_id")?,
        customer_id: CustomerId::new(f.string("customer_id")?),
        session_id: f.opt_string("session_id")?,
        event_type: f.symbol("event_type", ClickEventType::parse)?,
        event_time: f.time("event_time")?,
        device: f.opt_string("device")?,
        page: f.opt_string("page")?,
        product_id: f.opt_string("product_id")?,
        category: f.opt_string("category")?,
        price: f.opt_double("price")?,
        search_query: f.opt_string("search_query")?,
    })
}

fn order_from_value(value: Value) -> Result<OrderEvent, DecodeError> {
    let mut f = Fields::new(value)?;
    Ok(OrderEvent {
        order_id: f.string("order_id")?,
        customer_id: CustomerId::new(f.string("customer_id")?),
        event_time: f.time("event_time")?,
        status: f.symbol("status", OrderStatus::parse)?,
        total: f.double("total")?,
        currency: f.string("currency")?,
        discount_amount: f.double("discount_amount")?,
        item_count: f.int("item_count")?,
        categories: f.strings("categories")?,
        payment_method: f.opt_string("payment_method")?,
    })
}

fn symbol_index<T: PartialEq>(all: &[T], x: &T) -> u32 {
    all.iter().position(|s| s == x).unwrap_or_default() as u32
}

fn avro_bytes(schema: &Schema, id: u32, record: &'static str, value: Value) -> Result<Vec<u8>, EncodeError> {
    let body =
        write_datum(schema, value).map_err(|e| EncodeError::Avro { record, message: e.to_string() })?;
    Ok(wire::frame(id, &body))
}

fn json_bytes<T: serde::Serialize>(record: &'static str, value: &T) -> Result<Vec<u8>, EncodeError> {
    serde_json::to_vec(value).map_err(|e| EncodeError::Json { record, message: e.to_string() })
}

/// Encodes a click as a producer would.
pub fn encode_click(e: &ClickEvent, format: PayloadFormat) -> Result<Vec<u8>, EncodeError> {
    if format == PayloadFormat::Json {
        return json_bytes("ClickEvent", e);
    }
    let value = Value::Record(vec![
        ("event_id".into(), Value::String(e.event_id.clone())),
        ("customer_id".into(), Value::String(e.customer_id.to_string())),
        ("session_id".into(), opt_string_value(&e.session_id)),
        (
            "event_type".into(),
            Value::Enum(symbol_index(&ClickEventType::ALL, &e.event_type), e.event_type.as_str().into()),
        ),
        ("event_time".into(), Value::TimestampMillis(e.event_time.millis())),
        ("device".into(), opt_string_value(&e.device)),
        ("page".into(), opt_string_value(&e.page)),
        ("product_id".into(), opt_string_value(&e.product_id)),
        ("category".into(), opt_string_value(&e.category)),
        (
            "price".into(),
            match e.price {
                None => Value::Union(0, Box::new(Value::Null)),
                Some(p) => Value::Union(1, Box::new(Value::Double(p))),
            },
        ),
        ("search_query".into(), opt_string_value(&e.search_query)),
    ]);
    avro_bytes(&Schemas::builtin().click, CLICKSTREAM_SCHEMA_ID, "ClickEvent", value)
}

/// Encodes an order as a producer would.
pub fn encode_order(e: &OrderEvent, format: PayloadFormat) -> Result<Vec<u8>, EncodeError> {
    if format == PayloadFormat::Json {
        return json_bytes("OrderEvent", e);
    }
    let value = Value::Record(vec![
        ("order_id".into(), Value::String(e.order_id.clone())),
        ("customer_id".into(), Value::String(e.customer_id.to_string())),
        ("event_time".into(), Value::TimestampMillis(e.event_time.millis())),
        ("status".into(), Value::Enum(symbol_index(&OrderStatus::ALL, &e.status), e.status.as_str().into())),
        ("total".into(), Value::Double(e.total)),
        ("currency".into(), Value::String(e.currency.clone())),
        ("discount_amount".into(), Value::Double(e.discount_amount)),
        ("item_count".into(), Value::Int(e.item_count)),
        ("categories".into(), Value::Array(e.categories.iter().cloned().map(Value::String).collect())),
        ("payment_method".into(), opt_string_value(&e.payment_method)),
    ]);
    avro_bytes(&Schemas::builtin().order, ORDERS_SCHEMA_ID, "OrderEvent", value)
}
