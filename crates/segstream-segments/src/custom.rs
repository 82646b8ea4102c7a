//! User-defined segments: SQL boolean expressions over the feature table
//! (`[[custom]]` in the definitions file), compiled once with DataFusion
//! into physical expressions and evaluated vectorised over the rows a
//! micro-batch collected. There is one row per evaluation of a customer (an
//! event, or a due time a timer reached) holding the features as of then,
//! so what a segment decides does not depend on where micro-batches end.
//!
//! A segment may change with no event only where the other rules' timers
//! already look (lifecycle thresholds, the cart, RFM bounds) or where its
//! own columns say: an order, a session or a day of clicks leaving a window
//! it reads, and the days since the last or first order crossing a number
//! it is compared with. That is why those two columns may only be compared with numbers.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::{Between, BinaryExpr, Expr};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use segstream_config::FeaturesConfig;
use segstream_events::EventTime;
use segstream_features::{CustomerState, DAYPARTS, Features};
use segstream_sql::table;
use serde::Deserialize;

/// One `[[custom]]` entry as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomDefinition {
    /// Segment name: lower-case letters, digits and `_`.
    pub name: String,
    /// SQL boolean expression over the feature table's columns.
    pub sql: String,
}

/// A column that changes with time alone, as days since an order.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Clock {
    /// `days_since_last_order`.
    SinceLastOrder,
    /// `tenure_days` (since the first order).
    Tenure,
}

impl Clock {
    fn of(column: &str) -> Option<Self> {
        match column {
            "days_since_last_order" => Some(Self::SinceLastOrder),
            "tenure_days" => Some(Self::Tenure),
            _ => None,
        }
    }
}

/// One compiled user-defined segment.
#[derive(Clone, Debug)]
pub struct CustomSegment {
    /// Its name (interned: change records and metrics carry it).
    pub name: &'static str,
    /// The expression as written.
    pub sql: String,
    expr: Arc<dyn PhysicalExpr>,
    /// The columns it reads, in table order.
    columns: Vec<String>,
    /// Numbers the clock columns are compared with, in days.
    crossings: Vec<(Clock, f64)>,
    /// Order windows (days) whose exits change what it reads.
    order_windows: Vec<u32>,
    /// Activity windows (days) whose session exits change what it reads.
    session_windows: Vec<u32>,
    /// Activity windows (days) whose days of clicks leaving change what it reads.
    click_windows: Vec<u32>,
}

/// Every user-defined segment of a definitions file, compiled.
#[derive(Clone, Debug, Default)]
pub struct CustomRules {
    segments: Vec<CustomSegment>,
}

impl PartialEq for CustomRules {
    fn eq(&self, other: &Self) -> bool {
        let key = |r: &Self| r.segments.iter().map(|s| (s.name, s.sql.clone())).collect::<Vec<_>>();
        key(self) == key(other)
    }
}

/// What one evaluation of a batch of rows found.
#[derive(Debug)]
pub struct Evaluation {
    /// Per segment (in definition order), per row: whether it holds (a
    /// null result does not).
    pub holds: Vec<Vec<bool>>,
    /// Rows whose expression failed (an arithmetic error), per segment:
    /// they count as not holding.
    pub failures: Vec<(&'static str, String)>,
}

/// Why a column cannot be used in a segment, if it cannot.
fn unusable(column: &str) -> Option<&'static str> {
    match column {
        "as_of" => {
            Some("is the evaluation time itself; compare days_since_last_order or tenure_days instead")
        }
        table::CUSTOM_COLUMN => {
            Some("lists the user-defined segments themselves; a segment cannot read them")
        }
        c if table::SCORE_COLUMNS.contains(&c) => Some(
            "is a model score that moves with every passing day, so the worker cannot know when \
             such a segment changes with no event; use the cluster segments and micro-segments, or \
             compare days_since_last_order",
        ),
        _ => None,
    }
}

/// A number an expression compares with, in days.
fn days_of(expr: &Expr) -> Option<f64> {
    match expr {
        Expr::Literal(value, _) => match value.cast_to(&DataType::Float64).ok()? {
            ScalarValue::Float64(Some(v)) if v.is_finite() => Some(v),
            _ => None,
        },
        Expr::Cast(c) => days_of(&c.expr),
        Expr::TryCast(c) => days_of(&c.expr),
        Expr::Negative(e) => days_of(e).map(|v| -v),
        _ => None,
    }
}

/// The clock a column expression reads, if it is one.
fn clock_of(expr: &Expr) -> Option<Clock> {
    match expr {
        Expr::Column(c) => Clock::of(&c.name),
        Expr::Cast(c) => clock_of(&c.expr),
        Expr::TryCast(c) => clock_of(&c.expr),
        _ => None,
    }
}

