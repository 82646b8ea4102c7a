//! The feature table: one row per customer, one column per feature, the same
//! schema whether the values come from live state or from the batch query.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder, UInt32Builder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use segstream_events::EventTime;
use segstream_features::Features;

use crate::SqlError;

/// How a feature is read out of [`Features`].
#[derive(Clone, Copy)]
enum Value {
    Count(fn(&Features) -> u32),
    Number(fn(&Features) -> Option<f64>),
    Time(fn(&Features) -> Option<EventTime>),
}

/// Every feature column, in table order. Names are the `Features` fields.
const COLUMNS: &[(&str, Value)] = &[
    ("as_of", Value::Time(|f| f.as_of)),
    ("orders_30d", Value::Count(|f| f.orders_30d)),
    ("orders_90d", Value::Count(|f| f.orders_90d)),
    ("orders_365d", Value::Count(|f| f.orders_365d)),
    ("revenue_30d", Value::Number(|f| Some(f.revenue_30d))),
    ("revenue_90d", Value::Number(|f| Some(f.revenue_90d))),
    ("revenue_365d", Value::Number(|f| Some(f.revenue_365d))),
    ("lifetime_orders", Value::Count(|f| f.lifetime_orders)),
    ("avg_order_value", Value::Number(|f| f.avg_order_value)),
    ("last_order", Value::Time(|f| f.last_order)),
    ("days_since_last_order", Value::Number(|f| f.days_since_last_order)),
    ("first_order", Value::Time(|f| f.first_order)),
    ("tenure_days", Value::Number(|f| f.tenure_days)),
    ("sessions_30d", Value::Count(|f| f.sessions_30d)),
    ("page_views_30d", Value::Count(|f| f.page_views_30d)),
    ("product_views_30d", Value::Count(|f| f.product_views_30d)),
    ("searches_30d", Value::Count(|f| f.searches_30d)),
    ("add_to_cart_30d", Value::Count(|f| f.add_to_cart_30d)),
    ("interpurchase_mean_days", Value::Number(|f| f.interpurchase_mean_days)),
    ("interpurchase_last_gap_days", Value::Number(|f| f.interpurchase_last_gap_days)),
    ("discount_share_365d", Value::Number(|f| f.discount_share_365d)),
    ("avg_discount_365d", Value::Number(|f| f.avg_discount_365d)),
    ("last_seen", Value::Time(|f| f.last_seen)),
];

/// Name of the optional column with the customer's lifecycle stage.
pub const LIFECYCLE_COLUMN: &str = "lifecycle";

fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// Schema of the feature table; `with_lifecycle` adds the stage column the
/// live worker knows and the batch query does not.
pub fn schema(with_lifecycle: bool) -> SchemaRef {
    let mut fields = vec![Field::new("customer_id", DataType::Utf8, false)];
    fields.extend(COLUMNS.iter().map(|(name, value)| match value {
        Value::Count(_) => Field::new(*name, DataType::UInt32, false),
        Value::Number(_) => Field::new(*name, DataType::Float64, true),
        Value::Time(_) => Field::new(*name, time_type(), true),
    }));
    if with_lifecycle {
        fields.push(Field::new(LIFECYCLE_COLUMN, DataType::Utf8, true));
    }
    Arc::new(Schema::new(fields))
}

/// One customer's row: id, features and, from a live worker, the stage.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    /// The customer.
    pub customer_id: &'a str,
    /// Their feature values.
    pub features: &'a Features,
    /// Their lifecycle stage, when known.
    pub lifecycle: Option<&'a str>,
}

/// Builds the feature table from rows. The lifecycle column is present when
/// `with_lifecycle` is set (rows without a stage give null).
pub fn build(rows: &[Row<'_>], with_lifecycle: bool) -> Result<RecordBatch, SqlError> {
    let mut ids = StringBuilder::new();
    for r in rows {
        ids.append_value(r.customer_id);
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(ids.finish())];
    for (_, value) in COLUMNS {
        let column: ArrayRef = match value {
            Value::Count(get) => {
                let mut b = UInt32Builder::with_capacity(rows.len());
                rows.iter().for_each(|r| b.append_value(get(r.features)));
                Arc::new(b.finish())
            }
            Value::Number(get) => {
                let mut b = Float64Builder::with_capacity(rows.len());
                rows.iter().for_each(|r| b.append_option(get(r.features)));
                Arc::new(b.finish())
            }
            Value::Time(get) => {
                let mut b = TimestampMillisecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
                rows.iter().for_each(|r| b.append_option(get(r.features).map(EventTime::millis)));
                Arc::new(b.finish())
            }
        };
        columns.push(column);
    }
    if with_lifecycle {
        let mut b = StringBuilder::new();
        rows.iter().for_each(|r| b.append_option(r.lifecycle));
        columns.push(Arc::new(b.finish()));
    }
    Ok(RecordBatch::try_new(schema(with_lifecycle), columns)?)
}

/// Casts a query result with the feature columns (by name, any numeric or
/// time type) into the feature table schema.
pub fn conform(batch: &RecordBatch) -> Result<RecordBatch, SqlError> {
    let target = schema(false);
    let columns = target
        .fields()
        .iter()
        .map(|field| {
            let column = batch.column_by_name(field.name()).ok_or_else(|| SqlError::Column {
                column: field.name().clone(),
                problem: "missing".into(),
            })?;
            Ok(cast(column, field.data_type())?)
        })
        .collect::<Result<Vec<_>, SqlError>>()?;
    Ok(RecordBatch::try_new(target, columns)?)
}
