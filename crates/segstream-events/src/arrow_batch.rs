//! Decoding a batch of raw payloads straight into Arrow record batches.
//!
//! One call per topic-partition poll: every payload is decoded and validated,
//! appended to column builders, and the batch is finished once. Payloads that
//! fail come back as [`Rejected`] with their Kafka coordinates, so the caller
//! can dead-letter them; nothing is dropped silently. The Arrow batches are the
//! in-memory form every later stage reads (and what DataFusion plans consume).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, DictionaryArray, Float64Array, Float64Builder, Int32Array, Int32Builder, Int64Array,
    Int64Builder, ListBuilder, RecordBatch, StringArray, StringBuilder, TimestampMillisecondArray,
    TimestampMillisecondBuilder, UInt8Array, UInt8Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, UInt8Type};
use datafusion::arrow::error::ArrowError;

use crate::codec::{InputRules, decode_click_view, decode_order_view};
use crate::error::DecodeError;
use crate::ids::EventTime;
use crate::model::{ClickEventType, OrderStatus};
use crate::schema::Schemas;

/// One Kafka message as the decoder sees it.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// Message value; `None` for a null value.
    pub payload: Option<&'a [u8]>,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
}

/// A payload that did not become an event, with where it came from.
#[derive(Debug)]
pub struct Rejected {
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Why.
    pub error: DecodeError,
}

/// Result of decoding one batch of payloads.
#[derive(Debug)]
pub struct DecodedBatch<B> {
    /// The events that decoded, in input order.
    pub batch: B,
    /// The payloads that did not, in input order.
    pub rejected: Vec<Rejected>,
}

/// Decodes every payload: good events go to `append`, failures come back
/// with their coordinates.
fn decode_each<'a, E>(
    records: impl IntoIterator<Item = RawRecord<'a>>,
    decode: impl Fn(&'a [u8]) -> Result<E, DecodeError>,
    mut append: impl FnMut(E, &RawRecord<'a>),
) -> Vec<Rejected> {
    let mut rejected = Vec::new();
    for r in records {
        match r.payload.ok_or(DecodeError::EmptyPayload).and_then(&decode) {
            Ok(e) => append(e, &r),
            Err(error) => rejected.push(Rejected { partition: r.partition, offset: r.offset, error }),
        }
    }
    rejected
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn dict_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::UInt8), Box::new(DataType::Utf8))
}

/// Dictionary column whose values are the enum's symbols in schema order, so
/// the key is the symbol's index.
fn symbol_column(keys: &UInt8Array, symbols: &[&str]) -> Result<ArrayRef, ArrowError> {
    let values: ArrayRef = Arc::new(StringArray::from(symbols.to_vec()));
    Ok(Arc::new(DictionaryArray::<UInt8Type>::try_new(keys.clone(), values)?))
}

/// A batch of decoded clicks (columns as in [`ClickBatch::schema`]).
#[derive(Debug, Clone)]
pub struct ClickBatch {
    batch: RecordBatch,
    customer_id: StringArray,
    event_id: StringArray,
    event_type: UInt8Array,
    event_time: TimestampMillisecondArray,
    device: StringArray,
    category: StringArray,
    price: Float64Array,
    partition: Int32Array,
    offset: Int64Array,
}

/// One click, borrowed from a [`ClickBatch`].
#[derive(Debug, Clone, Copy)]
pub struct ClickRow<'a> {
    /// Customer.
    pub customer_id: &'a str,
    /// Producer's event id.
    pub event_id: &'a str,
    /// What happened.
    pub event_type: ClickEventType,
    /// When.
    pub event_time: EventTime,
    /// Device class.
    pub device: Option<&'a str>,
    /// Category.
    pub category: Option<&'a str>,
    /// Unit price.
    pub price: Option<f64>,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
}

fn opt(a: &StringArray, i: usize) -> Option<&str> {
    (!a.is_null(i)).then(|| a.value(i))
}

impl ClickBatch {
    /// Arrow schema of click batches. `kafka_partition`/`kafka_offset` say
    /// where each row came from.
    pub fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Utf8, false),
            Field::new("event_id", DataType::Utf8, false),
            Field::new("session_id", DataType::Utf8, true),
            Field::new("event_type", dict_type(), false),
            Field::new("event_time", ts_type(), false),
            Field::new("device", DataType::Utf8, true),
            Field::new("page", DataType::Utf8, true),
            Field::new("product_id", DataType::Utf8, true),
            Field::new("category", DataType::Utf8, true),
            Field::new("price", DataType::Float64, true),
            Field::new("search_query", DataType::Utf8, true),
            Field::new("kafka_partition", DataType::Int32, false),
            Field::new("kafka_offset", DataType::Int64, false),
        ]))
    }

    /// The Arrow record batch.
    pub fn record_batch(&self) -> &RecordBatch {
        &self.batch
    }

    /// Number of clicks.
    pub fn len(&self) -> usize {
        self.batch.num_rows()
    }

    /// True when the batch holds no click.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i`; panics if out of range, like slice indexing.
    pub fn row(&self, i: usize) -> ClickRow<'_> {
        ClickRow {
            customer_id: self.customer_id.value(i),
            event_id: self.event_id.value(i),
            event_type: ClickEventType::ALL[usize::from(self.event_type.value(i))],
            event_time: EventTime::from_millis(self.event_time.value(i)),
            device: opt(&self.device, i),
            category: opt(&self.category, i),
            price: (!self.price.is_null(i)).then(|| self.price.value(i)),
            partition: self.partition.value(i),
            offset: self.offset.value(i),
        }
    }
}

