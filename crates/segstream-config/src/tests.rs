use std::io::Write;

use super::*;

#[test]
fn embedded_defaults_load_and_validate() {
    let c = Config::load(None, &[]).expect("defaults");
    assert_eq!(c.topics.clickstream, "clickstream");
    assert_eq!(c.lifecycle.churn_days, 180.0);
}

#[test]
fn file_then_set_overrides_layer_in_order() {
    let mut f = tempfile::NamedTempFile::new().expect("tmp");
    writeln!(f, "[kafka]\ngroup_id = \"from-file\"\n[lifecycle]\nat_risk_days = 60").expect("write");
    let c = Config::load(
        Some(f.path()),
        &["kafka.group_id=from-flag".into(), "worker.batch_max_events=7".into()],
    )
    .expect("load");
    assert_eq!(c.kafka.group_id, "from-flag");
    assert_eq!(c.lifecycle.at_risk_days, 60.0);
    assert_eq!(c.worker.batch_max_events, 7);
    assert_eq!(c.kafka.bootstrap_servers, "127.0.0.1:9092");
}

#[test]
fn unknown_key_is_named_in_the_error() {
    let err = Config::load(None, &["kafka.bootstrap_server=x:1".into()]).expect_err("typo");
    assert!(err.to_string().contains("bootstrap_server"), "{err}");
}

#[test]
fn wrong_type_is_named_in_the_error() {
    let err = Config::load(None, &["worker.batch_max_events=lots".into()]).expect_err("type");
    assert!(err.to_string().contains("batch_max_events"), "{err}");
}

#[test]
fn inconsistent_thresholds_name_the_key_and_the_fix() {
    let err = Config::load(None, &["lifecycle.at_risk_days=200".into()]).expect_err("order");
    let text = err.to_string();
    assert!(text.contains("lifecycle.at_risk_days") && text.contains("churn_days"), "{text}");
}

#[test]
fn malformed_set_flag_shows_the_expected_form() {
    let err = Config::load(None, &["group_id".into()]).expect_err("form");
    assert!(err.to_string().contains("section.key=value"), "{err}");
}

#[test]
fn missing_config_file_is_reported() {
    let err = Config::load(Some(Path::new("/nonexistent/segstream.toml")), &[]).expect_err("missing");
    assert!(err.to_string().contains("/nonexistent/segstream.toml"), "{err}");
}

#[test]
fn checkpoint_and_recovery_settings_are_validated_by_name() {
    let c = Config::load(
        None,
        &["recovery.on_missing_history=accept".into(), "checkpoint.options.aws_region=eu-west-1".into()],
    )
    .expect("load");
    assert_eq!(c.recovery.on_missing_history, MissingHistory::Accept);
    assert_eq!(c.checkpoint.options.get("aws_region").map(String::as_str), Some("eu-west-1"));
    let err = Config::load(None, &["checkpoint.keep=0".into()]).expect_err("keep").to_string();
    assert!(err.contains("checkpoint.keep") && err.contains("at least 1"), "{err}");
    let err = Config::load(None, &["checkpoint.url=\"\"".into()]).expect_err("url").to_string();
    assert!(err.contains("checkpoint.url") && err.contains("interval_ms = 0"), "{err}");
    let err =
        Config::load(None, &["recovery.on_missing_history=ignore".into()]).expect_err("policy").to_string();
    assert!(err.contains("on_missing_history"), "{err}");
    let c = Config::load(None, &["worker.processing_guarantee=at_least_once".into()]).expect("guarantee");
    assert_eq!(c.worker.processing_guarantee, ProcessingGuarantee::AtLeastOnce);
    assert_eq!(c.worker.commit_interval_ms(), 1000, "at-least-once commits less often by default");
    assert_eq!(Config::load(None, &[]).expect("defaults").worker.commit_interval_ms(), 100);
    let set = Config::load(
        None,
        &["worker.processing_guarantee=at_least_once".into(), "worker.commit_interval_ms=50".into()],
    );
    assert_eq!(set.expect("set").worker.commit_interval_ms(), 50, "a set interval wins");
    assert_eq!(
        Config::load(None, &[]).expect("defaults").worker.processing_guarantee,
        ProcessingGuarantee::ExactlyOnce
    );
    let err = Config::load(None, &["worker.processing_guarantee=exactly_once_v2".into()])
        .expect_err("guarantee")
        .to_string();
    assert!(err.contains("processing_guarantee") && err.contains("at_least_once"), "{err}");
    Config::load(None, &["checkpoint.url=\"\"".into(), "checkpoint.interval_ms=0".into()]).expect("off");
}

