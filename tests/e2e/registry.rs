//! A schema registry: input from the standard Confluent serializers, with
//! the ids the registry assigned, and outputs under registered ids.

use std::time::Duration;

use segstream_events::{SegmentChange, wire};

use crate::support::{Broker, KeepLogsOnPanic, SchemaRegistry, Setup, http_get, metric, order_record};

/// An output record read through the fixed id of its schema, after
/// checking the id it carries is the registered one.
fn change(payload: &[u8], registered: u32) -> SegmentChange {
    assert_eq!(wire::schema_id(payload), Some(registered), "the output carries the registered id");
    let mut fixed = payload.to_vec();
    wire::set_schema_id(&mut fixed, segstream_events::schema::SEGMENT_CHANGES_SCHEMA_ID);
    SegmentChange::from_avro(&fixed).unwrap()
}

/// Orders written by confluent-kafka's AvroSerializer (the serializer
/// registers its schema, one field newer than ours, and the registry
/// assigns the id) are decoded; an id the registry does not have is
/// dead-lettered; the outputs carry the ids the registry gave segstream's
/// schemas. Then records with a new schema id wait while the registry is
/// down (the starting worker waits for it) and while it answers 503 to
/// schema reads: the worker holds them (nothing is processed or
/// dead-lettered), stops cleanly on SIGTERM meanwhile, and the next worker
/// processes them once the registry serves again.
#[test]
fn confluent_serializer_records_decode_through_the_registry_and_an_outage_pauses_instead_of_dead_lettering() {
    let _keep = KeepLogsOnPanic;
    let mut registry = SchemaRegistry::start();
    let setup = Setup::new("registry", 2).with(&format!("schema_registry.url={}", registry.url()));
    let bootstrap = &Broker::shared().bootstrap;
    let orders = setup.topic("orders");
    let id = registry.produce_orders(bootstrap, &orders, 20, "sr", "coupon_code");
    assert!(id > 100, "the registry's id, not a fixed one: {id}");
    // Framed with an id nobody registered (and the fixed id 2 of this build
    // means nothing once a registry is set).
    let (key, mut unknown) = order_record("sr-unknown", "o1", 1_704_103_200_000);
    wire::set_schema_id(&mut unknown, 999);
    let fixed = order_record("sr-fixed", "o1", 1_704_103_200_000);
    assert_eq!(wire::schema_id(&fixed.1), Some(segstream_events::schema::ORDERS_SCHEMA_ID));
    crate::support::produce(&setup.producer(), &orders, &[(key, unknown), fixed]);

    let mut worker = setup.spawn_worker();
    worker.wait_ready(Duration::from_secs(60));
    let subject = format!("/subjects/{}-value/versions/latest", setup.topic("changes"));
    let (status, body) = http_get(&registry.addr(), &subject);
    assert_eq!(status, 200, "segstream registered its output schema: {body}");
    let registered = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"].as_u64().unwrap() as u32;
    let changes: Vec<SegmentChange> = setup
        .read(&setup.topic("changes"), 20, Duration::from_secs(60))
        .iter()
        .map(|r| change(r.payload.as_deref().unwrap(), registered))
        .collect();
    assert_eq!(changes.len(), 20);
    assert!(
        changes.iter().all(|c| c.customer_id.as_str().starts_with("sr-") && c.segment == "new"),
        "{changes:?}"
    );
    let dead = setup.read(&setup.topic("dlq"), 2, Duration::from_secs(30));
    let codes: Vec<&str> = dead.iter().map(|r| r.header("segstream.error.code").unwrap()).collect();
    assert_eq!(codes, ["unknown_schema_id", "unknown_schema_id"]);
    assert!(worker.terminate(Duration::from_secs(30)).0.success());

    // A new upstream schema version, then the registry cannot serve
    // schemas: first down altogether (the worker waits before it starts),
    // then answering 503 to reads once the worker runs (it holds the records).
    let newer = registry.produce_orders(bootstrap, &orders, 10, "sr2", "gift_wrap");
    assert_ne!(newer, id);
    registry.stop();
    let mut worker = setup.spawn_worker();
    let addr = worker.http_addr(Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    assert!(worker.exited().is_none(), "the worker waits for the registry:\n{}", worker.log_text());
    registry.restart();
    registry.set_reads(false);
    std::thread::sleep(Duration::from_secs(8));
    assert!(worker.exited().is_none(), "the worker holds the records:\n{}", worker.log_text());
    let metrics = http_get(&addr, "/metrics").1;
    let dead = format!("segstream_dead_letters_total{{code=\"unknown_schema_id\",topic=\"{orders}\"}}");
    assert_eq!(metric(&metrics, &dead), 0.0, "nothing dead-lettered during the outage");
    assert!(
        setup.read(&setup.topic("changes"), 21, Duration::from_secs(2)).len() == 20,
        "nothing processed yet"
    );
    assert!(worker.log_text().contains("waiting for it"), "{}", worker.log_text());
    // SIGTERM ends the wait: a clean stop, the held records left for the next worker.
    assert!(worker.terminate(Duration::from_secs(20)).0.success(), "{}", worker.log_text());
    let mut worker = setup.spawn_worker();
    worker.http_addr(Duration::from_secs(60));
    registry.set_reads(true);
    let all = setup.read(&setup.topic("changes"), 30, Duration::from_secs(60));
    assert_eq!(all.len(), 30, "the held records are processed once the registry answers");
    assert_eq!(
        setup.read(&setup.topic("dlq"), 3, Duration::from_secs(5)).len(),
        2,
        "none of them dead-lettered"
    );
    assert!(worker.terminate(Duration::from_secs(30)).0.success());
}

/// The same against a real schema registry (Confluent, Karapace, Apicurio's
/// ccompat API, Redpanda) when `SEGSTREAM_TEST_SCHEMA_REGISTRY_URL` names
/// one; skipped otherwise (none can be installed on the build machines).
#[test]
fn confluent_serializer_records_decode_through_a_real_registry_when_one_is_given() {
    let Ok(url) = std::env::var("SEGSTREAM_TEST_SCHEMA_REGISTRY_URL") else {
        eprintln!("skipped: set SEGSTREAM_TEST_SCHEMA_REGISTRY_URL to run it against a real registry");
        return;
    };
    let _keep = KeepLogsOnPanic;
    let setup = Setup::new("realregistry", 2).with(&format!("schema_registry.url={url}"));
    let bootstrap = &Broker::shared().bootstrap;
    let orders = setup.topic("orders");
    let id = crate::support::produce_avro_orders(bootstrap, &url, &orders, 20, "rr", "coupon_code");
    let mut worker = setup.spawn_worker();
    worker.wait_ready(Duration::from_secs(60));
    let changes = setup.read(&setup.topic("changes"), 20, Duration::from_secs(60));
    assert_eq!(changes.len(), 20, "records with the registry's id {id} decoded");
    assert!(setup.read(&setup.topic("dlq"), 1, Duration::from_secs(3)).is_empty());
    assert!(worker.terminate(Duration::from_secs(30)).0.success());
}

/// `segstream generate` with a registry configured registers the input
/// schemas and frames its records with the registry's ids: the worker
/// decodes all of them.
#[test]
fn generated_avro_input_carries_the_registry_ids() {
    let registry = SchemaRegistry::start();
    let setup = Setup::new("registrygen", 2).with(&format!("schema_registry.url={}", registry.url()));
    let out = setup.cli(&["generate", "--customers", "20", "--days", "5"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let subject = format!("/subjects/{}-value/versions/latest", setup.topic("orders"));
    assert_eq!(http_get(&registry.addr(), &subject).0, 200, "the generator registered the orders schema");
    let mut worker = setup.spawn_worker();
    worker.wait_ready(Duration::from_secs(60));
    let changes = setup.read(&setup.topic("changes"), 20, Duration::from_secs(60));
    assert!(changes.len() >= 20, "every customer gets a stage: {}", changes.len());
    assert!(setup.read(&setup.topic("dlq"), 1, Duration::from_secs(3)).is_empty(), "nothing dead-lettered");
    assert!(worker.terminate(Duration::from_secs(30)).0.success());
}
