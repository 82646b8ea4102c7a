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

/// Hour of the day (UTC) of a millisecond column.
fn hour(column: &str) -> String {
    format!("(((({column} % {DAY_MS}) + {DAY_MS}) % {DAY_MS}) / 3600000)")
}

/// The click counts each day bucket holds, and when a click adds to each:
/// the one definition of the per-day counts, used by the batch query and by
/// the streaming path's per-batch plan ([`crate::activity`]) alike. Order is
/// `segstream_features::DayCounts` order.
pub(crate) const DAY_COUNTS: &[(&str, &str)] = &[
    ("page_views", "event_type IN ('page_view', 'product_view')"),
    ("product_views", "event_type = 'product_view'"),
    ("searches", "event_type = 'search'"),
    ("add_to_cart", "event_type = 'add_to_cart'"),
    ("night", "hour < 6"),
    ("morning", "hour >= 6 AND hour < 12"),
    ("afternoon", "hour >= 12 AND hour < 18"),
    ("evening", "hour >= 18"),
    ("app", "device = 'app'"),
    ("desktop", "device = 'desktop'"),
    ("mobile", "device = 'mobile'"),
    ("other", "device = 'other'"),
    ("tablet", "device = 'tablet'"),
];

/// A click as the counts read it, from `customer_id`, `event_type`, `t`
/// (milliseconds) and the free-text `device`: day, hour and device class.
pub(crate) fn click_columns() -> String {
    format!(
        "customer_id, event_type, t, {day} AS d, {hour} AS hour,
         CASE WHEN device IS NULL THEN NULL
              WHEN lower(device) IN ('app', 'desktop', 'mobile', 'tablet') THEN lower(device)
              ELSE 'other' END AS device",
        day = day("t"),
        hour = hour("t"),
    )
}

/// Per (customer, day `d`) click counts of `source` (columns of [`click_columns`]).
pub(crate) fn day_counts_sql(source: &str) -> String {
    // Caps as the day buckets saturate: the four kinds at 65,535, the rest at 255.
    let sums: Vec<String> = DAY_COUNTS
        .iter()
        .enumerate()
        .map(|(i, (name, when))| {
            let cap = if i < 4 { 65_535 } else { 255 };
            format!("least(SUM(CASE WHEN {when} THEN 1 ELSE 0 END), {cap}) AS {name}")
        })
        .collect();
    format!("SELECT customer_id, d, {} FROM {source} GROUP BY customer_id, d", sums.join(", "))
}