#[test]
fn each_pipeline_thread_is_its_own_member_and_a_bad_thread_count_is_named() {
    let one = Config::load(None, &["worker.instance_id=w".into()]).expect("defaults");
    assert_eq!(one.worker.threads, 1);
    assert_eq!(one.pipeline(0).instance_id(), "w", "one thread keeps the worker's own id");
    let two = Config::load(None, &["worker.instance_id=w".into(), "worker.threads=2".into()]).expect("two");
    assert_eq!((two.pipeline(0).instance_id(), two.pipeline(1).instance_id()), ("w-0".into(), "w-1".into()));
    for bad in ["0", "65"] {
        let err = Config::load(None, &[format!("worker.threads={bad}")]).expect_err("threads").to_string();
        assert!(err.contains("worker.threads") && err.contains("1 to 64"), "{err}");
    }
}

#[test]
fn sql_is_off_by_default_and_a_bad_sql_listen_is_named() {
    let c = Config::load(None, &[]).expect("defaults");
    assert!(c.sql.listen.is_empty(), "customer data is not served unless asked for");
    let err = Config::load(None, &["sql.listen=localhost".into()]).expect_err("not ip:port");
    assert!(err.to_string().contains("sql.listen"), "{err}");
}

#[test]
fn the_earliest_event_date_is_a_day_and_a_bad_one_is_named() {
    let c = Config::load(None, &["time.earliest_event_date=1990-01-01".into()]).expect("a day");
    assert_eq!(c.time.earliest_event_millis(), Some(631_152_000_000));
    let err = Config::load(None, &["time.earliest_event_date=1990".into()]).expect_err("not a day");
    assert!(err.to_string().contains("time.earliest_event_date"), "{err}");
    let err = Config::load(None, &["time.earliest_event_date=1969-12-31".into()]).expect_err("before 1970");
    assert!(err.to_string().contains("from 1970-01-01 on"), "{err}");
}

#[test]
fn max_orders_kept_below_two_is_refused_with_the_field_named() {
    let err = Config::load(None, &["features.max_orders_kept=1".into()]).expect_err("too few");
    assert!(err.to_string().contains("features.max_orders_kept"), "{err}");
}

#[test]
fn a_high_value_window_that_is_no_order_window_is_refused_with_the_field_and_the_windows() {
    let err =
        Config::load(None, &["lifecycle.high_value_window_days=180".into()]).expect_err("no such window");
    let message = err.to_string();
    assert!(
        message.contains("lifecycle.high_value_window_days") && message.contains("[7, 30, 90, 365]"),
        "{message}"
    );
    let err = Config::load(None, &["lifecycle.high_value_revenue=-1".into()]).expect_err("negative");
    assert!(err.to_string().contains("lifecycle.high_value_revenue"), "{err}");
    assert!(
        Config::load(None, &["features.order_windows_days=[7, 30]".into()]).is_ok(),
        "0: the longest window"
    );
}

#[test]
fn librdkafka_keys_may_use_underscores_for_dots_so_the_environment_can_set_them() {
    let c = Config::load(None, &["kafka.librdkafka_options.sasl_password=s3cret".into()]).expect("load");
    assert_eq!(c.kafka.librdkafka_options.get("sasl.password").map(String::as_str), Some("s3cret"));
    assert!(!c.kafka.librdkafka_options.contains_key("sasl_password"));
}

#[test]
fn trainer_settings_that_cannot_fit_are_refused_naming_the_key() {
    for (set, key) in [
        ("trainer.algorithm=dbscan", "trainer.algorithm"),
        ("trainer.k_min=1", "trainer.k_min"),
        ("trainer.k_max=2", "trainer.k_min"),
        ("trainer.cluster_features=[]", "trainer.cluster_features"),
        ("trainer.silhouette_sample=5", "trainer.silhouette_sample"),
        ("trainer.match_distance=0", "trainer.match_distance"),
        ("trainer.rfm_window_days=180", "trainer.rfm_window_days"),
    ] {
        let err = Config::load(None, &[set.into()]).expect_err(set);
        assert!(err.to_string().contains(key), "{set}: {err}");
    }
    let config = Config::load(None, &["trainer.k_min=2".into()]).expect("valid");
    assert_eq!(config.trainer.rfm_window(&config.features), 365);
}
