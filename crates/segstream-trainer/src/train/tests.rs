use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{Field, Schema};
use segstream_config::Config;

use super::*;
use crate::testdata::cdnow_with_spend;

/// CDNOW's customers as a feature table (weeks → days), with a discount
/// share that splits them in two.
fn cdnow_table() -> RecordBatch {
    let rows = cdnow_with_spend();
    let f = |v: Vec<Option<f64>>| Arc::new(Float64Array::from(v)) as ArrayRef;
    let orders: Vec<u32> = rows.iter().map(|(s, _)| s.frequency as u32 + 1).collect();
    let tenure: Vec<Option<f64>> = rows.iter().map(|(s, _)| Some(s.age * 7.0)).collect();
    let recency: Vec<Option<f64>> = rows.iter().map(|(s, _)| Some((s.age - s.recency) * 7.0)).collect();
    let average: Vec<Option<f64>> = rows.iter().map(|(_, m)| (*m > 0.0).then_some(*m)).collect();
    let revenue: Vec<Option<f64>> = rows.iter().map(|(s, m)| Some(m * (s.frequency + 1.0))).collect();
    let discount: Vec<Option<f64>> =
        (0..rows.len()).map(|i| Some(if i % 3 == 0 { 0.8 } else { 0.0 })).collect();
    let ids: Vec<String> = (0..rows.len()).map(|i| format!("cust-{i:05}")).collect();
    let schema = Schema::new(vec![
        Field::new("customer_id", DataType::Utf8, false),
        Field::new("lifetime_orders", DataType::UInt32, false),
        Field::new("tenure_days", DataType::Float64, true),
        Field::new("days_since_last_order", DataType::Float64, true),
        Field::new("avg_order_value", DataType::Float64, true),
        Field::new("orders_365d", DataType::UInt32, false),
        Field::new("revenue_365d", DataType::Float64, true),
        Field::new("discount_share", DataType::Float64, true),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(UInt32Array::from(orders.clone())),
            f(tenure),
            f(recency),
            f(average),
            Arc::new(UInt32Array::from(orders)),
            f(revenue),
            f(discount),
        ],
    )
    .expect("batch")
}

fn trainer() -> TrainerConfig {
    let mut t = Config::default().trainer;
    t.cluster_features = ["orders_365d", "revenue_365d", "days_since_last_order", "discount_share"]
        .map(str::to_owned)
        .to_vec();
    t.k_min = 2;
    t.k_max = 5;
    t
}

#[test]
fn a_run_on_cdnow_fits_every_model_and_a_second_run_keeps_the_cluster_ids_and_raises_the_version() {
    let config = trainer();
    let population = Population::from_batches(&[cdnow_table()], &config, 365).expect("population");
    assert_eq!((population.customers, population.buyers()), (2_357, 2_357));
    let first = train(&population, &config, 365, None, "g", "test", 1).expect("model");
    assert_eq!(first.version, 1);
    assert_eq!(first.repeat_buyers, 946);
    // Whole days change the CDNOW estimates a little; r and a stay near the
    // published 0.243 and 0.793, alpha is in days (4.414 weeks = 30.9 days).
    let p = first.purchase.expect("purchase model");
    assert!((p.r - 0.243).abs() < 0.02 && (p.alpha - 30.9).abs() < 3.0 && (p.a - 0.793).abs() < 0.1, "{p:?}");
    let clusters = first.clusters.as_ref().expect("clusters");
    assert!(clusters.clusters.len() >= 2);
    assert!(
        clusters.clusters.iter().any(|c| c.name.contains("discount driven")),
        "{:?}",
        clusters.clusters.iter().map(|c| &c.name).collect::<Vec<_>>()
    );
    let rfm = first.rfm.as_ref().expect("rfm");
    for bounds in [&rfm.recency_max_days, &rfm.frequency_min, &rfm.monetary_min] {
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{rfm:?}");
    }
    let second = train(&population, &config, 365, Some(&first), "g", "test", 2).expect("model");
    assert_eq!(second.version, 2);
    let ids = |m: &SegmentModel| {
        m.clusters
            .as_ref()
            .map(|c| c.clusters.iter().map(|c| (c.id, c.name.clone(), c.population)).collect::<Vec<_>>())
    };
    assert_eq!(ids(&first), ids(&second));
    // The published bytes read back to the same model.
    let bytes = second.to_avro().expect("encode");
    assert_eq!(SegmentModel::from_avro(&bytes).expect("decode"), second);
    // So does a model published before the Gaussian mixture (schema id 9).
    let v1 = apache_avro::Schema::parse_str(segstream_events::schema::SEGMENT_MODEL_V1_AVSC).expect("v1");
    let value = apache_avro::to_value(&second).expect("value");
    let value = match value {
        apache_avro::types::Value::Record(mut fields) => {
            // The v1 layout has neither the algorithm nor the components.
            strip_v2_fields(&mut fields);
            apache_avro::types::Value::Record(fields)
        }
        other => other,
    };
    let resolved = value.resolve(&v1).expect("resolves to v1");
    let body = apache_avro::writer::datum::GenericDatumWriter::builder(&v1)
        .build()
        .and_then(|w| w.write_value_to_vec(resolved))
        .expect("v1 body");
    let old = segstream_events::wire::frame(segstream_events::schema::SEGMENT_MODEL_V1_SCHEMA_ID, &body);
    assert_eq!(SegmentModel::from_avro(&old).expect("v1 decodes"), second);
}

