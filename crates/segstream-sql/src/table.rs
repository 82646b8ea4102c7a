//! The feature table: one row per customer, one column per feature, the same
//! schema whether the values come from live state or from the batch query.
//! Window columns follow the configured windows (`orders_30d`, ...).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, ListBuilder, RecordBatch, StringBuilder,
    TimestampMillisecondBuilder, UInt32Builder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use segstream_config::FeaturesConfig;
use segstream_events::EventTime;
use segstream_features::{DAYPARTS, Features};

use crate::SqlError;

type Get<T> = Box<dyn Fn(&Features) -> T + Send + Sync>;

/// How a feature is read out of [`Features`].
enum Value {
    Count(Get<u32>),
    Number(Get<Option<f64>>),
    Text(Get<Option<String>>),
    Flag(Get<bool>),
    Time(Get<Option<EventTime>>),
}

/// Name of the optional column with the customer's lifecycle stage.
pub const LIFECYCLE_COLUMN: &str = "lifecycle";
/// Name of the optional column with the customer's RFM segment.
pub const RFM_COLUMN: &str = "rfm";
/// Name of the optional column with the customer's behaviour segments (a list).
pub const BEHAVIOUR_COLUMN: &str = "behaviour";
/// Name of the optional column with the customer's user-defined segments (a list).
pub const CUSTOM_COLUMN: &str = "custom";
/// Name of the optional column with the customer's cluster segment
/// (`cluster_<id>`, from the trained model in force).
pub const CLUSTER_COLUMN: &str = "cluster_segment";
/// The optional columns of the trained model's scores: probability the
/// customer is alive, expected orders in the model's horizon, lifetime value.
pub const SCORE_COLUMNS: [&str; 3] = ["p_alive", "expected_orders", "clv"];

/// A numeric feature column read straight from [`Features`]: what the
/// trained model's cluster features name.
pub struct NumericColumn(Get<Option<f64>>);

impl NumericColumn {
    /// The numeric column `name` of the feature table for `config` (counts
    /// and numbers), or `None` when there is no such numeric column.
    pub fn named(config: &FeaturesConfig, name: &str) -> Option<Self> {
        columns(config).into_iter().find(|(n, _)| n == name).and_then(|(_, value)| match value {
            Value::Count(get) => Some(Self(Box::new(move |f| Some(f64::from(get(f)))))),
            Value::Number(get) => Some(Self(get)),
            Value::Text(_) | Value::Flag(_) | Value::Time(_) => None,
        })
    }

    /// The column's value for these features.
    pub fn read(&self, features: &Features) -> Option<f64> {
        (self.0)(features)
    }
}

impl std::fmt::Debug for NumericColumn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NumericColumn")
    }
}

/// Every feature column for `config`, in table order.
fn columns(config: &FeaturesConfig) -> Vec<(String, Value)> {
    use Value::{Count, Flag, Number, Text, Time};
    let mut c: Vec<(String, Value)> = vec![("as_of".into(), Time(Box::new(|f| f.as_of)))];
    for (i, days) in config.order_windows_days.iter().enumerate() {
        let w = move |f: &Features| f.order_windows.get(i).cloned().unwrap_or_default();
        c.push((format!("orders_{days}d"), Count(Box::new(move |f| w(f).orders))));
        c.push((format!("revenue_{days}d"), Number(Box::new(move |f| Some(w(f).revenue)))));
    }
    c.extend([
        ("lifetime_orders".into(), Count(Box::new(|f| f.lifetime_orders))),
        ("avg_order_value".into(), Number(Box::new(|f| f.avg_order_value))),
        ("last_order".into(), Time(Box::new(|f| f.last_order))),
        ("days_since_last_order".into(), Number(Box::new(|f| f.days_since_last_order))),
        ("first_order".into(), Time(Box::new(|f| f.first_order))),
        ("tenure_days".into(), Number(Box::new(|f| f.tenure_days))),
    ]);
    for (i, days) in config.activity_windows_days.iter().enumerate() {
        let w = move |f: &Features| f.activity_windows.get(i).cloned().unwrap_or_default();
        c.push((format!("sessions_{days}d"), Count(Box::new(move |f| w(f).sessions))));
        c.push((format!("page_views_{days}d"), Count(Box::new(move |f| w(f).page_views))));
        c.push((format!("product_views_{days}d"), Count(Box::new(move |f| w(f).product_views))));
        c.push((format!("searches_{days}d"), Count(Box::new(move |f| w(f).searches))));
        c.push((format!("add_to_cart_{days}d"), Count(Box::new(move |f| w(f).add_to_cart))));
    }
    c.extend([
        ("interpurchase_mean_days".into(), Number(Box::new(|f| f.interpurchase_mean_days))),
        ("interpurchase_last_gap_days".into(), Number(Box::new(|f| f.interpurchase_last_gap_days))),
        ("discount_share".into(), Number(Box::new(|f| f.discount_share))),
        ("avg_discount".into(), Number(Box::new(|f| f.avg_discount))),
        ("top_category".into(), Text(Box::new(|f| f.top_category.as_deref().map(str::to_owned)))),
        ("top_category_share".into(), Number(Box::new(|f| f.top_category_share))),
        ("categories_bought".into(), Count(Box::new(|f| f.categories_bought))),
        ("preferred_payment".into(), Text(Box::new(|f| f.preferred_payment.as_deref().map(str::to_owned)))),
        ("preferred_device".into(), Text(Box::new(|f| f.preferred_device.map(str::to_owned)))),
    ]);
    for (i, part) in DAYPARTS.iter().enumerate() {
        c.push((format!("{part}_share"), Number(Box::new(move |f| f.daypart_shares.map(|s| s[i])))));
    }
    c.extend([
        ("weekend_share".into(), Number(Box::new(|f| f.weekend_share))),
        ("cart_value".into(), Number(Box::new(|f| Some(f.cart_value)))),
        ("last_cart_add".into(), Time(Box::new(|f| f.last_cart_add))),
        ("cart_abandoned".into(), Flag(Box::new(|f| f.cart_abandoned))),
        ("abandoned_cart_value".into(), Number(Box::new(|f| Some(f.abandoned_cart_value)))),
        ("last_seen".into(), Time(Box::new(|f| f.last_seen))),
    ]);
    c
}

fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// Schema of the feature table for `config`; `with_segments` adds the
/// columns of segments the live worker knows and the batch query does not:
/// the lifecycle stage, the RFM segment, the lists of behaviour and
/// user-defined segments, the cluster and the model's scores.
pub fn schema(config: &FeaturesConfig, with_segments: bool) -> SchemaRef {
    let mut fields = vec![Field::new("customer_id", DataType::Utf8, false)];
    fields.extend(columns(config).iter().map(|(name, value)| match value {
        Value::Count(_) => Field::new(name, DataType::UInt32, false),
        Value::Number(_) => Field::new(name, DataType::Float64, true),
        Value::Text(_) => Field::new(name, DataType::Utf8, true),
        Value::Flag(_) => Field::new(name, DataType::Boolean, false),
        Value::Time(_) => Field::new(name, time_type(), true),
    }));
    if with_segments {
        fields.push(Field::new(LIFECYCLE_COLUMN, DataType::Utf8, true));
        fields.push(Field::new(RFM_COLUMN, DataType::Utf8, true));
        for name in [BEHAVIOUR_COLUMN, CUSTOM_COLUMN] {
            let item = Field::new("item", DataType::Utf8, true);
            fields.push(Field::new(name, DataType::List(Arc::new(item)), false));
        }
        fields.push(Field::new(CLUSTER_COLUMN, DataType::Utf8, true));
        fields.extend(SCORE_COLUMNS.map(|name| Field::new(name, DataType::Float64, true)));
    }
    Arc::new(Schema::new(fields))
}

/// One customer's row: id, features and, from a live worker, the segments.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    /// The customer.
    pub customer_id: &'a str,
    /// Their feature values.
    pub features: &'a Features,
    /// Their segments, when known.
    pub segments: Option<&'a RowSegments>,
}

/// The segments of a row: what the live worker knows beyond the features.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowSegments {
    /// Lifecycle stage.
    pub lifecycle: Option<String>,
    /// RFM segment.
    pub rfm: Option<String>,
    /// Behaviour segments.
    pub behaviour: Vec<String>,
    /// User-defined segments.
    pub custom: Vec<String>,
    /// Cluster segment.
    pub cluster: Option<String>,
    /// The model's scores, [`SCORE_COLUMNS`] order.
    pub scores: [Option<f64>; 3],
}

/// Builds the feature table from rows. The segment columns are present when
/// `with_segments` is set (rows without segments give nulls and an empty list).
pub fn build(
    rows: &[Row<'_>],
    config: &FeaturesConfig,
    with_segments: bool,
) -> Result<RecordBatch, SqlError> {
    let mut ids = StringBuilder::new();
    for r in rows {
        ids.append_value(r.customer_id);
    }
    let mut out: Vec<ArrayRef> = vec![Arc::new(ids.finish())];
    for (_, value) in columns(config) {
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
            Value::Text(get) => {
                let mut b = StringBuilder::new();
                rows.iter().for_each(|r| b.append_option(get(r.features)));
                Arc::new(b.finish())
            }
            Value::Flag(get) => {
                let mut b = BooleanBuilder::with_capacity(rows.len());
                rows.iter().for_each(|r| b.append_value(get(r.features)));
                Arc::new(b.finish())
            }
            Value::Time(get) => {
                let mut b = TimestampMillisecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
                rows.iter().for_each(|r| b.append_option(get(r.features).map(EventTime::millis)));
                Arc::new(b.finish())
            }
        };
        out.push(column);
    }
    if with_segments {
        for get in [|s: &RowSegments| s.lifecycle.clone(), |s: &RowSegments| s.rfm.clone()] {
            let mut b = StringBuilder::new();
            rows.iter().for_each(|r| b.append_option(r.segments.and_then(get)));
            out.push(Arc::new(b.finish()));
        }
        let lists: [fn(&RowSegments) -> &[String]; 2] = [|s| &s.behaviour, |s| &s.custom];
        for get in lists {
            let mut b = ListBuilder::new(StringBuilder::new());
            for r in rows {
                for name in r.segments.map(get).unwrap_or_default() {
                    b.values().append_value(name);
                }
                b.append(true);
            }
            out.push(Arc::new(b.finish()));
        }
        let mut b = StringBuilder::new();
        rows.iter().for_each(|r| b.append_option(r.segments.and_then(|s| s.cluster.as_deref())));
        out.push(Arc::new(b.finish()));
        for i in 0..SCORE_COLUMNS.len() {
            let mut b = Float64Builder::with_capacity(rows.len());
            rows.iter()
                .for_each(|r| b.append_option(r.segments.and_then(|s| s.scores.get(i).copied().flatten())));
            out.push(Arc::new(b.finish()));
        }
    }
    Ok(RecordBatch::try_new(schema(config, with_segments), out)?)
}

/// Casts a query result with the feature columns (by name, any numeric,
/// boolean or time type) into the feature table schema.
pub fn conform(batch: &RecordBatch, config: &FeaturesConfig) -> Result<RecordBatch, SqlError> {
    let target = schema(config, false);
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