/// The feature query as of `as_of`: events after it are ignored.
pub fn feature_sql(as_of: EventTime, config: &FeaturesConfig) -> String {
    let now = as_of.millis();
    let now_day = as_of.day();
    let gap = i64::from(config.session_gap_minutes) * 60_000;
    let order_days = config.order_retention_days();
    let activity_days = config.activity_retention_days();
    let w_year = now - order_days * DAY_MS;
    let abandon_ms = i64::from(config.cart_abandon_hours) * 3_600_000;
    let cart_lines = segstream_features::CART_LINES;
    let in_days = |days: &u32| format!("d > {now_day} - {days} AND d <= {now_day}");
    let mut session_cols = Vec::new();
    let mut activity_cols = Vec::new();
    let mut activity_out = Vec::new();
    for days in &config.activity_windows_days {
        let w = in_days(days);
        session_cols.push(format!("SUM(CASE WHEN {w} THEN 1 ELSE 0 END) AS sessions_{days}d"));
        for name in ["page_views", "product_views", "searches", "add_to_cart"] {
            activity_cols.push(format!("SUM(CASE WHEN {w} THEN {name} ELSE 0 END) AS {name}_{days}d"));
        }
        for name in ["sessions", "page_views", "product_views", "searches", "add_to_cart"] {
            activity_out.push(format!("COALESCE({name}_{days}d, 0) AS {name}_{days}d"));
        }
    }
    let mut order_cols = Vec::new();
    let mut order_out = Vec::new();
    for days in &config.order_windows_days {
        let from = now - i64::from(*days) * DAY_MS;
        order_cols.push(format!("SUM(CASE WHEN t > {from} THEN 1 ELSE 0 END) AS orders_{days}d"));
        order_cols.push(format!("SUM(CASE WHEN t > {from} THEN cents ELSE 0 END) AS cents_{days}d"));
        order_out.push(format!("COALESCE(orders_{days}d, 0) AS orders_{days}d"));
        order_out.push(format!("CAST(COALESCE(cents_{days}d, 0) AS DOUBLE) / 100.0 AS revenue_{days}d"));
    }
    let (session_cols, activity_cols, activity_out) =
        (session_cols.join(",\n    "), activity_cols.join(",\n    "), activity_out.join(",\n  "));
    let (order_cols, order_out) = (order_cols.join(",\n    "), order_out.join(",\n  "));
    let click_columns = click_columns();
    let day_counts = day_counts_sql("cd");
    let clicks_of_day = "(night + morning + afternoon + evening)";
    let top_device = "greatest(app, desktop, mobile, other, tablet)";
    format!(
        "
WITH
-- A click event id counts once.
c AS (
  SELECT DISTINCT customer_id, event_id, CAST(event_type AS VARCHAR) AS event_type,
         CAST(event_time AS BIGINT) AS t, device, price
  FROM clicks WHERE CAST(event_time AS BIGINT) <= {now}),
cd AS (SELECT {click_columns}, price FROM c),
-- Sessions: runs of clicks with gaps of at most the session gap, counted on
-- the day they start.
starts AS (
  SELECT customer_id, t, d, LAG(t) OVER (PARTITION BY customer_id ORDER BY t) AS prev FROM cd),
sessions AS (
  SELECT customer_id,
    {session_cols}
  FROM starts WHERE prev IS NULL OR t - prev > {gap}
  GROUP BY customer_id),
-- The day buckets, as the streaming path keeps them.
day_counts AS ({day_counts}),
activity AS (
  SELECT customer_id,
    {activity_cols}
  FROM day_counts GROUP BY customer_id),
-- The longest activity window: time of day, weekend, device.
mix AS (
  SELECT customer_id, SUM({clicks_of_day}) AS clicks,
    SUM(night) AS night, SUM(morning) AS morning, SUM(afternoon) AS afternoon, SUM(evening) AS evening,
    -- 1970-01-01 was a Thursday.
    SUM(CASE WHEN (((d + 3) % 7) + 7) % 7 >= 5 THEN {clicks_of_day} ELSE 0 END) AS weekend,
    SUM(app) AS app, SUM(desktop) AS desktop, SUM(mobile) AS mobile, SUM(other) AS other, SUM(tablet) AS tablet
  FROM day_counts WHERE d > {now_day} - {activity_days} AND d <= {now_day}
  GROUP BY customer_id),
o AS (
  SELECT customer_id, order_id, CAST(status AS VARCHAR) AS status, CAST(event_time AS BIGINT) AS t,
         CAST(round(total * 100) AS BIGINT) AS cents,
         CAST(round(discount_amount * 100) AS BIGINT) AS discount_cents,
         array_element(categories, 1) AS category, payment_method
  FROM orders WHERE CAST(event_time AS BIGINT) <= {now}),
-- An order id counts once; a cancellation or refund voids it, whenever it arrives.
placed AS (
  SELECT customer_id, order_id, MIN(t) AS t, MIN(cents) AS cents, MIN(discount_cents) AS discount_cents,
         MIN(category) AS category, MIN(payment_method) AS payment_method
  FROM o WHERE status = 'placed' GROUP BY customer_id, order_id),
voided AS (SELECT DISTINCT customer_id, order_id FROM o WHERE status <> 'placed'),
net AS (
  SELECT p.customer_id, p.t, p.cents, p.discount_cents, p.category, p.payment_method FROM placed p
  LEFT JOIN voided v ON p.customer_id = v.customer_id AND p.order_id = v.order_id
  WHERE v.order_id IS NULL),
totals AS (
  SELECT customer_id,
    {order_cols},
    SUM(CASE WHEN t > {w_year} THEN 1 ELSE 0 END) AS year_orders,
    SUM(CASE WHEN t > {w_year} AND discount_cents > 0 THEN 1 ELSE 0 END) AS discounted,
    SUM(CASE WHEN t > {w_year} AND discount_cents > 0 THEN discount_cents ELSE 0 END) AS discount_cents,
    COUNT(*) AS lifetime_orders,
    SUM(cents) AS lifetime_cents,
    MAX(t) AS last_order
  FROM net GROUP BY customer_id),
ranked AS (
  SELECT customer_id, t, ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY t DESC) AS rn
  FROM net WHERE t > {w_year}),
last_gap AS (
  SELECT customer_id, MAX(CASE WHEN rn = 1 THEN t END) - MAX(CASE WHEN rn = 2 THEN t END) AS gap_ms
  FROM ranked WHERE rn <= 2 GROUP BY customer_id HAVING COUNT(*) = 2),
category_counts AS (
  SELECT customer_id, category, COUNT(*) AS n FROM net
  WHERE t > {w_year} AND category IS NOT NULL GROUP BY customer_id, category),
top_category AS (
  SELECT customer_id, category, n, ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY n DESC, category ASC) AS rn
  FROM category_counts),
category_totals AS (
  SELECT customer_id, SUM(n) AS with_category, COUNT(*) AS categories_bought FROM category_counts
  GROUP BY customer_id),
payments AS (
  SELECT customer_id, payment_method,
         ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY n DESC, payment_method ASC) AS rn
  FROM (SELECT customer_id, payment_method, COUNT(*) AS n FROM net
        WHERE t > {w_year} AND payment_method IS NOT NULL GROUP BY customer_id, payment_method) x),
-- The first order is the earliest net one; the cart closes at the latest placed.
firsts AS (
  SELECT p.customer_id, n.first_order, MAX(p.t) AS last_placed
  FROM placed p LEFT JOIN (SELECT customer_id, MIN(t) AS first_order FROM net GROUP BY customer_id) n
    ON p.customer_id = n.customer_id
  GROUP BY p.customer_id, n.first_order),