/// The comparisons of clock columns with numbers in `expr`; any other use
/// of a clock column is refused.
fn crossings(expr: &Expr) -> Result<Vec<(Clock, f64)>, String> {
    let mut found = Vec::new();
    let mut refused = None;
    let visit = expr.apply(|node| {
        match node {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) if op.swap().is_some() => {
                let pair = clock_of(left).zip(days_of(right)).or_else(|| clock_of(right).zip(days_of(left)));
                if let Some(crossing) = pair {
                    found.push(crossing);
                    return Ok(TreeNodeRecursion::Jump);
                }
            }
            Expr::Between(Between { expr, low, high, .. }) => {
                if let (Some(clock), Some(low), Some(high)) = (clock_of(expr), days_of(low), days_of(high)) {
                    found.extend([(clock, low), (clock, high)]);
                    return Ok(TreeNodeRecursion::Jump);
                }
            }
            Expr::Column(c) if Clock::of(&c.name).is_some() => {
                refused = Some(c.name.clone());
                return Ok(TreeNodeRecursion::Stop);
            }
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    });
    visit.map_err(|e| e.to_string())?;
    match refused {
        Some(column) => Err(format!(
            "`{column}` grows with time, so it may only be compared with a number \
             (`{column} > 30`, `{column} BETWEEN 30 AND 90`): that is how the worker knows when the \
             segment changes with no event"
        )),
        None => Ok(found),
    }
}

impl CustomSegment {
    fn compile(
        definition: &CustomDefinition,
        ctx: &SessionContext,
        schema: &DFSchema,
        features: &FeaturesConfig,
    ) -> Result<Self, String> {
        let expr = ctx.parse_sql_expr(&definition.sql, schema).map_err(|e| match e.find_root() {
            datafusion::error::DataFusionError::SchemaError(..) => format!(
                "`{}` names a column the feature table does not have (see docs/segments-and-features.md): {e}",
                definition.sql
            ),
            _ => format!("`{}` does not parse: {e}", definition.sql),
        })?;
        let mut columns: Vec<String> = expr.column_refs().into_iter().map(|c| c.name.clone()).collect();
        for column in &columns {
            if let Some(why) = unusable(column) {
                return Err(format!("`{column}` {why}"));
            }
        }
        columns.sort_by_key(|c| schema.index_of_column_by_name(None, c));
        columns.dedup();
        let crossings = crossings(&expr)?;
        let physical = ctx
            .create_physical_expr(expr, schema)
            .map_err(|e| format!("`{}` cannot be evaluated: {e}", definition.sql))?;
        let data_type = physical.data_type(schema.as_arrow()).map_err(|e| e.to_string())?;
        if data_type != DataType::Boolean {
            return Err(format!(
                "`{}` is a {data_type}, not a condition: write a comparison such as `revenue_365d > 500`",
                definition.sql
            ));
        }
        let window = |prefix: &str, c: &str| c.strip_prefix(prefix)?.strip_suffix('d')?.parse::<u32>().ok();
        let longest = features.order_windows_days.iter().copied().max();
        let mut order_windows: Vec<u32> = columns
            .iter()
            .filter_map(|c| {
                let longest_window = matches!(
                    c.as_str(),
                    "interpurchase_last_gap_days"
                        | "discount_share"
                        | "avg_discount"
                        | "top_category"
                        | "top_category_share"
                        | "categories_bought"
                        | "preferred_payment"
                );
                window("orders_", c).or_else(|| window("revenue_", c)).or(longest.filter(|_| longest_window))
            })
            .collect();
        order_windows.sort_unstable();
        order_windows.dedup();
        let session_windows = columns.iter().filter_map(|c| window("sessions_", c)).collect();
        // Click counts per window; the device and parts of the day over the longest.
        let longest_activity = features.activity_windows_days.iter().copied().max();
        let mut click_windows: Vec<u32> = columns
            .iter()
            .filter_map(|c| {
                let shares = c == "preferred_device"
                    || c == "weekend_share"
                    || DAYPARTS.iter().any(|p| c.strip_suffix("_share") == Some(*p));
                ["page_views_", "product_views_", "searches_", "add_to_cart_"]
                    .iter()
                    .find_map(|p| window(p, c))
                    .or(longest_activity.filter(|_| shares))
            })
            .collect();
        click_windows.sort_unstable();
        click_windows.dedup();
        Ok(Self {
            name: crate::names::intern(&definition.name),
            sql: definition.sql.clone(),
            expr: physical,
            columns,
            crossings,
            order_windows,
            session_windows,
            click_windows,
        })
    }

