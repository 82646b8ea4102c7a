//! Avro binary decoding of our own input schemas (`clickstream.avsc`,
//! `orders.avsc`) without generic values: the fields are read in schema
//! order straight off the payload, strings borrowed from it. Used when a
//! payload's writer schema is the reader schema (the built-in ids, or a
//! registry id whose schema is ours); any other writer schema goes through
//! apache_avro's schema resolution. The proptests in `fuzz.rs` hold this
//! reader to apache_avro's on random records, and tests/avro_contract.rs
//! to fastavro's writer.
//!
//! [`Writer`] is the other way, for the record written once per change
//! (`segment-changes.avsc`): the fields straight into the payload.

use std::borrow::Cow;

use crate::error::DecodeError;
use crate::ids::{CustomerId, EventTime};
use crate::model::{ClickEvent, ClickEventType, OrderEvent, OrderStatus};

/// A click as decoded: its text borrowed from the payload where it can be.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClickView<'a> {
    pub(crate) event_id: Cow<'a, str>,
    pub(crate) customer_id: Cow<'a, str>,
    pub(crate) session_id: Option<Cow<'a, str>>,
    pub(crate) event_type: ClickEventType,
    pub(crate) event_time: EventTime,
    pub(crate) device: Option<Cow<'a, str>>,
    pub(crate) page: Option<Cow<'a, str>>,
    pub(crate) product_id: Option<Cow<'a, str>>,
    pub(crate) category: Option<Cow<'a, str>>,
    pub(crate) price: Option<f64>,
    pub(crate) search_query: Option<Cow<'a, str>>,
}

/// An order as decoded: its text borrowed from the payload where it can be.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OrderView<'a> {
    pub(crate) order_id: Cow<'a, str>,
    pub(crate) customer_id: Cow<'a, str>,
    pub(crate) event_time: EventTime,
    pub(crate) status: OrderStatus,
    pub(crate) total: f64,
    pub(crate) currency: Cow<'a, str>,
    pub(crate) discount_amount: f64,
    pub(crate) item_count: i32,
    pub(crate) categories: Vec<Cow<'a, str>>,
    pub(crate) payment_method: Option<Cow<'a, str>>,
}

/// Reads the Avro binary encoding of one record's fields in order.
struct Reader<'a> {
    rest: &'a [u8],
}

fn short(field: &'static str) -> DecodeError {
    DecodeError::Avro(format!("field {field}: the record ends early"))
}

impl<'a> Reader<'a> {
    /// A zig-zag varint of at most 64 bits.
    fn long(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        let mut value: u64 = 0;
        for (i, &byte) in self.rest.iter().enumerate().take(10) {
            // The tenth byte holds the 64th bit only.
            if i == 9 && byte > 1 {
                break;
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                let signed = (value >> 1) as i64 ^ -((value & 1) as i64);
                return Ok(signed);
            }
        }
        if self.rest.len() < 10 && self.rest.iter().all(|b| b & 0x80 != 0) {
            return Err(short(field));
        }
        Err(DecodeError::Avro(format!("field {field}: a varint longer than 64 bits")))
    }

    fn int(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        let value = self.long(field)?;
        i32::try_from(value).map_err(|_| DecodeError::Avro(format!("field {field}: {value} is not an int")))
    }

    fn double(&mut self, field: &'static str) -> Result<f64, DecodeError> {
        let (bytes, rest) = self.rest.split_first_chunk::<8>().ok_or_else(|| short(field))?;
        self.rest = rest;
        Ok(f64::from_le_bytes(*bytes))
    }

    /// A length the rest of the payload holds.
    fn length(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let length = self.long(field)?;
        let length = usize::try_from(length)
            .map_err(|_| DecodeError::Avro(format!("field {field}: negative length {length}")))?;
        if length > self.rest.len() {
            return Err(short(field));
        }
        Ok(length)
    }