-- The cart: adds and removes after the last order placed, in the longest
-- activity window, the latest {cart_lines} of them.
cart_lines AS (
  SELECT cd.customer_id, cd.t, cd.event_type,
         CASE WHEN cd.event_type = 'add_to_cart' THEN 1 ELSE -1 END
           * CAST(round(COALESCE(cd.price, 0) * 100) AS BIGINT) AS cents,
         ROW_NUMBER() OVER (PARTITION BY cd.customer_id ORDER BY cd.t DESC) AS rn
  FROM cd LEFT JOIN firsts f ON cd.customer_id = f.customer_id
  WHERE cd.event_type IN ('add_to_cart', 'remove_from_cart')
    AND (f.last_placed IS NULL OR cd.t > f.last_placed)
    AND cd.d > {now_day} - {activity_days}),
cart AS (
  SELECT customer_id, greatest(SUM(cents), 0) AS cart_cents,
         MAX(CASE WHEN event_type = 'add_to_cart' THEN t END) AS last_cart_add
  FROM cart_lines WHERE rn <= {cart_lines} GROUP BY customer_id),
seen AS (
  SELECT customer_id, MAX(t) AS last_seen
  FROM (SELECT customer_id, t FROM c UNION ALL SELECT customer_id, t FROM o) e
  GROUP BY customer_id)
SELECT
  seen.customer_id,
  {now} AS as_of,
  {order_out},
  COALESCE(lifetime_orders, 0) AS lifetime_orders,
  (CAST(lifetime_cents AS DOUBLE) / 100.0) / CAST(lifetime_orders AS DOUBLE) AS avg_order_value,
  last_order,
  CAST({now} - last_order AS DOUBLE) / {DAY_MS}.0 AS days_since_last_order,
  first_order,
  CAST({now} - first_order AS DOUBLE) / {DAY_MS}.0 AS tenure_days,
  {activity_out},
  CASE WHEN lifetime_orders >= 2
    THEN (CAST(last_order - first_order AS DOUBLE) / {DAY_MS}.0) / CAST(lifetime_orders - 1 AS DOUBLE)
  END AS interpurchase_mean_days,
  CAST(gap_ms AS DOUBLE) / {DAY_MS}.0 AS interpurchase_last_gap_days,
  CASE WHEN year_orders > 0 THEN CAST(discounted AS DOUBLE) / CAST(year_orders AS DOUBLE) END AS discount_share,
  CASE WHEN discounted > 0
    THEN (CAST(discount_cents AS DOUBLE) / 100.0) / CAST(discounted AS DOUBLE) END AS avg_discount,
  top_category.category AS top_category,
  CAST(top_category.n AS DOUBLE) / CAST(with_category AS DOUBLE) AS top_category_share,
  COALESCE(categories_bought, 0) AS categories_bought,
  payments.payment_method AS preferred_payment,
  -- Ties go to the first name in alphabetical order.
  CASE WHEN COALESCE({top_device}, 0) = 0 THEN NULL
       WHEN app = {top_device} THEN 'app'
       WHEN desktop = {top_device} THEN 'desktop'
       WHEN mobile = {top_device} THEN 'mobile'
       WHEN other = {top_device} THEN 'other'
       ELSE 'tablet' END AS preferred_device,
  CAST(night AS DOUBLE) / CAST(clicks AS DOUBLE) AS night_share,
  CAST(morning AS DOUBLE) / CAST(clicks AS DOUBLE) AS morning_share,
  CAST(afternoon AS DOUBLE) / CAST(clicks AS DOUBLE) AS afternoon_share,
  CAST(evening AS DOUBLE) / CAST(clicks AS DOUBLE) AS evening_share,
  CAST(weekend AS DOUBLE) / CAST(clicks AS DOUBLE) AS weekend_share,
  CAST(COALESCE(cart_cents, 0) AS DOUBLE) / 100.0 AS cart_value,
  last_cart_add,
  COALESCE(cart_cents > 0 AND last_cart_add + {abandon_ms} <= {now}, false) AS cart_abandoned,
  CASE WHEN cart_cents > 0 AND last_cart_add + {abandon_ms} <= {now}
    THEN CAST(cart_cents AS DOUBLE) / 100.0 ELSE 0.0 END AS abandoned_cart_value,
  last_seen
FROM seen
LEFT JOIN totals ON seen.customer_id = totals.customer_id
LEFT JOIN sessions ON seen.customer_id = sessions.customer_id
LEFT JOIN activity ON seen.customer_id = activity.customer_id
LEFT JOIN mix ON seen.customer_id = mix.customer_id
LEFT JOIN last_gap ON seen.customer_id = last_gap.customer_id
LEFT JOIN top_category ON seen.customer_id = top_category.customer_id AND top_category.rn = 1
LEFT JOIN category_totals ON seen.customer_id = category_totals.customer_id
LEFT JOIN payments ON seen.customer_id = payments.customer_id AND payments.rn = 1
LEFT JOIN firsts ON seen.customer_id = firsts.customer_id
LEFT JOIN cart ON seen.customer_id = cart.customer_id
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
    batches.iter().map(|b| table::conform(b, config)).collect()
}
