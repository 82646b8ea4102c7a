//! History files: clicks and orders as JSON lines, CSV or Parquet, turned into
//! the payloads the worker would have read from Kafka.
//!
//! JSON lines are passed through line by line. CSV and Parquet are read with
//! DataFusion, their known columns cast to the schema's types (a numeric
//! customer id in a CSV stays a string; a Parquet timestamp of any unit
//! becomes milliseconds) and written back as JSON objects, so every format
//! goes through the one decoder and its validation.

use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::json::LineDelimitedWriter;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionConfig, SessionContext};

use segstream_events::{
    ClickBatch, DecodeError, InputRules, OrderBatch, RawRecord, decode_clicks, decode_orders, schema::Schemas,
};

use crate::SqlError;

/// Which topic a history file stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventKind {
    /// Clickstream events.
    Click,
    /// Order events.
    Order,
}

/// How a history file is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (`.jsonl`, `.ndjson`, `.json`).
    JsonLines,
    /// Comma-separated with a header row (`.csv`).
    Csv,
    /// Apache Parquet (`.parquet`).
    Parquet,
}

/// One history file and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryFile {
    /// Where it is.
    pub path: PathBuf,
    /// Clicks or orders.
    pub kind: EventKind,
    /// Its encoding.
    pub format: Format,
}

/// One event as the worker would have read it: a JSON payload, and the line
/// (or row) it came from, for error messages.
#[derive(Debug, Clone)]
pub struct Payload {
    /// 1-based line of a JSON lines file, or row of a CSV / Parquet file.
    pub line: usize,
    /// The JSON object.
    pub bytes: Vec<u8>,
}

/// Fields of each kind and the SQL type they are cast to (the schema's).
const CLICK_FIELDS: &[(&str, &str)] = &[
    ("event_id", "VARCHAR"),
    ("customer_id", "VARCHAR"),
    ("session_id", "VARCHAR"),
    ("event_type", "VARCHAR"),
    ("event_time", "BIGINT"),
    ("device", "VARCHAR"),
    ("page", "VARCHAR"),
    ("product_id", "VARCHAR"),
    ("category", "VARCHAR"),
    ("price", "DOUBLE"),
    ("search_query", "VARCHAR"),
];
const ORDER_FIELDS: &[(&str, &str)] = &[
    ("order_id", "VARCHAR"),
    ("customer_id", "VARCHAR"),
    ("event_time", "BIGINT"),
    ("status", "VARCHAR"),
    ("total", "DOUBLE"),
    ("currency", "VARCHAR"),
    ("discount_amount", "DOUBLE"),
    ("item_count", "INT"),
    ("categories", ""),
    ("payment_method", "VARCHAR"),
];

fn input_error(path: &Path, problem: impl Into<String>) -> SqlError {
    SqlError::Input { path: path.to_owned(), problem: problem.into() }
}

/// Tells one file's kind (from its name) and format (from its extension).
pub fn classify(path: &Path) -> Result<HistoryFile, SqlError> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    let kind = if name.contains("click") {
        EventKind::Click
    } else if name.contains("order") {
        EventKind::Order
    } else {
        return Err(input_error(
            path,
            "cannot tell clicks from orders: put `click` or `order` in the file name (e.g. clickstream.jsonl, orders.parquet)",
        ));
    };
    let format = match path.extension().map(|e| e.to_string_lossy().to_lowercase()).as_deref() {
        Some("jsonl" | "ndjson" | "json") => Format::JsonLines,
        Some("csv") => Format::Csv,
        Some("parquet") => Format::Parquet,
        _ => {
            return Err(input_error(
                path,
                "unknown format: use .jsonl (JSON lines), .csv (with a header row) or .parquet",
            ));
        }
    };
    Ok(HistoryFile { path: path.to_owned(), kind, format })
}

/// The history files at `path`: the file itself, or every file of a
/// directory whose extension is known, by name. A directory without any is
/// an error.
pub fn discover(path: &Path) -> Result<Vec<HistoryFile>, SqlError> {
    let io = |source| SqlError::Io { path: path.to_owned(), source };
    if !path.is_dir() {
        std::fs::metadata(path).map_err(io)?;
        return Ok(vec![classify(path)?]);
    }
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io)? {
        let p = entry.map_err(io)?.path();
        let known = p.extension().is_some_and(|e| {
            matches!(
                e.to_string_lossy().to_lowercase().as_str(),
                "jsonl" | "ndjson" | "json" | "csv" | "parquet"
            )
        });
        if p.is_file() && known {
            paths.push(p);
        }
    }
    paths.sort();
    if paths.is_empty() {
        return Err(input_error(path, "no .jsonl, .csv or .parquet files in this directory"));
    }
    paths.iter().map(|p| classify(p)).collect()
}

