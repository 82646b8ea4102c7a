//! Bad input, bad topics and bad configuration: clear errors, nothing lost.

use std::time::Duration;

use segstream_events::{ClickEventType, SegmentChange};

use crate::support::{Setup, click_record, http_get, metric, produce, sql_get};

fn good_click(customer: &str) -> Vec<u8> {
    click_at(customer, 1_704_103_200_000)
}

fn click_at(customer: &str, ms: i64) -> Vec<u8> {
    click_record(customer, ms, ClickEventType::Search).1
}

#[test]
fn undecodable_records_go_to_the_dead_letter_topic_with_headers_and_are_counted() {
    let setup = Setup::new("dlq", 1);
    let mut wrong_schema = good_click("x");
    wrong_schema[4] = 77;
    let bad: Vec<(String, Vec<u8>)> = vec![
        ("k1".into(), b"not avro, not json".to_vec()),
        (
            "k2".into(),
            br#"{"event_id":"e","customer_id":"","event_type":"search","event_time":1704103200000}"#.to_vec(),
        ),
        ("k3".into(), wrong_schema),
        ("k4".into(), vec![0, 0, 0]),
        // Seconds, not milliseconds: January 1970.
        ("c-secs".into(), click_at("c-secs", 1_704_103_200)),
        // Decodes, but keyed by someone else: it would land on another partition than its orders.
        ("someone-else".into(), good_click("c-key")),
        // Decodes, but 2099: it would move stream time and fire every timer decades early.
        ("c-future".into(), click_at("c-future", 4_070_908_800_000)),
    ];
    let p = setup.producer();
    let mut records = bad.clone();
    records.insert(2, ("c-ok".into(), good_click("c-ok")));
    produce(&p, &setup.topic("clickstream"), &records);

    let mut worker = setup.spawn_worker();
    let addr = worker.wait_ready(Duration::from_secs(60));
    let dead = setup.read(&setup.topic("dlq"), 7, Duration::from_secs(60));
    let good = setup.read(&setup.topic("changes"), 1, Duration::from_secs(30));
    let metrics = http_get(&addr, "/metrics").1;
    assert!(worker.terminate(Duration::from_secs(20)).0.success());

    assert_eq!(dead.len(), 7, "every bad record is dead-lettered");
    assert_eq!(
        setup.topic_config(&setup.topic("dlq"), "retention.ms").as_deref(),
        Some("604800000"),
        "dead letters hold personal data: kept 7 days by default, not for ever"
    );
    let codes: Vec<&str> = dead.iter().map(|r| r.header("segstream.error.code").unwrap()).collect();
    assert_eq!(
        codes,
        [
            "unknown_format",
            "invalid_field",
            "unknown_schema_id",
            "truncated_header",
            "event_time_out_of_range",
            "key_mismatch",
            "future_event"
        ]
    );
    for (r, (key, payload)) in dead.iter().zip(&bad) {
        assert_eq!(r.key.as_deref(), Some(key.as_str()), "original key kept");
        assert_eq!(r.payload.as_deref(), Some(payload.as_slice()), "original bytes kept");
        assert_eq!(r.header("segstream.source.topic"), Some(setup.topic("clickstream").as_str()));
        assert_eq!(r.header("segstream.source.partition"), Some("0"));
        assert!(r.header("segstream.error.message").is_some_and(|m| !m.is_empty()));
    }
    let offsets: Vec<&str> = dead.iter().map(|r| r.header("segstream.source.offset").unwrap()).collect();
    assert_eq!(offsets, ["0", "1", "3", "4", "5", "6", "7"]);
    let message = dead[1].header("segstream.error.message").unwrap();
    assert!(message.contains("customer_id"), "{message}");

    // The good record between them was processed.
    assert_eq!(good.len(), 1);
    assert_eq!(SegmentChange::from_avro(good[0].payload.as_deref().unwrap()).unwrap().segment, "prospect");
    let topic = setup.topic("clickstream");
    for code in codes {
        let line = format!("segstream_dead_letters_total{{code=\"{code}\",topic=\"{topic}\"}}");
        assert_eq!(metric(&metrics, &line), 1.0, "{line}");
    }
    assert_eq!(metric(&metrics, &format!("segstream_future_events_total{{topic=\"{topic}\"}}")), 1.0);
    assert_eq!(
        metric(
            &metrics,
            &format!("segstream_decode_errors_total{{code=\"unknown_format\",topic=\"{topic}\"}}")
        ),
        1.0
    );
}

