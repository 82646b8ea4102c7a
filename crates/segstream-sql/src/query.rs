//! Ad-hoc SQL over the feature table and the event tables.
//!
//! Tables a query can read: `features` (one row per customer, see
//! [`crate::table`]), and, when events are at hand (history files),
//! `clicks` and `orders` with the decoded batch schemas.
//!
//! Queries are read-only by construction: DDL (`CREATE EXTERNAL TABLE`),
//! DML (`INSERT`, `COPY ... TO`) and statements (`SET`) are refused when
//! planned, so no query reads or writes a file; nothing registers a
//! file-reading table function.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::json::ArrayWriter;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::datasource::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
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

/// What one query of an untrusted caller may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall time, then the query is cancelled.
    pub timeout: Duration,
    /// Memory of its operators (sorts, joins, aggregates), then it fails.
    pub memory_bytes: usize,
    /// Rows returned at most (the answer says when more were cut).
    pub max_rows: usize,
}

/// A session whose operators may use at most `memory_bytes` together.
pub fn limited_session(memory_bytes: usize) -> Result<SessionContext, SqlError> {
    let runtime = RuntimeEnvBuilder::new().with_memory_limit(memory_bytes, 1.0).build_arc()?;
    let state = SessionStateBuilder::new()
        .with_config(SessionConfig::new())
        .with_runtime_env(runtime)
        .with_default_features()
        .build();
    Ok(SessionContext::new_with_state(state))
}

/// Plans one read-only query.
async fn plan(ctx: &SessionContext, sql: &str) -> Result<DataFrame, SqlError> {
    let read_only =
        SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    Ok(ctx.sql_with_options(sql, read_only).await?)
}

/// Runs one query.
pub async fn run(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, SqlError> {
    Ok(plan(ctx, sql).await?.collect().await?)
}

/// Runs one query and prints its result in the chosen format.
pub async fn answer(ctx: &SessionContext, sql: &str, format: OutputFormat) -> Result<String, SqlError> {
    render(&run(ctx, sql).await?, format)
}

/// Runs one query within `limits` (in a session made with
/// [`limited_session`]) and prints it; a query past its time is
/// cancelled, one with more than `limits.max_rows` rows refused.
pub async fn answer_limited(
    ctx: &SessionContext,
    sql: &str,
    format: OutputFormat,
    limits: Limits,
) -> Result<String, SqlError> {
    let run = async {
        let rows = plan(ctx, sql).await?.limit(0, Some(limits.max_rows.saturating_add(1)))?;
        Ok::<_, SqlError>(rows.collect().await?)
    };
    // Dropping the query's future stops it (DataFusion's tasks abort on drop).
    let batches =
        tokio::time::timeout(limits.timeout, run).await.map_err(|_| SqlError::TimedOut(limits.timeout))??;
    if batches.iter().map(RecordBatch::num_rows).sum::<usize>() > limits.max_rows {
        return Err(SqlError::TooManyRows(limits.max_rows));
    }
    render(&batches, format)
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