/// Decodes click payloads into one Arrow batch plus the rejects.
pub fn decode_clicks<'a>(
    records: impl IntoIterator<Item = RawRecord<'a>>,
    schemas: &Schemas,
    rules: InputRules,
) -> Result<DecodedBatch<ClickBatch>, ArrowError> {
    let mut customer_id = StringBuilder::new();
    let mut event_id = StringBuilder::new();
    let mut session_id = StringBuilder::new();
    let mut event_type = UInt8Builder::new();
    let mut event_time = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let mut device = StringBuilder::new();
    let mut page = StringBuilder::new();
    let mut product_id = StringBuilder::new();
    let mut category = StringBuilder::new();
    let mut price = Float64Builder::new();
    let mut search_query = StringBuilder::new();
    let mut partition = Int32Builder::new();
    let mut offset = Int64Builder::new();
    let rejected = decode_each(
        records,
        |p| decode_click_view(p, schemas, rules),
        |e, r| {
            customer_id.append_value(&e.customer_id);
            event_id.append_value(&e.event_id);
            session_id.append_option(e.session_id.as_deref());
            event_type.append_value(e.event_type as u8);
            event_time.append_value(e.event_time.millis());
            device.append_option(e.device.as_deref());
            page.append_option(e.page.as_deref());
            product_id.append_option(e.product_id.as_deref());
            category.append_option(e.category.as_deref());
            price.append_option(e.price);
            search_query.append_option(e.search_query.as_deref());
            partition.append_value(r.partition);
            offset.append_value(r.offset);
        },
    );
    let symbols: Vec<&str> = ClickEventType::ALL.iter().map(|t| t.as_str()).collect();
    let out = ClickBatch {
        customer_id: customer_id.finish(),
        event_id: event_id.finish(),
        event_type: event_type.finish(),
        event_time: event_time.finish(),
        device: device.finish(),
        category: category.finish(),
        price: price.finish(),
        partition: partition.finish(),
        offset: offset.finish(),
        batch: RecordBatch::new_empty(ClickBatch::schema()),
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(out.customer_id.clone()),
        Arc::new(out.event_id.clone()),
        Arc::new(session_id.finish()),
        symbol_column(&out.event_type, &symbols)?,
        Arc::new(out.event_time.clone()),
        Arc::new(out.device.clone()),
        Arc::new(page.finish()),
        Arc::new(product_id.finish()),
        Arc::new(out.category.clone()),
        Arc::new(out.price.clone()),
        Arc::new(search_query.finish()),
        Arc::new(out.partition.clone()),
        Arc::new(out.offset.clone()),
    ];
    let batch = RecordBatch::try_new(ClickBatch::schema(), columns)?;
    Ok(DecodedBatch { batch: ClickBatch { batch, ..out }, rejected })
}

/// A batch of decoded order events (columns as in [`OrderBatch::schema`]).
#[derive(Debug, Clone)]
pub struct OrderBatch {
    batch: RecordBatch,
    order_id: StringArray,
    customer_id: StringArray,
    event_time: TimestampMillisecondArray,
    status: UInt8Array,
    total: Float64Array,
    discount_amount: Float64Array,
    item_count: Int32Array,
    /// First listed category of each order (not a schema column: the list is).
    primary_category: StringArray,
    payment_method: StringArray,
    partition: Int32Array,
    offset: Int64Array,
}

/// One order event, borrowed from an [`OrderBatch`].
#[derive(Debug, Clone, Copy)]
pub struct OrderRow<'a> {
    /// Order id.
    pub order_id: &'a str,
    /// Customer.
    pub customer_id: &'a str,
    /// When.
    pub event_time: EventTime,
    /// Reported status.
    pub status: OrderStatus,
    /// Amount paid after discount.
    pub total: f64,
    /// Discount granted.
    pub discount_amount: f64,
    /// Items.
    pub item_count: i32,
    /// The first category listed, if any: the order's primary category.
    pub primary_category: Option<&'a str>,
    /// Payment method.
    pub payment_method: Option<&'a str>,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
}

