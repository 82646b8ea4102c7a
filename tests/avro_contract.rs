//! The `.avsc` files are the contract: an independent Avro implementation
//! (Python fastavro, installed by `make test`) reads what segstream writes and
//! writes what segstream reads, from the schema files alone.

#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use segstream_events::schema::Schemas;
use segstream_events::{
    ChangeType, ClickEventType, CustomerId, CustomerSegments, EventTime, Membership, OrderStatus,
    SegmentChange, SegmentKind, Trigger, decode_click, decode_order,
};

fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".local/venv/bin/python");
    std::env::var_os("SEGSTREAM_PYTHON").map(PathBuf::from).unwrap_or(venv)
}

#[test]
fn a_standard_avro_library_reads_and_writes_our_topics_from_the_schema_files() {
    let python = python();
    assert!(
        python.exists(),
        "{} not found: run `make test`, which installs fastavro into .local/venv (or set SEGSTREAM_PYTHON)",
        python.display()
    );
    let work = tempfile::tempdir().unwrap();
    let change = SegmentChange {
        event_id: "id-1".into(),
        customer_id: CustomerId::new("c-42"),
        kind: SegmentKind::Lifecycle,
        segment: "at_risk".into(),
        change: ChangeType::Entered,
        previous_segment: Some("active".into()),
        cause_event_time: EventTime::from_millis(1_704_103_200_000),
        emit_time: EventTime::from_millis(1_704_103_200_500),
        trigger: Trigger::Timer,
        cause_event_id: None,
        rule_id: "lifecycle.at_risk".into(),
        rule_version: 1,
        model_version: None,
        reason: "no order for 91 days (at risk after 90)".into(),
        features: BTreeMap::from([("days_since_last_order".to_owned(), 91.0)]),
    };
    let members = CustomerSegments {
        customer_id: CustomerId::new("c-42"),
        segments: vec![Membership {
            kind: SegmentKind::Lifecycle,
            segment: "at_risk".into(),
            since: EventTime::from_millis(1_704_103_200_000),
        }],
        updated_at: EventTime::from_millis(1_704_103_200_000),
        rule_version: 1,
    };
    std::fs::write(work.path().join("segment-change.bin"), change.to_avro().unwrap()).unwrap();
    std::fs::write(work.path().join("customer-segments.bin"), members.to_avro().unwrap()).unwrap();

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(&python)
        .arg(root.join("scripts/avro_contract.py"))
        .arg(root.join("schemas"))
        .arg(work.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fastavro check failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let click = decode_click(
        &std::fs::read(work.path().join("click.bin")).unwrap(),
        Schemas::builtin(),
        Default::default(),
    )
    .unwrap();
    assert_eq!(
        (click.event_type, click.price, click.customer_id.as_str()),
        (ClickEventType::AddToCart, Some(12.5), "c-py")
    );
    let order = decode_order(
        &std::fs::read(work.path().join("order.bin")).unwrap(),
        Schemas::builtin(),
        Default::default(),
    )
    .unwrap();
    assert_eq!(
        (order.status, order.currency.as_str(), order.categories.len()),
        (OrderStatus::Refunded, "USD", 2)
    );
}