    fn str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let length = self.length(field)?;
        let (bytes, rest) = self.rest.split_at(length);
        self.rest = rest;
        std::str::from_utf8(bytes)
            .map_err(|e| DecodeError::Avro(format!("field {field}: invalid UTF-8 ({e})")))
    }

    /// The branch of a union of `branches`.
    fn branch(&mut self, field: &'static str, branches: i64) -> Result<bool, DecodeError> {
        match self.long(field)? {
            0 => Ok(false),
            b if (1..branches).contains(&b) => Ok(true),
            b => Err(DecodeError::Avro(format!("field {field}: union branch {b} of {branches}"))),
        }
    }

    /// `["null", "string"]`.
    fn opt_str(&mut self, field: &'static str) -> Result<Option<Cow<'a, str>>, DecodeError> {
        Ok(if self.branch(field, 2)? { Some(Cow::Borrowed(self.str(field)?)) } else { None })
    }

    /// `["null", "double"]`.
    fn opt_double(&mut self, field: &'static str) -> Result<Option<f64>, DecodeError> {
        Ok(if self.branch(field, 2)? { Some(self.double(field)?) } else { None })
    }

    /// An enum symbol of `all`.
    fn symbol<T: Copy>(&mut self, field: &'static str, all: &[T]) -> Result<T, DecodeError> {
        let index = self.long(field)?;
        usize::try_from(index)
            .ok()
            .and_then(|i| all.get(i).copied())
            .ok_or_else(|| DecodeError::Avro(format!("field {field}: symbol index {index} of {}", all.len())))
    }

    /// An array of strings: blocks of items, a negative count followed by
    /// the block's size in bytes, a zero count at the end.
    fn strings(&mut self, field: &'static str) -> Result<Vec<Cow<'a, str>>, DecodeError> {
        let mut items = Vec::new();
        loop {
            let count = self.long(field)?;
            if count == 0 {
                return Ok(items);
            }
            if count < 0 {
                self.long(field)?;
            }
            for _ in 0..count.unsigned_abs() {
                items.push(Cow::Borrowed(self.str(field)?));
            }
        }
    }

    fn end(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            return Ok(());
        }
        Err(DecodeError::Avro(format!("{} trailing bytes after the record", self.rest.len())))
    }
}

/// A click body (after the Confluent header) written with `clickstream.avsc`.
pub(crate) fn read_click(body: &[u8]) -> Result<ClickView<'_>, DecodeError> {
    let mut r = Reader { rest: body };
    let click = ClickView {
        event_id: Cow::Borrowed(r.str("event_id")?),
        customer_id: Cow::Borrowed(r.str("customer_id")?),
        session_id: r.opt_str("session_id")?,
        event_type: r.symbol("event_type", &ClickEventType::ALL)?,
        event_time: EventTime::from_millis(r.long("event_time")?),
        device: r.opt_str("device")?,
        page: r.opt_str("page")?,
        product_id: r.opt_str("product_id")?,
        category: r.opt_str("category")?,
        price: r.opt_double("price")?,
        search_query: r.opt_str("search_query")?,
    };
    r.end()?;
    Ok(click)
}

/// An order body (after the Confluent header) written with `orders.avsc`.
pub(crate) fn read_order(body: &[u8]) -> Result<OrderView<'_>, DecodeError> {
    let mut r = Reader { rest: body };
    let order = OrderView {
        order_id: Cow::Borrowed(r.str("order_id")?),
        customer_id: Cow::Borrowed(r.str("customer_id")?),
        event_time: EventTime::from_millis(r.long("event_time")?),
        status: r.symbol("status", &OrderStatus::ALL)?,
        total: r.double("total")?,
        currency: Cow::Borrowed(r.str("currency")?),
        discount_amount: r.double("discount_amount")?,
        item_count: r.int("item_count")?,
        categories: r.strings("categories")?,
        payment_method: r.opt_str("payment_method")?,
    };
    r.end()?;
    Ok(order)
}

fn owned(s: Cow<'_, str>) -> String {
    s.into_owned()
}

