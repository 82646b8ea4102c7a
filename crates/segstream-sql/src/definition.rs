//! The batch definition of every feature: one SQL query over the decoded
//! event tables.
//!
//! `clicks` and `orders` have the schemas of the decoded Arrow batches
//! (`ClickBatch::schema`, `OrderBatch::schema`), whether they come from Kafka
//! polls or from history files. The query computes each customer's features
//! as of one event time; `docs/segments-and-features.md` defines each feature
//! in words, this query in SQL, and `CustomerState` incrementally. A property
//! test holds the query and the state to the same values.

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use segstream_config::FeaturesConfig;
use segstream_events::EventTime;

use crate::{SqlError, table};

const DAY_MS: i64 = 86_400_000;

/// Days since the epoch of a millisecond column (floor, also before 1970).
fn day(column: &str) -> String {
    format!("(({column} - ((({column} % {DAY_MS}) + {DAY_MS}) % {DAY_MS})) / {DAY_MS})")
}

/// The feature query as of `as_of`: events after it are ignored.
pub fn feature_sql(as_of: EventTime, config: &FeaturesConfig) -> String {
    let now = as_of.millis();
    let now_day = as_of.day();
    let gap = i64::from(config.session_gap_minutes) * 60_000;
    let click_day = day("t");
    let window = |days: i64| now - days * DAY_MS;
    let (w30, w90, w365) = (window(30), window(90), window(365));
    format!(
        "
WITH
-- A click event id counts once.
c AS (
  SELECT DISTINCT customer_id, event_id, CAST(event_type AS VARCHAR) AS event_type,
         CAST(event_time AS BIGINT) AS t
  FROM clicks WHERE CAST(event_time AS BIGINT) <= {now}),
cd AS (SELECT customer_id, event_type, t, {click_day} AS d FROM c),
-- Sessions: runs of clicks with gaps of at most the session gap, counted on
-- the day they start.
starts AS (
  SELECT customer_id, t, d, LAG(t) OVER (PARTITION BY customer_id ORDER BY t) AS prev FROM cd),
sessions AS (
  SELECT customer_id, COUNT(*) AS sessions_30d FROM starts
  WHERE (prev IS NULL OR t - prev > {gap}) AND d > {now_day} - 30 AND d <= {now_day}
  GROUP BY customer_id),
activity AS (
  SELECT customer_id,
    SUM(CASE WHEN event_type IN ('page_view', 'product_view') THEN 1 ELSE 0 END) AS page_views_30d,
    SUM(CASE WHEN event_type = 'product_view' THEN 1 ELSE 0 END) AS product_views_30d,
    SUM(CASE WHEN event_type = 'search' THEN 1 ELSE 0 END) AS searches_30d,
    SUM(CASE WHEN event_type = 'add_to_cart' THEN 1 ELSE 0 END) AS add_to_cart_30d
  FROM cd WHERE d > {now_day} - 30 AND d <= {now_day}
  GROUP BY customer_id),
o AS (
  SELECT customer_id, order_id, CAST(status AS VARCHAR) AS status, CAST(event_time AS BIGINT) AS t,
         CAST(round(total * 100) AS BIGINT) AS cents,
         CAST(round(discount_amount * 100) AS BIGINT) AS discount_cents
  FROM orders WHERE CAST(event_time AS BIGINT) <= {now}),
-- An order id counts once; a cancellation or refund voids it, whenever it arrives.
placed AS (
  SELECT customer_id, order_id, MIN(t) AS t, MIN(cents) AS cents, MIN(discount_cents) AS discount_cents
  FROM o WHERE status = 'placed' GROUP BY customer_id, order_id),
voided AS (SELECT DISTINCT customer_id, order_id FROM o WHERE status <> 'placed'),
net AS (
  SELECT p.customer_id, p.t, p.cents, p.discount_cents FROM placed p
  LEFT JOIN voided v ON p.customer_id = v.customer_id AND p.order_id = v.order_id
  WHERE v.order_id IS NULL),
totals AS (
  SELECT customer_id,
    SUM(CASE WHEN t > {w30} THEN 1 ELSE 0 END) AS orders_30d,
    SUM(CASE WHEN t > {w90} THEN 1 ELSE 0 END) AS orders_90d,
    SUM(CASE WHEN t > {w365} THEN 1 ELSE 0 END) AS orders_365d,
    SUM(CASE WHEN t > {w30} THEN cents ELSE 0 END) AS cents_30d,
    SUM(CASE WHEN t > {w90} THEN cents ELSE 0 END) AS cents_90d,
    SUM(CASE WHEN t > {w365} THEN cents ELSE 0 END) AS cents_365d,
    SUM(CASE WHEN t > {w365} AND discount_cents > 0 THEN 1 ELSE 0 END) AS discounted_365d,
    SUM(CASE WHEN t > {w365} AND discount_cents > 0 THEN discount_cents ELSE 0 END) AS discount_cents_365d,
    COUNT(*) AS lifetime_orders,
    SUM(cents) AS lifetime_cents,
    MAX(t) AS last_order
  FROM net GROUP BY customer_id),
ranked AS (
  SELECT customer_id, t, ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY t DESC) AS rn
  FROM net WHERE t > {w365}),
last_gap AS (
  SELECT customer_id, MAX(CASE WHEN rn = 1 THEN t END) - MAX(CASE WHEN rn = 2 THEN t END) AS gap_ms
  FROM ranked WHERE rn <= 2 GROUP BY customer_id HAVING COUNT(*) = 2),
firsts AS (SELECT customer_id, MIN(t) AS first_order FROM placed GROUP BY customer_id),
seen AS (
  SELECT customer_id, MAX(t) AS last_seen
  FROM (SELECT customer_id, t FROM c UNION ALL SELECT customer_id, t FROM o) e
  GROUP BY customer_id)
SELECT
  seen.customer_id,
  {now} AS as_of,
  COALESCE(orders_30d, 0) AS orders_30d,
  COALESCE(orders_90d, 0) AS orders_90d,
  COALESCE(orders_365d, 0) AS orders_365d,
  CAST(COALESCE(cents_30d, 0) AS DOUBLE) / 100.0 AS revenue_30d,
  CAST(COALESCE(cents_90d, 0) AS DOUBLE) / 100.0 AS revenue_90d,
  CAST(COALESCE(cents_365d, 0) AS DOUBLE) / 100.0 AS revenue_365d,
  COALESCE(lifetime_orders, 0) AS lifetime_orders,
  (CAST(lifetime_cents AS DOUBLE) / 100.0) / CAST(lifetime_orders AS DOUBLE) AS avg_order_value,
  last_order,
  CAST({now} - last_order AS DOUBLE) / {DAY_MS}.0 AS days_since_last_order,
  first_order,
  CAST({now} - first_order AS DOUBLE) / {DAY_MS}.0 AS tenure_days,
  COALESCE(sessions_30d, 0) AS sessions_30d,
  COALESCE(page_views_30d, 0) AS page_views_30d,
  COALESCE(product_views_30d, 0) AS product_views_30d,
  COALESCE(searches_30d, 0) AS searches_30d,
  COALESCE(add_to_cart_30d, 0) AS add_to_cart_30d,
  CASE WHEN lifetime_orders >= 2
    THEN (CAST(last_order - first_order AS DOUBLE) / {DAY_MS}.0) / CAST(lifetime_orders - 1 AS DOUBLE)
  END AS interpurchase_mean_days,
  CAST(gap_ms AS DOUBLE) / {DAY_MS}.0 AS interpurchase_last_gap_days,
  CASE WHEN orders_365d > 0
    THEN CAST(discounted_365d AS DOUBLE) / CAST(orders_365d AS DOUBLE) END AS discount_share_365d,
  CASE WHEN discounted_365d > 0
    THEN (CAST(discount_cents_365d AS DOUBLE) / 100.0) / CAST(discounted_365d AS DOUBLE) END
    AS avg_discount_365d,
  last_seen
FROM seen
LEFT JOIN totals ON seen.customer_id = totals.customer_id
LEFT JOIN sessions ON seen.customer_id = sessions.customer_id
LEFT JOIN activity ON seen.customer_id = activity.customer_id
LEFT JOIN last_gap ON seen.customer_id = last_gap.customer_id
LEFT JOIN firsts ON seen.customer_id = firsts.customer_id
ORDER BY seen.customer_id
"
    )
}

/// Runs the feature query on the `clicks` and `orders` tables registered in
/// `ctx` and returns the feature table (schema [`table::schema`] without the
/// lifecycle column), sorted by customer id.
pub async fn batch_features(
    ctx: &SessionContext,
    as_of: EventTime,
    config: &FeaturesConfig,
) -> Result<Vec<RecordBatch>, SqlError> {
    let batches = ctx.sql(&feature_sql(as_of, config)).await?.collect().await?;
    batches.iter().map(table::conform).collect()
}
