//! RFM: recency, frequency and monetary scores 1–5 and the named table that
//! puts every buyer in exactly one RFM segment.

use std::collections::BTreeMap;

use segstream_events::EventTime;
use segstream_features::{CustomerState, Features};
use serde::{Deserialize, Serialize};

use crate::definitions::RfmDefinition;
use crate::names::intern;

/// Where score boundaries come from.
#[derive(Clone, Debug, PartialEq)]
pub enum BoundarySource {
    /// The definitions file.
    Definitions,
    /// A trained model's population quintiles.
    Model {
        /// The model's version.
        version: String,
    },
}

/// The boundaries between scores: the definitions' until a model publishes
/// population quintiles.
#[derive(Clone, Debug, PartialEq)]
pub struct RfmBoundaries {
    /// Upper bounds of days since the last order for R = 5, 4, 3, 2 (ascending).
    pub recency_max_days: [f64; 4],
    /// Lower bounds of net orders in the window for F = 2, 3, 4, 5 (ascending).
    pub frequency_min: [f64; 4],
    /// Lower bounds of net revenue in the window for M = 2, 3, 4, 5 (ascending).
    pub monetary_min: [f64; 4],
    /// Where they come from.
    pub source: BoundarySource,
}

impl RfmBoundaries {
    /// The definitions' boundaries, checked.
    pub fn from_definition(d: &RfmDefinition) -> Result<Self, String> {
        Self::checked(d.recency_max_days, d.frequency_min, d.monetary_min, BoundarySource::Definitions)
    }

    /// A model's boundaries (population quintiles), checked like the
    /// definitions' ones.
    pub fn from_model(
        version: &str,
        recency_max_days: [f64; 4],
        frequency_min: [f64; 4],
        monetary_min: [f64; 4],
    ) -> Result<Self, String> {
        let source = BoundarySource::Model { version: version.to_owned() };
        Self::checked(recency_max_days, frequency_min, monetary_min, source)
    }

    fn checked(
        recency_max_days: [f64; 4],
        frequency_min: [f64; 4],
        monetary_min: [f64; 4],
        source: BoundarySource,
    ) -> Result<Self, String> {
        for (name, bounds) in [
            ("recency_max_days", recency_max_days),
            ("frequency_min", frequency_min),
            ("monetary_min", monetary_min),
        ] {
            if bounds.iter().any(|b| !b.is_finite() || *b < 0.0) {
                return Err(format!("{name} = {bounds:?}: every bound must be a finite number, 0 or more"));
            }
            if bounds.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!(
                    "{name} = {bounds:?}: the bounds must rise strictly, e.g. [30, 60, 90, 180]"
                ));
            }
        }
        Ok(Self { recency_max_days, frequency_min, monetary_min, source })
    }
}

/// A buyer's three scores, 1 (worst) to 5 (best).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RfmScores {
    /// Recency.
    pub r: u8,
    /// Frequency.
    pub f: u8,
    /// Monetary value.
    pub m: u8,
}

/// A named row of the table: inclusive (low, high) per score.
#[derive(Clone, Debug, PartialEq)]
struct Row {
    name: &'static str,
    ranges: [[u8; 2]; 3],
}

impl Row {
    fn holds(&self, s: RfmScores) -> bool {
        [s.r, s.f, s.m].iter().zip(self.ranges).all(|(v, [lo, hi])| (lo..=hi).contains(v))
    }
}

/// The RFM rules in force: window, boundaries and table.
#[derive(Clone, Debug, PartialEq)]
pub struct RfmRules {
    window_days: u32,
    boundaries: RfmBoundaries,
    /// The definitions file's boundaries, in force when no model gives any.
    defined: RfmBoundaries,
    table: Vec<Row>,
    version: i32,
    min_dwell_days: f64,
}

/// Every cell of the score cube.
fn cells() -> impl Iterator<Item = RfmScores> {
    (1..=5).flat_map(|r| (1..=5).flat_map(move |f| (1..=5).map(move |m| RfmScores { r, f, m })))
}

impl RfmRules {
    /// Rules from the `[rfm]` section. An error names the row (or
    /// `rfm.table`) and the problem.
    pub(crate) fn new(
        d: &RfmDefinition,
        boundaries: RfmBoundaries,
        version: i32,
    ) -> Result<Self, (String, String)> {
        if !(d.min_dwell_days.is_finite() && d.min_dwell_days >= 0.0) {
            return Err((
                "rfm".into(),
                format!("min_dwell_days = {}: use 0 (none) or more days", d.min_dwell_days),
            ));
        }
        let mut table: Vec<Row> = Vec::with_capacity(d.table.len());
        for row in &d.table {
            let err = |problem: String| (row.name.clone(), problem);
            let valid_name = !row.name.is_empty()
                && row.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !valid_name {
                return Err(err(
                    "a segment name is lower-case letters, digits and _ (it is a metric label)".into()
                ));
            }
            if table.iter().any(|t| t.name == row.name) {
                return Err(err("named twice in rfm.table: give each row its own name".into()));
            }
            for (score, [lo, hi]) in [("r", row.r), ("f", row.f), ("m", row.m)] {
                if !(1..=5).contains(&lo) || !(1..=5).contains(&hi) || lo > hi {
                    return Err(err(format!("{score} = [{lo}, {hi}]: a range is [low, high] within 1..5")));
                }
            }
            table.push(Row { name: intern(&row.name), ranges: [row.r, row.f, row.m] });
        }
        let rules = Self {
            window_days: d.window_days,
            defined: boundaries.clone(),
            boundaries,
            table,
            version,
            min_dwell_days: d.min_dwell_days,
        };
        let uncovered: Vec<RfmScores> =
            cells().filter(|c| !rules.table.iter().any(|r| r.holds(*c))).collect();
        if let Some(first) = uncovered.first() {
            return Err((
                "rfm.table".into(),
                format!(
                    "R{} F{} M{} and {} more cells match no row: every buyer needs a segment, add a last row with r = [1, 5], f = [1, 5], m = [1, 5]",
                    first.r,
                    first.f,
                    first.m,
                    uncovered.len() - 1
                ),
            ));
        }
        for row in &rules.table {
            if !cells().any(|c| rules.cell(c).name == row.name) {
                return Err((
                    row.name.to_owned(),
                    "never reached: every cell it holds is taken by a row above it; move it up or narrow that row"
                        .into(),
                ));
            }
        }
        Ok(rules)
    }