impl ClickView<'_> {
    /// The click with its own copies of the text.
    pub(crate) fn into_owned(self) -> ClickEvent {
        ClickEvent {
            event_id: owned(self.event_id),
            customer_id: CustomerId::new(&self.customer_id),
            session_id: self.session_id.map(owned),
            event_type: self.event_type,
            event_time: self.event_time,
            device: self.device.map(owned),
            page: self.page.map(owned),
            product_id: self.product_id.map(owned),
            category: self.category.map(owned),
            price: self.price,
            search_query: self.search_query.map(owned),
        }
    }
}

impl From<ClickEvent> for ClickView<'static> {
    fn from(e: ClickEvent) -> Self {
        Self {
            event_id: Cow::Owned(e.event_id),
            customer_id: Cow::Owned(e.customer_id.as_str().to_owned()),
            session_id: e.session_id.map(Cow::Owned),
            event_type: e.event_type,
            event_time: e.event_time,
            device: e.device.map(Cow::Owned),
            page: e.page.map(Cow::Owned),
            product_id: e.product_id.map(Cow::Owned),
            category: e.category.map(Cow::Owned),
            price: e.price,
            search_query: e.search_query.map(Cow::Owned),
        }
    }
}

impl OrderView<'_> {
    /// The order with its own copies of the text.
    pub(crate) fn into_owned(self) -> OrderEvent {
        OrderEvent {
            order_id: owned(self.order_id),
            customer_id: CustomerId::new(&self.customer_id),
            event_time: self.event_time,
            status: self.status,
            total: self.total,
            currency: owned(self.currency),
            discount_amount: self.discount_amount,
            item_count: self.item_count,
            categories: self.categories.into_iter().map(owned).collect(),
            payment_method: self.payment_method.map(owned),
        }
    }
}

impl From<OrderEvent> for OrderView<'static> {
    fn from(e: OrderEvent) -> Self {
        Self {
            order_id: Cow::Owned(e.order_id),
            customer_id: Cow::Owned(e.customer_id.as_str().to_owned()),
            event_time: e.event_time,
            status: e.status,
            total: e.total,
            currency: Cow::Owned(e.currency),
            discount_amount: e.discount_amount,
            item_count: e.item_count,
            categories: e.categories.into_iter().map(Cow::Owned).collect(),
            payment_method: e.payment_method.map(Cow::Owned),
        }
    }
}

/// Avro binary writing in schema order, into a Confluent-framed payload.
pub(crate) struct Writer(Vec<u8>);

impl Writer {
    /// A payload framed with `schema_id`, about `capacity` bytes long.
    pub(crate) fn framed(schema_id: u32, capacity: usize) -> Self {
        let mut out = Vec::with_capacity(crate::wire::HEADER_LEN + capacity);
        out.push(crate::wire::MAGIC);
        out.extend_from_slice(&schema_id.to_be_bytes());
        Self(out)
    }

    /// A zig-zag varint (`long`, `int`, enum indexes, lengths, counts).
    pub(crate) fn long(&mut self, value: i64) {
        let mut n = ((value << 1) ^ (value >> 63)).cast_unsigned();
        while n >= 0x80 {
            // The low seven bits, with the continuation bit.
            self.0.push((n & 0x7f) as u8 | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
    }

    /// A `string`: its length, then its UTF-8 bytes.
    pub(crate) fn str(&mut self, value: &str) {
        self.long(i64::try_from(value.len()).unwrap_or(i64::MAX));
        self.0.extend_from_slice(value.as_bytes());
    }

    /// A `["null", "string"]` union.
    pub(crate) fn opt_str(&mut self, value: Option<&str>) {
        match value {
            None => self.long(0),
            Some(s) => {
                self.long(1);
                self.str(s);
            }
        }
    }

    /// A `{"type": "map", "values": "double"}`: one block, then the end.
    pub(crate) fn double_map<'k>(&mut self, entries: impl ExactSizeIterator<Item = (&'k str, f64)>) {
        if entries.len() > 0 {
            self.long(i64::try_from(entries.len()).unwrap_or(i64::MAX));
            for (key, value) in entries {
                self.str(key);
                self.0.extend_from_slice(&value.to_le_bytes());
            }
        }
        self.long(0);
    }

    /// The framed payload.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}