#[test]
fn worker_refuses_inputs_that_are_not_co_partitioned() {
    let setup = Setup::new("copart", 3);
    // An orders topic with a different partition count.
    let skewed =
        setup.with(&format!("topics.orders=orders-skewed-{}", setup.name)).with("topics.partitions=2");
    let out = skewed.cli(&["topics", "create"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut worker = skewed.with("topics.partitions=3").spawn_worker();
    let status = worker.wait_exit(Duration::from_secs(60));
    assert!(!status.success());
    let log = worker.log_text();
    assert!(log.contains("must have the same partition count") && log.contains("(3 partitions)"), "{log}");
}

#[test]
fn bad_configuration_stops_with_the_key_and_the_fix() {
    let setup = Setup::new("badconfig", 1);
    let out = setup.with("lifecycle.at_risk_days=500").cli(&["worker"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lifecycle.at_risk_days") && err.contains("churn_days"), "{err}");

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "[kafka.librdkafka_options]\n\"enable.auto.commit\" = \"true\"\n").unwrap();
    let out = setup.cli(&["--config", file.path().to_str().unwrap(), "worker"]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("enable.auto.commit"), "{err}");

    // /sql on, its token missing from the environment: no start, and the fix.
    let out = setup.with("sql.token_env=SEGSTREAM_TEST_UNSET_TOKEN").cli(&["worker"]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SEGSTREAM_TEST_UNSET_TOKEN") && err.contains("sql.listen"), "{err}");

    // A segment definitions file whose RFM table leaves buyers without a
    // segment: no start, the file, the segment and the fix named.
    let definitions = tempfile::NamedTempFile::new().unwrap();
    let builtin =
        std::fs::read_to_string(crate::support::repo_root().join("crates/segstream-segments/segments.toml"))
            .unwrap();
    let catch_all = "[[rfm.table]]\nname = \"others\"\nr = [1, 5]\nf = [1, 5]\nm = [1, 5]";
    std::fs::write(definitions.path(), builtin.replacen(catch_all, "", 1)).unwrap();
    let path = definitions.path().to_str().unwrap();
    let out = setup.with(&format!("segments.definitions={path}")).cli(&["worker"]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(path) && err.contains("rfm.table") && err.contains("add a last row"), "{err}");
}

/// The changes topic is gone for longer than the transaction timeout
/// (deleted, as by a mistaken cleanup, and made again): the worker does not
/// exit and commits nothing meanwhile. Its transactions fail (or the broker
/// aborts them on their timeout, which looks like a fence to librdkafka and
/// is told apart from a twin by the transaction's age), and each time it
/// goes back to its committed state and tries again with a producer queue
/// far smaller than the input's output, and `/healthz` says it is stuck.
/// Once the topic is back, every change is committed exactly once and
/// `/healthz` is 200 again.
#[test]
fn an_unavailable_output_holds_the_worker_back_and_nothing_is_lost_or_doubled_when_it_returns() {
    let _keep = crate::support::KeepLogsOnPanic;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("small-queue.toml");
    // A producer queue far smaller than the input's output.
    std::fs::write(&file, "[kafka.librdkafka_options]\n\"queue.buffering.max.messages\" = \"1000\"\n")
        .unwrap();
    let mut setup = Setup::new("outage", 2)
        .with("worker.transaction_timeout_ms=3000")
        .with("worker.batch_max_events=500")
        .with("checkpoint.interval_ms=0")
        .with("health.stall_ms=5000");
    let customers: Vec<String> = (0..10_000).map(|i| format!("out-{i}")).collect();
    let orders: Vec<_> = customers
        .iter()
        .map(|c| crate::support::order_record(c, &format!("{c}-0"), 1_704_103_200_000))
        .collect();
    let producer = setup.producer();
    setup.config_file = Some(file);
    let mut worker = setup.spawn_worker();
    let addr = worker.wait_ready(Duration::from_secs(60));
    let changes_topic = setup.topic("changes");
    setup.delete_topic(&changes_topic);
    produce(&producer, &setup.topic("orders"), &orders);

    std::thread::sleep(Duration::from_secs(20));
    let metrics = http_get(&addr, "/metrics").1;
    assert!(worker.exited().is_none(), "the worker rides the outage out:\n{}", worker.log_text());
    let failed = metric(&metrics, "segstream_transactions_total{result=\"aborted\"}")
        + metric(&metrics, "segstream_transactions_total{result=\"renewed\"}");
    assert!(failed >= 1.0, "transactions that could not complete were aborted:\n{metrics}");
    assert!(setup.read(&changes_topic, 1, Duration::from_secs(1)).is_empty(), "nothing committed");
    // Stuck for health.stall_ms counts from the first failed transaction,
    // which a loaded machine reaches later: the outage lasts until it is seen.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (status, body) = loop {
        let (status, body) = http_get(&addr, "/healthz");
        if status == 503 || std::time::Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status, 503, "alive but stuck for longer than health.stall_ms: {body}");
    assert!(
        ["has not advanced", "nothing has been committed", "transactions have failed"]
            .iter()
            .any(|s| body.contains(s)),
        "{body}"
    );

    let out = setup.cli(&["topics", "create"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records = setup.read(&changes_topic, 10_000, Duration::from_secs(120));
    let ids: std::collections::BTreeSet<String> = records
        .iter()
        .map(|r| SegmentChange::from_avro(r.payload.as_deref().unwrap()).unwrap().event_id)
        .collect();
    assert_eq!((records.len(), ids.len()), (10_000, 10_000), "every customer new, once");
    assert!(worker.exited().is_none(), "the worker carried on by itself");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while http_get(&addr, "/healthz").0 != 200 {
        assert!(std::time::Instant::now() < deadline, "healthy again once it progresses");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(worker.terminate(Duration::from_secs(30)).0.success());
}

/// An undecodable record close to the broker's size limit (999,900 bytes)
/// becomes a dead letter cut to `worker.dead_letter_max_bytes`, with its
/// size as received in a header, instead of one the producer refuses (which
/// would fail the transaction again after every restart); the records
/// after it are processed.
#[test]
fn a_record_near_the_size_limit_is_dead_lettered_cut_to_fit_and_the_worker_goes_on() {
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
    let setup = Setup::new("huge", 1);
    let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
        segstream_kafka::producer_config(&setup.config(), None)
            .unwrap()
            .set("message.max.bytes", "1048576")
            .create()
            .unwrap();
    let huge = vec![b'x'; 999_900];
    producer.send(BaseRecord::to(&setup.topic("orders")).key("h").payload(huge.as_slice())).expect("enqueue");
    producer.flush(Duration::from_secs(30)).expect("flush");
    let after = crate::support::order_record("after-huge", "o-1", 1_704_103_200_000);
    produce(&setup.producer(), &setup.topic("orders"), &[after]);

    let mut worker = setup.spawn_worker();
    let addr = worker.wait_ready(Duration::from_secs(60));
    let dead = setup.read(&setup.topic("dlq"), 1, Duration::from_secs(60));
    let changes = setup.read(&setup.topic("changes"), 1, Duration::from_secs(60));
    let metrics = http_get(&addr, "/metrics").1;
    assert!(worker.exited().is_none(), "the worker goes on:\n{}", worker.log_text());
    assert!(worker.terminate(Duration::from_secs(20)).0.success());
    assert_eq!(dead.len(), 1);
    let kept = dead[0].payload.as_deref().unwrap();
    assert!(kept.len() <= 524_288 && kept.len() > 500_000 && huge.starts_with(kept), "{}", kept.len());
    assert_eq!(dead[0].header("segstream.original.size"), Some("999900"));
    assert_eq!(dead[0].header("segstream.error.code"), Some("unknown_format"));
    assert_eq!(changes.len(), 1, "the order after it is processed");
    assert_eq!(metric(&metrics, "segstream_transactions_total{result=\"aborted\"}"), 0.0);
}

/// `/sql` is on its own listener behind a bearer token, read-only by
/// construction and bounded: statements that would
/// write or read files are refused with a 4xx and write nothing, a runaway
/// query is cancelled at its timeout while the pipeline goes on committing,
/// an answer past the row limit is refused, and a query can be POSTed.
#[test]
fn sql_requires_its_token_refuses_writes_and_file_reads_and_cancels_a_runaway_query_while_the_pipeline_goes_on()
 {
    let setup = Setup::new("sqlsafe", 1).with("sql.timeout_ms=2000").with("sql.max_rows=5");
    let customers: Vec<String> = (0..10).map(|i| format!("sq-{i}")).collect();
    let orders: Vec<_> = customers
        .iter()
        .map(|c| crate::support::order_record(c, &format!("{c}-0"), 1_704_103_200_000))
        .collect();
    produce(&setup.producer(), &setup.topic("orders"), &orders);
    let mut worker = setup.spawn_worker();
    let addr = worker.wait_ready(Duration::from_secs(60));
    let sql = worker.sql_addr();
    setup.read(&setup.topic("changes"), 10, Duration::from_secs(60));

    let enc = |q: &str| q.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
    // Customer data is on its own listener, behind the token.
    let count = format!("/sql?q={}", enc("SELECT count(*) FROM features"));
    assert_eq!(http_get(&addr, &count).0, 404, "/sql is not on the metrics listener");
    assert_eq!(http_get(&sql, &count).0, 401, "no token");
    let wrong = crate::support::request(&sql, "GET", &count, "Authorization: Bearer test-token-3f9\r\n", "");
    assert_eq!(wrong.0, 401, "a wrong token: {}", wrong.1);
    assert_eq!(sql_get(&sql, &count).0, 200);

    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("stolen.csv");
    let attacks = [
        format!("COPY (SELECT * FROM features) TO '{}' STORED AS CSV", target.display()),
        "CREATE EXTERNAL TABLE secrets (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'".to_owned(),
        "INSERT INTO features SELECT * FROM features".to_owned(),
        "SET datafusion.execution.batch_size = 1".to_owned(),
        "DROP TABLE features".to_owned(),
    ];
    for q in &attacks {
        let (status, body) = sql_get(&sql, &format!("/sql?q={}", enc(q)));
        assert!((400..500).contains(&status), "{q} → {status} {body}");
        assert!(!body.contains("root:"), "{q} read a file: {body}");
    }
    assert!(!target.exists(), "nothing written");
    let (status, body) = sql_get(&sql, &format!("/sql?q={}", enc("SELECT customer_id FROM features")));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("more than 5 rows"), "{body}");

    // A runaway query is cancelled; the pipeline commits an order meanwhile.
    let runaway = std::thread::spawn({
        let sql = sql.clone();
        let q = enc(
            "SELECT count(*) FROM generate_series(1, 100000000000) a JOIN generate_series(1, 100000000000) b ON a.value = b.value",
        );
        move || {
            let started = std::time::Instant::now();
            let answer = sql_get(&sql, &format!("/sql?q={q}"));
            (answer, started.elapsed())
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    produce(
        &setup.producer(),
        &setup.topic("orders"),
        &[crate::support::order_record("sq-late", "o-late", 1_704_103_300_000)],
    );
    assert_eq!(
        setup.read(&setup.topic("changes"), 11, Duration::from_secs(30)).len(),
        11,
        "committed meanwhile"
    );
    let ((status, body), took) = runaway.join().unwrap();
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("cancelled") && took < Duration::from_secs(15), "{body} after {took:?}");

    let (status, body) =
        crate::support::sql_post(&sql, "/sql?format=json", "SELECT count(*) AS n FROM features");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"n\":11"), "{body}");
    assert!(worker.terminate(Duration::from_secs(20)).0.success());
}

/// A record on another partition than Kafka's default partitioner gives
/// its key (as from a librdkafka client left on its CRC32 default) is
/// dead-lettered with code `wrong_partition`: the worker owning that
/// partition does not hold the customer's state.
#[test]
fn a_record_on_another_partition_than_its_key_gives_is_dead_lettered() {
    use rdkafka::producer::{BaseRecord, Producer};
    let setup = Setup::new("placement", 2);
    let (key, payload) = crate::support::order_record("placed-c", "o-1", 1_704_103_200_000);
    let right = segstream_kafka::partition_for(key.as_bytes(), 2);
    let (p, orders) = (setup.producer(), setup.topic("orders"));
    for partition in [1 - right, right] {
        let record = BaseRecord::to(&orders).key(key.as_str()).payload(payload.as_slice());
        p.send(record.partition(partition)).expect("enqueue");
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    let mut worker = setup.spawn_worker();
    let addr = worker.wait_ready(Duration::from_secs(60));
    let dead = setup.read(&setup.topic("dlq"), 1, Duration::from_secs(60));
    let changes = setup.read(&setup.topic("changes"), 1, Duration::from_secs(60));
    let metrics = http_get(&addr, "/metrics").1;
    assert!(worker.terminate(Duration::from_secs(20)).0.success());
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header("segstream.error.code"), Some("wrong_partition"));
    assert_eq!(dead[0].header("segstream.source.partition"), Some((1 - right).to_string().as_str()));
    assert!(dead[0].header("segstream.error.message").unwrap().contains("murmur2_random"));
    assert_eq!(changes.len(), 1, "the record on its key's partition is processed");
    let line = format!(
        "segstream_dead_letters_total{{code=\"wrong_partition\",topic=\"{}\"}}",
        setup.topic("orders")
    );
    assert_eq!(metric(&metrics, &line), 1.0, "counted by code:\n{metrics}");
}

/// A worker reaches a broker through SASL/SCRAM, its password from the
/// environment (librdkafka's dotted key written with `_`, so no file holds
/// the secret), and reads an input batch compressed with zstd.
#[test]
fn a_worker_reaches_a_sasl_scram_listener_with_its_secret_from_the_environment_and_reads_zstd_input() {
    use rdkafka::producer::ThreadedProducer;
    let _keep = crate::support::KeepLogsOnPanic;
    let plain = Setup::new("sasl", 1);
    let secure = plain
        .with(&format!("kafka.bootstrap_servers={}", crate::support::Broker::shared().sasl_bootstrap))
        .with("kafka.librdkafka_options.security_protocol=SASL_PLAINTEXT")
        .with("kafka.librdkafka_options.sasl_mechanisms=SCRAM-SHA-256")
        .with("kafka.librdkafka_options.sasl_username=segstream");
    let password = "SEGSTREAM__KAFKA__LIBRDKAFKA_OPTIONS__SASL_PASSWORD";

    let mut zstd = segstream_kafka::producer_config(&plain.config(), None).unwrap();
    zstd.set("compression.type", "zstd").set("linger.ms", "100");
    let producer: ThreadedProducer<_> = zstd.create().unwrap();
    let orders: Vec<_> = (0..50)
        .map(|i| crate::support::order_record(&format!("z-{i}"), "o1", 1_704_103_200_000 + i * 1000))
        .collect();
    produce(&producer, &plain.topic("orders"), &orders);

    let mut worker = secure.with_env(password, "segstream-secret").spawn_worker();
    worker.wait_ready(Duration::from_secs(60));
    let changes = plain.read(&plain.topic("changes"), 50, Duration::from_secs(60));
    assert_eq!(changes.len(), 50, "every order of the zstd batch was read over SASL");
    assert!(worker.terminate(Duration::from_secs(20)).0.success());
    assert!(!worker.log_text().contains("segstream-secret"), "the secret is not logged");
}

/// A producer cannot pass the future check by stamping a record dated 2099
/// with its event time: the input topics refuse a producer timestamp more
/// than `time.max_future_ms` ahead of the broker's clock.
#[test]
fn the_input_topics_refuse_a_producer_timestamp_far_in_the_future() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let setup = Setup::new("stamp2099", 1);
    let topic = setup.topic("clickstream");
    assert_eq!(setup.topic_config(&topic, "message.timestamp.after.max.ms").as_deref(), Some("86400000"));
    let producer: FutureProducer =
        segstream_kafka::producer_config(&setup.config(), None).unwrap().create().unwrap();
    let time = 4_070_908_800_000; // 2099-01-01
    let payload = click_at("c-2099", time);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let record = FutureRecord::to(&topic).key("c-2099").payload(&payload).timestamp(time);
    let (error, _) = runtime.block_on(producer.send(record, Duration::from_secs(30))).expect_err("refused");
    assert!(format!("{error:?}").contains("InvalidTimestamp"), "{error:?}");
}