    /// The same table and window with other boundaries (a model's).
    pub fn with_boundaries(&self, boundaries: RfmBoundaries) -> Self {
        Self { boundaries, ..self.clone() }
    }

    /// The same rules with the definitions file's boundaries.
    pub fn with_defined_boundaries(&self) -> Self {
        self.with_boundaries(self.defined.clone())
    }

    /// Window of the frequency and monetary scores, days.
    pub fn window_days(&self) -> u32 {
        self.window_days
    }

    /// The boundaries in force.
    pub fn boundaries(&self) -> &RfmBoundaries {
        &self.boundaries
    }

    /// The segment names, in table order.
    pub fn segments(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.table.iter().map(|r| r.name)
    }

    fn cell(&self, s: RfmScores) -> &Row {
        // `new` checked that every cell has a row.
        self.table.iter().find(|r| r.holds(s)).unwrap_or_else(|| unreachable!("rfm cell {s:?} has no row"))
    }

    /// The segment of a cell.
    pub fn segment(&self, s: RfmScores) -> &'static str {
        self.cell(s).name
    }

    /// Net orders and revenue in the scores' window.
    fn window(&self, f: &Features) -> (u32, f64) {
        let w = f.order_windows.iter().find(|w| w.days == self.window_days);
        w.map_or((0, 0.0), |w| (w.orders, w.revenue))
    }

    /// The scores of a customer with these features; `None` for a customer
    /// with no net order (no RFM segment).
    pub fn scores(&self, f: &Features) -> Option<RfmScores> {
        if f.lifetime_orders == 0 {
            return None;
        }
        let b = &self.boundaries;
        let recency = f.days_since_last_order?;
        let r = 5 - b.recency_max_days.iter().take_while(|max| recency > **max).count() as u8;
        let (orders, revenue) = self.window(f);
        let rising = |bounds: &[f64; 4], v: f64| 1 + bounds.iter().filter(|min| v >= **min).count() as u8;
        Some(RfmScores {
            r,
            f: rising(&b.frequency_min, f64::from(orders)),
            m: rising(&b.monetary_min, revenue),
        })
    }

    /// The first time after `at` the scores may change with no new event:
    /// recency crossing a bound, or an order leaving the window.
    pub(crate) fn due_after(&self, f: &Features, state: &CustomerState, at: EventTime) -> Option<EventTime> {
        let last = f.last_order.filter(|_| f.lifetime_orders > 0)?;
        let recency = self.boundaries.recency_max_days.iter().map(|d| last.plus_days(*d).plus_millis(1));
        recency.filter(|d| *d > at).chain(state.next_window_exit(at, self.window_days)).min()
    }

    /// Reason and deciding values of a move into `to` (or out, `None`).
    pub(crate) fn explain(&self, scores: Option<RfmScores>, f: &Features) -> (String, BTreeMap<String, f64>) {
        let (orders, revenue) = self.window(f);
        let days = self.window_days;
        let b = &self.boundaries;
        let mut values = BTreeMap::from([
            (format!("orders_{days}d"), f64::from(orders)),
            (format!("revenue_{days}d"), revenue),
            ("lifetime_orders".to_owned(), f64::from(f.lifetime_orders)),
        ]);
        if let Some(recency) = f.days_since_last_order {
            values.insert("days_since_last_order".to_owned(), (recency * 1000.0).round() / 1000.0);
        }
        for (prefix, scores, bounds) in [
            ("r_max_days_", [5, 4, 3, 2], &b.recency_max_days),
            ("f_min_orders_", [2, 3, 4, 5], &b.frequency_min),
            ("m_min_revenue_", [2, 3, 4, 5], &b.monetary_min),
        ] {
            values
                .extend(scores.into_iter().zip(bounds).map(|(s, v)| (format!("threshold_{prefix}{s}"), *v)));
        }
        let Some(s) = scores else {
            return ("no net order left: every order cancelled or refunded".to_owned(), values);
        };
        values.extend(
            [("rfm_r", s.r), ("rfm_f", s.f), ("rfm_m", s.m)].map(|(k, v)| (k.to_owned(), f64::from(v))),
        );
        let recency = f.days_since_last_order.unwrap_or_default();
        let reason = format!(
            "R{} F{} M{}: last order {recency:.0} days ago, {orders} orders and {revenue:.2} in {days} days",
            s.r, s.f, s.m
        );
        (reason, values)
    }

    /// The version of the model whose boundaries are in force, if any.
    pub fn model_version(&self) -> Option<&str> {
        match &self.boundaries.source {
            BoundarySource::Model { version } => Some(version),
            BoundarySource::Definitions => None,
        }
    }

    /// Version of the definitions these rules come from.
    pub fn version(&self) -> i32 {
        self.version
    }

    /// Days a buyer stays in a segment at least before moving to another.
    pub fn min_dwell_days(&self) -> f64 {
        self.min_dwell_days
    }
}
