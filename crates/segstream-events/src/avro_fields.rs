//! Named, typed access to the fields of a decoded Avro record, shared by the
//! input decoders and the output readers.

use apache_avro::types::Value;

use crate::error::DecodeError;
use crate::ids::EventTime;

pub(crate) fn invalid(field: &'static str, problem: impl Into<String>) -> DecodeError {
    DecodeError::Invalid { field, problem: problem.into() }
}

fn unexpected(field: &'static str, expected: &str, found: &Value) -> DecodeError {
    invalid(field, format!("expected {expected}, found {found:?}"))
}

/// The fields of one record; each is taken out once.
pub(crate) struct Fields(Vec<(String, Value)>);

impl Fields {
    pub(crate) fn new(value: Value) -> Result<Self, DecodeError> {
        match value {
            Value::Record(fields) => Ok(Self(fields)),
            other => Err(DecodeError::Avro(format!("expected a record, found {other:?}"))),
        }
    }

    /// The field's value, with a union branch unwrapped.
    pub(crate) fn take(&mut self, name: &'static str) -> Result<Value, DecodeError> {
        let pos = self.0.iter().position(|(n, _)| n == name).ok_or_else(|| invalid(name, "missing"))?;
        Ok(match std::mem::replace(&mut self.0[pos].1, Value::Null) {
            Value::Union(_, inner) => *inner,
            other => other,
        })
    }

    pub(crate) fn string(&mut self, name: &'static str) -> Result<String, DecodeError> {
        match self.take(name)? {
            Value::String(s) => Ok(s),
            other => Err(unexpected(name, "a string", &other)),
        }
    }

    pub(crate) fn opt_string(&mut self, name: &'static str) -> Result<Option<String>, DecodeError> {
        match self.take(name)? {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            other => Err(unexpected(name, "a string or null", &other)),
        }
    }

    pub(crate) fn opt_bytes(&mut self, name: &'static str) -> Result<Option<Vec<u8>>, DecodeError> {
        match self.take(name)? {
            Value::Null => Ok(None),
            Value::Bytes(b) => Ok(Some(b)),
            other => Err(unexpected(name, "bytes or null", &other)),
        }
    }

    pub(crate) fn double(&mut self, name: &'static str) -> Result<f64, DecodeError> {
        match self.take(name)? {
            Value::Double(d) => Ok(d),
            other => Err(unexpected(name, "a double", &other)),
        }
    }

    pub(crate) fn opt_double(&mut self, name: &'static str) -> Result<Option<f64>, DecodeError> {
        match self.take(name)? {
            Value::Null => Ok(None),
            Value::Double(d) => Ok(Some(d)),
            other => Err(unexpected(name, "a double or null", &other)),
        }
    }

    pub(crate) fn int(&mut self, name: &'static str) -> Result<i32, DecodeError> {
        match self.take(name)? {
            Value::Int(i) => Ok(i),
            other => Err(unexpected(name, "an int", &other)),
        }
    }

    pub(crate) fn long(&mut self, name: &'static str) -> Result<i64, DecodeError> {
        match self.take(name)? {
            Value::Long(l) => Ok(l),
            other => Err(unexpected(name, "a long", &other)),
        }
    }

    pub(crate) fn time(&mut self, name: &'static str) -> Result<EventTime, DecodeError> {
        match self.take(name)? {
            Value::TimestampMillis(ms) | Value::Long(ms) => Ok(EventTime::from_millis(ms)),
            other => Err(unexpected(name, "timestamp-millis", &other)),
        }
    }

    pub(crate) fn symbol<T>(
        &mut self,
        name: &'static str,
        parse: fn(&str) -> Option<T>,
    ) -> Result<T, DecodeError> {
        match self.take(name)? {
            Value::Enum(_, s) | Value::String(s) => {
                parse(&s).ok_or_else(|| invalid(name, format!("unknown symbol {s:?}")))
            }
            other => Err(unexpected(name, "an enum symbol", &other)),
        }
    }

    pub(crate) fn strings(&mut self, name: &'static str) -> Result<Vec<String>, DecodeError> {
        match self.take(name)? {
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    other => Err(unexpected(name, "strings", &other)),
                })
                .collect(),
            other => Err(unexpected(name, "an array", &other)),
        }
    }
}

/// An optional string as the `["null", "string"]` union.
pub(crate) fn opt_string_value(v: &Option<String>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(s) => Value::Union(1, Box::new(Value::String(s.clone()))),
    }
}

/// Optional bytes as the `["null", "bytes"]` union.
pub(crate) fn opt_bytes_value(v: Option<&[u8]>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(b) => Value::Union(1, Box::new(Value::Bytes(b.to_vec()))),
    }
}

/// Reads one datum written with `writer`, resolved to `reader` when given.
pub(crate) fn read_datum(
    writer: &apache_avro::Schema,
    reader: Option<&apache_avro::Schema>,
    body: &mut &[u8],
) -> apache_avro::AvroResult<Value> {
    apache_avro::reader::datum::GenericDatumReader::builder(writer)
        .maybe_reader_schema(reader)
        .build()?
        .read_value(body)
}

/// Writes one datum with `schema` (validated against it).
pub(crate) fn write_datum(schema: &apache_avro::Schema, value: Value) -> apache_avro::AvroResult<Vec<u8>> {
    apache_avro::writer::datum::GenericDatumWriter::builder(schema).build()?.write_value_to_vec(value)
}
