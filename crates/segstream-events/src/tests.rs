use std::collections::BTreeMap;

use crate::schema::Schemas;
use crate::*;

fn click() -> ClickEvent {
    ClickEvent {
        event_id: "e-1".into(),
        customer_id: CustomerId::new("c-1"),
        session_id: Some("s-1".into()),
        event_type: ClickEventType::AddToCart,
        event_time: EventTime::from_millis(1_700_000_000_000),
        device: Some("mobile".into()),
        page: Some("/p/42".into()),
        product_id: Some("p-42".into()),
        category: Some("shoes".into()),
        price: Some(59.9),
        search_query: None,
    }
}

fn order() -> OrderEvent {
    OrderEvent {
        order_id: "o-1".into(),
        customer_id: CustomerId::new("c-1"),
        event_time: EventTime::from_millis(1_700_000_100_000),
        status: OrderStatus::Placed,
        total: 120.5,
        currency: "EUR".into(),
        discount_amount: 10.0,
        item_count: 3,
        categories: vec!["shoes".into(), "bags".into()],
        payment_method: Some("card".into()),
    }
}

#[test]
fn embedded_schemas_parse() {
    let s = Schemas::builtin();
    assert_eq!(s.click_ids(), vec![schema::CLICKSTREAM_SCHEMA_ID]);
    assert_eq!(s.order_ids(), vec![schema::ORDERS_SCHEMA_ID]);
}

#[test]
fn click_round_trips_through_avro_and_json() {
    for format in [PayloadFormat::Avro, PayloadFormat::Json] {
        let bytes = encode_click(&click(), format).expect("encode");
        assert_eq!(
            decode_click(&bytes, Schemas::builtin(), Default::default()).expect("decode"),
            click(),
            "{format:?}"
        );
    }
}

#[test]
fn order_round_trips_through_avro_and_json() {
    for format in [PayloadFormat::Avro, PayloadFormat::Json] {
        let bytes = encode_order(&order(), format).expect("encode");
        assert_eq!(
            decode_order(&bytes, Schemas::builtin(), Default::default()).expect("decode"),
            order(),
            "{format:?}"
        );
    }
}

#[test]
fn avro_payload_has_confluent_header() {
    let bytes = encode_click(&click(), PayloadFormat::Avro).expect("encode");
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, schema::CLICKSTREAM_SCHEMA_ID as u8]);
}

#[test]
fn json_with_minimal_fields_uses_schema_defaults() {
    let json =
        br#"{"order_id":"o","customer_id":"c","event_time":1700000000000,"status":"refunded","total":5.0}"#;
    let o = decode_order(json, Schemas::builtin(), Default::default()).expect("decode");
    assert_eq!((o.currency.as_str(), o.item_count, o.discount_amount), ("EUR", 1, 0.0));
}

fn code_of(payload: &[u8]) -> &'static str {
    decode_click(payload, Schemas::builtin(), Default::default()).expect_err("must be rejected").code()
}