impl OrderBatch {
    /// Arrow schema of order batches.
    pub fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("order_id", DataType::Utf8, false),
            Field::new("customer_id", DataType::Utf8, false),
            Field::new("event_time", ts_type(), false),
            Field::new("status", dict_type(), false),
            Field::new("total", DataType::Float64, false),
            Field::new("currency", DataType::Utf8, false),
            Field::new("discount_amount", DataType::Float64, false),
            Field::new("item_count", DataType::Int32, false),
            Field::new(
                "categories",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                false,
            ),
            Field::new("payment_method", DataType::Utf8, true),
            Field::new("kafka_partition", DataType::Int32, false),
            Field::new("kafka_offset", DataType::Int64, false),
        ]))
    }

    /// The Arrow record batch.
    pub fn record_batch(&self) -> &RecordBatch {
        &self.batch
    }

    /// Number of order events.
    pub fn len(&self) -> usize {
        self.batch.num_rows()
    }

    /// True when the batch holds no order event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i`; panics if out of range, like slice indexing.
    pub fn row(&self, i: usize) -> OrderRow<'_> {
        OrderRow {
            order_id: self.order_id.value(i),
            customer_id: self.customer_id.value(i),
            event_time: EventTime::from_millis(self.event_time.value(i)),
            status: OrderStatus::ALL[usize::from(self.status.value(i))],
            total: self.total.value(i),
            discount_amount: self.discount_amount.value(i),
            item_count: self.item_count.value(i),
            primary_category: opt(&self.primary_category, i),
            payment_method: opt(&self.payment_method, i),
            partition: self.partition.value(i),
            offset: self.offset.value(i),
        }
    }
}

/// Decodes order payloads into one Arrow batch plus the rejects.
pub fn decode_orders<'a>(
    records: impl IntoIterator<Item = RawRecord<'a>>,
    schemas: &Schemas,
    rules: InputRules,
) -> Result<DecodedBatch<OrderBatch>, ArrowError> {
    let mut order_id = StringBuilder::new();
    let mut customer_id = StringBuilder::new();
    let mut event_time = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let mut status = UInt8Builder::new();
    let mut total = Float64Builder::new();
    let mut currency = StringBuilder::new();
    let mut discount_amount = Float64Builder::new();
    let mut item_count = Int32Builder::new();
    let mut categories = ListBuilder::new(StringBuilder::new());
    let mut primary_category = StringBuilder::new();
    let mut payment_method = StringBuilder::new();
    let mut partition = Int32Builder::new();
    let mut offset = Int64Builder::new();
    let rejected = decode_each(
        records,
        |p| decode_order_view(p, schemas, rules),
        |e, r| {
            order_id.append_value(&e.order_id);
            customer_id.append_value(&e.customer_id);
            event_time.append_value(e.event_time.millis());
            status.append_value(e.status as u8);
            total.append_value(e.total);
            currency.append_value(&e.currency);
            discount_amount.append_value(e.discount_amount);
            item_count.append_value(e.item_count);
            for c in &e.categories {
                categories.values().append_value(c);
            }
            categories.append(true);
            primary_category.append_option(e.categories.first());
            payment_method.append_option(e.payment_method.as_deref());
            partition.append_value(r.partition);
            offset.append_value(r.offset);
        },
    );
    let symbols: Vec<&str> = OrderStatus::ALL.iter().map(|t| t.as_str()).collect();
    let out = OrderBatch {
        order_id: order_id.finish(),
        customer_id: customer_id.finish(),
        event_time: event_time.finish(),
        status: status.finish(),
        total: total.finish(),
        discount_amount: discount_amount.finish(),
        item_count: item_count.finish(),
        primary_category: primary_category.finish(),
        payment_method: payment_method.finish(),
        partition: partition.finish(),
        offset: offset.finish(),
        batch: RecordBatch::new_empty(OrderBatch::schema()),
    };
    // ListBuilder names its item field "item" and makes it nullable, as the schema says.
    let columns: Vec<ArrayRef> = vec![
        Arc::new(out.order_id.clone()),
        Arc::new(out.customer_id.clone()),
        Arc::new(out.event_time.clone()),
        symbol_column(&out.status, &symbols)?,
        Arc::new(out.total.clone()),
        Arc::new(currency.finish()),
        Arc::new(out.discount_amount.clone()),
        Arc::new(out.item_count.clone()),
        Arc::new(categories.finish()),
        Arc::new(out.payment_method.clone()),
        Arc::new(out.partition.clone()),
        Arc::new(out.offset.clone()),
    ];
    let batch = RecordBatch::try_new(OrderBatch::schema(), columns)?;
    Ok(DecodedBatch { batch: OrderBatch { batch, ..out }, rejected })
}