/// Reads every event of a file as a JSON payload, in file order.
pub async fn read_payloads(file: &HistoryFile) -> Result<Vec<Payload>, SqlError> {
    match file.format {
        Format::JsonLines => {
            let text = tokio::fs::read(&file.path)
                .await
                .map_err(|source| SqlError::Io { path: file.path.clone(), source })?;
            Ok(text
                .split(|b| *b == b'\n')
                .enumerate()
                .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
                .map(|(i, line)| Payload { line: i + 1, bytes: line.to_vec() })
                .collect())
        }
        Format::Csv | Format::Parquet => read_tabular(file).await,
    }
}

async fn read_tabular(file: &HistoryFile) -> Result<Vec<Payload>, SqlError> {
    // One partition keeps file order.
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    let path = file.path.to_string_lossy();
    match file.format {
        Format::Csv => ctx.register_csv("history", path.as_ref(), CsvReadOptions::new()).await?,
        _ => ctx.register_parquet("history", path.as_ref(), ParquetReadOptions::default()).await?,
    }
    let table = ctx.table("history").await?;
    let fields = match file.kind {
        EventKind::Click => CLICK_FIELDS,
        EventKind::Order => ORDER_FIELDS,
    };
    let schema = table.schema().as_arrow().clone();
    let select: Vec<String> = fields
        .iter()
        .filter_map(|(name, sql_type)| {
            let field = schema.field_with_name(name).ok()?;
            Some(match (field.data_type(), *sql_type) {
                (DataType::Timestamp(..), _) => {
                    format!("CAST(to_timestamp_millis(\"{name}\") AS BIGINT) AS \"{name}\"")
                }
                (_, "") => format!("\"{name}\""),
                (_, t) => format!("CAST(\"{name}\" AS {t}) AS \"{name}\""),
            })
        })
        .collect();
    if select.is_empty() {
        return Err(input_error(&file.path, "none of the schema's columns are in this file"));
    }
    let batches = ctx.sql(&format!("SELECT {} FROM history", select.join(", "))).await?.collect().await?;
    let mut writer = LineDelimitedWriter::new(Vec::new());
    for b in &batches {
        writer.write(b)?;
    }
    writer.finish()?;
    Ok(writer
        .into_inner()
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .enumerate()
        .map(|(i, line)| Payload { line: i + 1, bytes: line.to_vec() })
        .collect())
}

/// Events of history files decoded into Arrow, as the worker decodes a poll.
#[derive(Debug, Default)]
pub struct DecodedHistory {
    /// Click batches, one per file.
    pub clicks: Vec<ClickBatch>,
    /// Order batches, one per file.
    pub orders: Vec<OrderBatch>,
    /// Lines that did not decode: file, line, why.
    pub rejected: Vec<(PathBuf, usize, DecodeError)>,
}

/// Reads and decodes every file (offsets are line numbers, partition 0);
/// events breaking `rules` are rejected.
pub async fn decode_history(files: &[HistoryFile], rules: InputRules) -> Result<DecodedHistory, SqlError> {
    let mut out = DecodedHistory::default();
    let schemas = Schemas::builtin();
    for file in files {
        let payloads = read_payloads(file).await?;
        let raw = payloads.iter().map(|p| RawRecord {
            payload: Some(&p.bytes),
            partition: 0,
            offset: i64::try_from(p.line).unwrap_or(i64::MAX),
        });
        let rejected = match file.kind {
            EventKind::Click => {
                let d = decode_clicks(raw, schemas, rules)?;
                out.clicks.push(d.batch);
                d.rejected
            }
            EventKind::Order => {
                let d = decode_orders(raw, schemas, rules)?;
                out.orders.push(d.batch);
                d.rejected
            }
        };
        out.rejected.extend(
            rejected
                .into_iter()
                .map(|r| (file.path.clone(), usize::try_from(r.offset).unwrap_or(0), r.error)),
        );
    }
    Ok(out)
}