/// Drops the fields schema id 10 added from a model value, wherever they are.
fn strip_v2_fields(fields: &mut Vec<(String, apache_avro::types::Value)>) {
    use apache_avro::types::Value;
    fields.retain(|(name, _)| name != "algorithm" && name != "gaussian");
    for (_, value) in fields.iter_mut() {
        let mut inner = match value {
            Value::Union(_, boxed) => boxed.as_mut(),
            other => other,
        };
        if let Value::Record(f) = &mut inner {
            strip_v2_fields(f);
        }
        if let Value::Array(items) = inner {
            for item in items {
                if let Value::Record(f) = item {
                    strip_v2_fields(f);
                }
            }
        }
    }
}

#[test]
fn a_population_too_small_or_a_missing_column_publishes_nothing_and_says_why() {
    let config = trainer();
    let batch = cdnow_table().slice(0, 20);
    let population = Population::from_batches(&[batch], &config, 365).expect("population");
    let e = train(&population, &config, 365, None, "g", "test", 1).expect_err("too few").to_string();
    assert!(e.contains("20 buyers") && e.contains("trainer.min_buyers"), "{e}");
    let mut config = trainer();
    config.cluster_features.push("no_such_feature".into());
    let e = Population::from_batches(&[cdnow_table()], &config, 365).expect_err("missing").to_string();
    assert!(e.contains("no_such_feature"), "{e}");
    let e = Population::from_batches(&[cdnow_table()], &trainer(), 30).expect_err("missing").to_string();
    assert!(e.contains("orders_30d"), "{e}");
}

#[test]
fn quintile_bounds_rise_strictly_even_when_most_buyers_tie() {
    let ones: Vec<f64> = std::iter::repeat_n(1.0, 90).chain([2.0, 3.0, 5.0, 9.0, 12.0]).collect();
    // As lower bounds of the better score: the one-order buyers keep F1.
    assert_eq!(strict_quintiles(ones.clone(), 1.0, 1.0), vec![2.0, 3.0, 4.0, 5.0]);
    // As upper bounds of the better score (recency): R5 holds the 20th percentile.
    assert_eq!(strict_quintiles(ones, 1.0, 0.0), vec![1.0, 2.0, 3.0, 4.0]);
    let spread: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(strict_quintiles(spread, 0.01, 0.01), vec![20.01, 40.01, 60.01, 80.01]);
}

#[test]
fn a_model_with_a_value_that_is_not_a_number_is_refused() {
    let config = trainer();
    let population = Population::from_batches(&[cdnow_table()], &config, 365).expect("population");
    let mut model = train(&population, &config, 365, None, "g", "test", 1).expect("model");
    assert!(check_finite(&model).is_ok());
    model.spend = Some(GammaGamma { p: f64::NAN, q: 2.0, gamma: 1.0 });
    assert!(check_finite(&model).expect_err("NaN").to_string().contains("p = NaN"));
}

#[test]
fn the_same_population_read_in_another_order_gives_the_same_model() {
    let config = trainer();
    let table = cdnow_table();
    let n = table.num_rows();
    // The partitions of a checkpoint come in another order than a snapshot's rows.
    let parts = [table.slice(n / 2, n - n / 2), table.slice(0, n / 3), table.slice(n / 3, n / 2 - n / 3)];
    let fit = |batches: &[RecordBatch]| {
        let population = Population::from_batches(batches, &config, 365).expect("population");
        train(&population, &config, 365, None, "g", "t", 1).expect("model")
    };
    let (a, b) = (fit(&[table]), fit(&parts));
    assert_eq!((a.purchase, a.spend, &a.rfm), (b.purchase, b.spend, &b.rfm));
    let shape = |m: &SegmentModel| m.clusters.as_ref().map(|c| (c.clusters.clone(), c.tried.clone()));
    assert_eq!(shape(&a), shape(&b));
}