#[test]
fn malformed_payloads_are_rejected_with_stable_codes() {
    let good = encode_click(&click(), PayloadFormat::Avro).expect("encode");
    assert_eq!(code_of(b""), "empty_payload");
    assert_eq!(code_of(b"\x07abc"), "unknown_format");
    assert_eq!(code_of(&[0, 0, 1]), "truncated_header");
    let mut wrong_id = good.clone();
    wrong_id[4] = 99;
    assert_eq!(code_of(&wrong_id), "unknown_schema_id");
    assert_eq!(code_of(&good[..good.len() - 3]), "invalid_avro");
    let mut trailing = good.clone();
    trailing.push(1);
    assert_eq!(code_of(&trailing), "invalid_avro");
    assert_eq!(code_of(b"{not json"), "invalid_json");
    let mut empty_customer = click();
    empty_customer.customer_id = CustomerId::new(" ");
    assert_eq!(
        code_of(&encode_click(&empty_customer, PayloadFormat::Avro).expect("encode")),
        "invalid_field"
    );
    let mut seconds = click();
    seconds.event_time = EventTime::from_millis(1_700_000_000);
    let out_of_range = "event_time_out_of_range";
    assert_eq!(code_of(&encode_click(&seconds, PayloadFormat::Json).expect("encode")), out_of_range);
    let mut micros = click();
    micros.event_time = EventTime::from_millis(1_700_000_000_000_000);
    assert_eq!(code_of(&encode_click(&micros, PayloadFormat::Avro).expect("encode")), out_of_range);
    let mut nan = click();
    nan.price = Some(f64::NAN);
    assert_eq!(code_of(&encode_click(&nan, PayloadFormat::Avro).expect("encode")), "invalid_field");
    assert_eq!(
        code_of(br#"{"event_id":"e","customer_id":"c","event_type":"teleport","event_time":1700000000000}"#),
        "invalid_json"
    );
}

/// A JSON error names the field it is about; a field the schema does not
/// have (added upstream first) is ignored.
#[test]
fn json_input_errors_name_the_field_and_unknown_fields_are_ignored() {
    let err = |text: &[u8]| {
        decode_click(text, Schemas::builtin(), Default::default()).expect_err("refused").to_string()
    };
    let wrong_type = err(br#"{"event_id":"e","customer_id":"c","event_type":"page_view","event_time":1700000000000,"price":"12"}"#);
    assert!(wrong_type.contains("`price`"), "{wrong_type}");
    let wrong_variant =
        err(br#"{"event_id":"e","customer_id":"c","event_type":"teleport","event_time":1700000000000}"#);
    assert!(wrong_variant.contains("`event_type`"), "{wrong_variant}");
    let missing = err(br#"{"event_id":"e","event_type":"page_view","event_time":1700000000000}"#);
    assert!(missing.contains("customer_id"), "{missing}");
    let extra = br#"{"event_id":"e","customer_id":"c","event_type":"page_view","event_time":1700000000000,"utm_source":"x"}"#;
    assert_eq!(
        decode_click(extra, Schemas::builtin(), Default::default()).expect("decoded").customer_id.as_str(),
        "c"
    );
}

#[test]
fn negative_order_amounts_are_rejected() {
    let mut o = order();
    o.total = -1.0;
    let bytes = encode_order(&o, PayloadFormat::Avro).expect("encode");
    let err = decode_order(&bytes, Schemas::builtin(), Default::default()).expect_err("negative total");
    assert!(err.to_string().contains("`total`"), "{err}");
}

#[test]
fn batch_decoding_keeps_good_rows_and_reports_bad_ones_with_coordinates() {
    let good = encode_click(&click(), PayloadFormat::Avro).expect("encode");
    let json = encode_click(&click(), PayloadFormat::Json).expect("encode");
    let records = [
        RawRecord { payload: Some(&good), partition: 3, offset: 10 },
        RawRecord { payload: Some(b"garbage"), partition: 3, offset: 11 },
        RawRecord { payload: None, partition: 3, offset: 12 },
        RawRecord { payload: Some(&json), partition: 3, offset: 13 },
    ];
    let decoded = decode_clicks(records, Schemas::builtin(), Default::default()).expect("arrow");
    assert_eq!(decoded.batch.len(), 2);
    assert_eq!(decoded.batch.record_batch().num_columns(), 13);
    let row = decoded.batch.row(1);
    assert_eq!((row.customer_id, row.offset, row.event_type), ("c-1", 13, ClickEventType::AddToCart));
    assert_eq!(row.price, Some(59.9));
    let bad: Vec<(i64, &str)> = decoded.rejected.iter().map(|r| (r.offset, r.error.code())).collect();
    assert_eq!(bad, vec![(11, "unknown_format"), (12, "empty_payload")]);
}

#[test]
fn order_batch_exposes_rows_and_categories_column() {
    let bytes = encode_order(&order(), PayloadFormat::Avro).expect("encode");
    let decoded = decode_orders(
        [RawRecord { payload: Some(&bytes), partition: 0, offset: 5 }],
        Schemas::builtin(),
        Default::default(),
    )
    .expect("arrow");
    let row = decoded.batch.row(0);
    assert_eq!((row.order_id, row.status, row.total, row.offset), ("o-1", OrderStatus::Placed, 120.5, 5));
    let categories = decoded.batch.record_batch().column_by_name("categories").expect("column");
    assert_eq!(categories.len(), 1);
}

#[test]
fn outputs_round_trip_through_avro() {
    let change = SegmentChange {
        event_id: "id".into(),
        customer_id: CustomerId::new("c-1"),
        kind: SegmentKind::Lifecycle,
        segment: "at_risk".into(),
        change: ChangeType::Entered,
        previous_segment: Some("active".into()),
        cause_event_time: EventTime::from_millis(1_700_000_000_000),
        emit_time: EventTime::from_millis(1_700_000_000_500),
        trigger: Trigger::Timer,
        cause_event_id: None,
        rule_id: "lifecycle.at_risk".into(),
        rule_version: 1,
        model_version: None,
        reason: "silence".into(),
        features: BTreeMap::from([("days_since_last_order".to_owned(), 91.0)]),
    };
    assert_eq!(SegmentChange::from_avro(&change.to_avro().expect("encode")).expect("decode"), change);
    let membership = CustomerSegments {
        customer_id: CustomerId::new("c-1"),
        segments: vec![Membership {
            kind: SegmentKind::Lifecycle,
            segment: "active".into(),
            since: EventTime::from_millis(1_700_000_000_000),
        }],
        updated_at: EventTime::from_millis(1_700_000_000_000),
        rule_version: 1,
    };
    assert_eq!(
        CustomerSegments::from_avro(&membership.to_avro().expect("encode")).expect("decode"),
        membership
    );
}

#[test]
fn event_times_order_like_their_milliseconds_and_an_optional_one_takes_eight_bytes() {
    let times: Vec<EventTime> = [i64::MIN + 1, -86_400_001, -1, 0, 1, 1_700_000_000_000, i64::MAX]
        .map(EventTime::from_millis)
        .to_vec();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    assert!(times.iter().all(|t| EventTime::from_millis(t.millis()) == *t));
    assert_eq!(EventTime::from_millis(-1).day(), -1);
    assert_eq!(EventTime::from_millis(i64::MIN).millis(), i64::MIN + 1, "the one value kept for None");
    assert_eq!(std::mem::size_of::<Option<EventTime>>(), 8);
    let json = serde_json::to_string(&EventTime::from_millis(-5)).expect("json");
    assert_eq!(json, "-5");
    assert_eq!(serde_json::from_str::<EventTime>(&json).expect("back"), EventTime::from_millis(-5));
}

#[test]
fn decision_records_round_trip_through_avro_with_every_action() {
    let at = Positions { clicks: 1_234, orders: 56 };
    let record = DecisionRecord {
        group_id: "g".into(),
        partition: 3,
        seq: 7,
        decisions: vec![
            Decision { at, action: DecisionAction::Alone { lane: Lane::Clicks, until: 1_300 } },
            Decision { at, action: DecisionAction::Alone { lane: Lane::Orders, until: 60 } },
            Decision {
                at: Positions { clicks: 1_300, orders: 60 },
                action: DecisionAction::Follow { stream_time: EventTime::from_millis(1_700_000_000_000) },
            },
            Decision {
                at: Positions { clicks: 1_300, orders: 60 },
                action: DecisionAction::Fire {
                    up_to: EventTime::from_millis(1_690_000_000_000),
                    count: 10_000,
                },
            },
            Decision {
                at: Positions { clicks: 1_300, orders: 60 },
                action: DecisionAction::Definitions { version: 3, text: "version = 3\n".into() },
            },
            Decision {
                at: Positions { clicks: 1_300, orders: 61 },
                action: DecisionAction::Model { version: 12, record: vec![0, 0, 0, 0, 9, 1, 2].into() },
            },
        ],
    };
    let bytes = record.to_avro().expect("encode");
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, schema::DECISIONS_SCHEMA_ID as u8]);
    assert_eq!(DecisionRecord::from_avro(&bytes).expect("decode"), record);
    let mut other = bytes.clone();
    other[4] = schema::SEGMENT_CHANGES_SCHEMA_ID as u8;
    assert!(DecisionRecord::from_avro(&other).is_err(), "another schema id is refused");
}

/// Records written before `fire_timers` existed (schema id 5) still read.
#[test]
fn a_decision_record_of_the_first_layout_reads_with_count_zero() {
    use apache_avro::types::Value;
    let decision = Value::Record(vec![
        ("clicks_position".into(), Value::Long(4)),
        ("orders_position".into(), Value::Long(2)),
        ("action".into(), Value::Enum(2, "follow_watermark".into())),
        ("value".into(), Value::Long(1_700_000_000_000)),
    ]);
    let value = Value::Record(vec![
        ("group_id".into(), Value::String("g".into())),
        ("partition".into(), Value::Int(1)),
        ("seq".into(), Value::Long(0)),
        ("decisions".into(), Value::Array(vec![decision])),
    ]);
    let body = crate::avro_fields::write_datum(&Schemas::builtin().decisions_v1, value).expect("encode v1");
    let back =
        DecisionRecord::from_avro(&wire::frame(schema::DECISIONS_V1_SCHEMA_ID, &body)).expect("decode");
    assert_eq!(
        back.decisions,
        [Decision {
            at: Positions { clicks: 4, orders: 2 },
            action: DecisionAction::Follow { stream_time: EventTime::from_millis(1_700_000_000_000) }
        }]
    );
}

/// Records written before `apply_definitions` existed (schema id 6) still read.
#[test]
fn a_decision_record_of_the_second_layout_reads() {
    use apache_avro::types::Value;
    let decision = Value::Record(vec![
        ("clicks_position".into(), Value::Long(4)),
        ("orders_position".into(), Value::Long(2)),
        ("action".into(), Value::Enum(3, "fire_timers".into())),
        ("value".into(), Value::Long(1_700_000_000_000)),
        ("count".into(), Value::Long(5)),
    ]);
    let value = Value::Record(vec![
        ("group_id".into(), Value::String("g".into())),
        ("partition".into(), Value::Int(1)),
        ("seq".into(), Value::Long(0)),
        ("decisions".into(), Value::Array(vec![decision])),
    ]);
    let body = crate::avro_fields::write_datum(&Schemas::builtin().decisions_v2, value).expect("encode v2");
    let back =
        DecisionRecord::from_avro(&wire::frame(schema::DECISIONS_V2_SCHEMA_ID, &body)).expect("decode");
    let action = DecisionAction::Fire { up_to: EventTime::from_millis(1_700_000_000_000), count: 5 };
    assert_eq!(back.decisions, [Decision { at: Positions { clicks: 4, orders: 2 }, action }]);
}

/// Records written before `apply_model` existed (schema id 7) still read.
#[test]
fn a_decision_record_of_the_third_layout_reads() {
    use apache_avro::types::Value;
    let decision = Value::Record(vec![
        ("clicks_position".into(), Value::Long(4)),
        ("orders_position".into(), Value::Long(2)),
        ("action".into(), Value::Enum(4, "apply_definitions".into())),
        ("value".into(), Value::Long(2)),
        ("count".into(), Value::Long(0)),
        ("definitions".into(), Value::Union(1, Box::new(Value::String("version = 2\n".into())))),
    ]);
    let value = Value::Record(vec![
        ("group_id".into(), Value::String("g".into())),
        ("partition".into(), Value::Int(1)),
        ("seq".into(), Value::Long(0)),
        ("decisions".into(), Value::Array(vec![decision])),
    ]);
    let body = crate::avro_fields::write_datum(&Schemas::builtin().decisions_v3, value).expect("encode v3");
    let back =
        DecisionRecord::from_avro(&wire::frame(schema::DECISIONS_V3_SCHEMA_ID, &body)).expect("decode");
    let action = DecisionAction::Definitions { version: 2, text: "version = 2\n".into() };
    assert_eq!(back.decisions, [Decision { at: Positions { clicks: 4, orders: 2 }, action }]);
}

#[test]
fn a_position_is_passed_once_either_lane_is_beyond_it() {
    let at = Positions { clicks: 10, orders: 5 };
    assert!(!at.passed(at));
    assert!(!Positions { clicks: 9, orders: 5 }.passed(at));
    assert!(Positions { clicks: 10, orders: 6 }.passed(at));
}

/// History from the 1990s decodes once the earliest date is lowered, and
/// the refusal names the range and the setting.
#[test]
fn the_earliest_event_time_is_a_setting_and_its_refusal_names_it() {
    let mut old = click();
    old.event_time = EventTime::from_millis(852_076_800_000); // 1997-01-01
    let bytes = encode_click(&old, PayloadFormat::Avro).expect("encode");
    let err = decode_click(
        &bytes,
        Schemas::builtin(),
        crate::InputRules {
            range: crate::EventTimeRange::from(EventTime::from_millis(946_684_800_000)),
            ..Default::default()
        },
    )
    .expect_err("before 2000");
    let text = err.to_string();
    assert!(
        text.contains("1997-01-01")
            && text.contains("2000-01-01")
            && text.contains("time.earliest_event_date"),
        "{text}"
    );
    assert_eq!(
        decode_click(&bytes, Schemas::builtin(), Default::default()).expect("the default admits 1997"),
        old
    );
}

/// A JSON field the schema does not have is ignored by default and, when
/// asked, refuses the payload naming the field.
#[test]
fn unknown_json_fields_are_ignored_or_refused_by_name() {
    let extra = br#"{"event_id":"e","customer_id":"c","event_type":"search","event_time":1700000000000,"coupon":"X"}"#;
    assert!(decode_click(extra, Schemas::builtin(), Default::default()).is_ok());
    let strict =
        crate::InputRules { unknown_json_fields: crate::UnknownJsonFields::Reject, ..Default::default() };
    let err = decode_click(extra, Schemas::builtin(), strict).expect_err("refused").to_string();
    assert!(err.contains("coupon") && err.contains("input.json_unknown_fields"), "{err}");
}