    /// The next time after `at` its value may change with no event.
    fn due_after(&self, f: &Features, state: &CustomerState, at: EventTime) -> Option<EventTime> {
        let crossings = self.crossings.iter().filter_map(|(clock, days)| {
            let from = match clock {
                Clock::SinceLastOrder => f.last_order?,
                Clock::Tenure => f.first_order?,
            };
            // `> days` holds a millisecond after `= days` does.
            let at_days = from.plus_millis((days * 86_400_000.0).ceil() as i64);
            [at_days, at_days.plus_millis(1)].into_iter().find(|t| *t > at)
        });
        let orders = self.order_windows.iter().filter_map(|d| state.next_window_exit(at, *d));
        let sessions = self.session_windows.iter().filter_map(|d| state.next_session_exit(at, *d));
        let clicks = self.click_windows.iter().filter_map(|d| state.next_activity_exit(at, *d));
        crossings.chain(orders).chain(sessions).chain(clicks).filter(|t| *t > at).min()
    }

    /// The values of the numeric and boolean columns it reads in `row`.
    fn values(&self, batch: &RecordBatch, row: usize) -> BTreeMap<String, f64> {
        let value = |column: &str| {
            let array = batch.column_by_name(column)?;
            if array.is_null(row) {
                return None;
            }
            match array.data_type() {
                DataType::Boolean => Some(if array.as_boolean().value(row) { 1.0 } else { 0.0 }),
                t if t.is_numeric() => {
                    match ScalarValue::try_from_array(array, row).ok()?.cast_to(&DataType::Float64) {
                        Ok(ScalarValue::Float64(Some(v))) => Some((v * 100.0).round() / 100.0),
                        _ => None,
                    }
                }
                _ => None,
            }
        };
        self.columns.iter().filter_map(|c| Some((c.clone(), value(c)?))).collect()
    }

    fn evaluate(&self, batch: &RecordBatch) -> datafusion::error::Result<Vec<bool>> {
        let result = self.expr.evaluate(batch)?.into_array(batch.num_rows())?;
        let holds = result.as_boolean_opt().ok_or_else(|| {
            datafusion::error::DataFusionError::Internal(format!("segment `{}` gave no booleans", self.name))
        })?;
        Ok((0..holds.len()).map(|i| holds.is_valid(i) && holds.value(i)).collect())
    }
}

impl CustomRules {
    /// Compiles the `[[custom]]` entries against the feature table of
    /// `features`; an error names the segment and what to fix.
    pub fn compile(
        definitions: &[CustomDefinition],
        features: &FeaturesConfig,
    ) -> Result<Self, (String, String)> {
        if definitions.is_empty() {
            return Ok(Self::default());
        }
        let ctx = SessionContext::new();
        let schema = DFSchema::try_from(table::schema(features, true).as_ref().clone())
            .map_err(|e| ("custom".to_owned(), e.to_string()))?;
        let mut segments: Vec<CustomSegment> = Vec::with_capacity(definitions.len());
        for d in definitions {
            let name_ok = !d.name.is_empty()
                && d.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !name_ok {
                return Err((
                    d.name.clone(),
                    "a name is lower-case letters, digits and `_` (it goes into topics and metrics)".into(),
                ));
            }
            if segments.iter().any(|s| s.name == d.name) {
                return Err((
                    d.name.clone(),
                    "defined twice: give each [[custom]] entry its own name".into(),
                ));
            }
            segments
                .push(CustomSegment::compile(d, &ctx, &schema, features).map_err(|p| (d.name.clone(), p))?);
        }
        Ok(Self { segments })
    }

    /// The segments, in definition order.
    pub fn segments(&self) -> &[CustomSegment] {
        &self.segments
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// The segment of this name, with its index.
    pub fn find(&self, name: &str) -> Option<(usize, &CustomSegment)> {
        self.segments.iter().enumerate().find(|(_, s)| s.name == name)
    }

    /// The next time after `at` some segment may change with no event.
    pub fn due_after(&self, f: &Features, state: &CustomerState, at: EventTime) -> Option<EventTime> {
        self.segments.iter().filter_map(|s| s.due_after(f, state, at)).min()
    }

    /// Every segment over every row of `batch` (the feature table with the
    /// segment columns), vectorised. A segment whose evaluation fails (an
    /// arithmetic error in some row) is evaluated row by row, so one row's
    /// failure does not depend on which rows share its batch.
    pub fn evaluate(&self, batch: &RecordBatch) -> Evaluation {
        let mut failures = Vec::new();
        let holds = self
            .segments
            .iter()
            .map(|s| match s.evaluate(batch) {
                Ok(holds) => holds,
                Err(_) => (0..batch.num_rows())
                    .map(|row| match s.evaluate(&batch.slice(row, 1)) {
                        Ok(one) => one.first().copied().unwrap_or(false),
                        Err(e) => {
                            failures.push((s.name, e.to_string()));
                            false
                        }
                    })
                    .collect(),
            })
            .collect();
        Evaluation { holds, failures }
    }

    /// The values segment `index` read in `row` of `batch`, for its change record.
    pub fn values(&self, index: usize, batch: &RecordBatch, row: usize) -> BTreeMap<String, f64> {
        self.segments.get(index).map(|s| s.values(batch, row)).unwrap_or_default()
    }
}
