//! Ad-hoc SQL over the feature table and the event tables.
//!
//! Tables a query can read: `features` (one row per customer, see
//! [`crate::table`]), and, when events are at hand (history files),
//! `clicks` and `orders` with the decoded batch schemas.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::json::ArrayWriter;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use segstream_events::{ClickBatch, OrderBatch};

use crate::SqlError;

/// How query results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// An aligned text table.
    Table,
    /// A JSON array of objects (nulls left out).
    Json,
}

/// Registers `batches` (all of `schema`) as table `name`.
pub fn register(
    ctx: &SessionContext,
    name: &str,
    schema: datafusion::arrow::datatypes::SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<(), SqlError> {
    let table = MemTable::try_new(schema, vec![batches])?;
    ctx.register_table(name, Arc::new(table))?;
    Ok(())
}

/// Registers decoded events as `clicks` and `orders`.
pub fn register_events(
    ctx: &SessionContext,
    clicks: &[ClickBatch],
    orders: &[OrderBatch],
) -> Result<(), SqlError> {
    let c = clicks.iter().map(|b| b.record_batch().clone()).collect();
    let o = orders.iter().map(|b| b.record_batch().clone()).collect();
    register(ctx, "clicks", ClickBatch::schema(), c)?;
    register(ctx, "orders", OrderBatch::schema(), o)
}

/// Runs one query.
pub async fn run(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, SqlError> {
    Ok(ctx.sql(sql).await?.collect().await?)
}

/// Runs one query and prints its result in the chosen format.
pub async fn answer(ctx: &SessionContext, sql: &str, format: OutputFormat) -> Result<String, SqlError> {
    render(&run(ctx, sql).await?, format)
}

/// Prints results in the chosen format.
pub fn render(batches: &[RecordBatch], format: OutputFormat) -> Result<String, SqlError> {
    match format {
        OutputFormat::Table => Ok(pretty_format_batches(batches)?.to_string()),
        OutputFormat::Json => {
            let mut writer = ArrayWriter::new(Vec::new());
            for b in batches {
                writer.write(b)?;
            }
            writer.finish()?;
            let bytes = writer.into_inner();
            // An empty result writes nothing at all; say so in JSON.
            Ok(if bytes.is_empty() { "[]".to_owned() } else { String::from_utf8_lossy(&bytes).into_owned() })
        }
    }
}
