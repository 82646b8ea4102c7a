//! Property tests of the input decoders, bounded in time (they run in
//! `make test`): no input makes them panic, and every valid event comes
//! back as written through Avro and through JSON.

use proptest::prelude::*;

use crate::schema::Schemas;
use crate::*;

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, empty included; short, so shrinking stays quick.
    proptest::string::string_regex("(?s).{0,12}").expect("regex")
}

fn optional(s: impl Strategy<Value = String>) -> impl Strategy<Value = Option<String>> {
    proptest::option::of(s)
}

prop_compose! {
    fn click()(
        event_id in text(),
        customer in "[a-z0-9-]{1,12}",
        session_id in optional(text()),
        kind in 0..ClickEventType::ALL.len(),
        time in 157_766_400_000_i64..4_102_444_800_000,
        device in optional(text()),
        page in optional(text()),
        product_id in optional(text()),
        category in optional(text()),
        price in proptest::option::of(0.0..1e9_f64),
        search_query in optional(text()),
    ) -> ClickEvent {
        ClickEvent {
            event_id,
            customer_id: CustomerId::new(&customer),
            session_id,
            event_type: ClickEventType::ALL[kind],
            event_time: EventTime::from_millis(time),
            device,
            page,
            product_id,
            category,
            price,
            search_query,
        }
    }
}

prop_compose! {
    fn order()(
        order_id in "[a-z0-9-]{1,12}",
        customer in "[a-z0-9-]{1,12}",
        time in 157_766_400_000_i64..4_102_444_800_000,
        status in 0..OrderStatus::ALL.len(),
        total in 0.0..1e9_f64,
        currency in "[A-Z]{3}",
        discount in 0.0..1e6_f64,
        item_count in 0..1000_i32,
        categories in proptest::collection::vec(text(), 0..4),
        payment_method in optional(text()),
    ) -> OrderEvent {
        OrderEvent {
            order_id,
            customer_id: CustomerId::new(&customer),
            event_time: EventTime::from_millis(time),
            status: OrderStatus::ALL[status],
            total,
            currency,
            discount_amount: discount,
            item_count,
            categories,
            payment_method,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, max_shrink_time: 10_000, ..ProptestConfig::default() })]

    /// Arbitrary bytes, and arbitrary bytes behind a valid header or an
    /// opening brace, give a decode error or an event: never a panic.
    #[test]
    fn no_payload_makes_the_decoders_panic(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        prefix in 0..3_usize,
    ) {
        let mut payload = match prefix {
            0 => Vec::new(),
            1 => vec![0, 0, 0, 0, 1],
            _ => b"{".to_vec(),
        };
        payload.extend(&body);
        let schemas = Schemas::builtin();
        // An error always carries a stable code (the dead letter's header).
        if let Err(e) = decode_click(&payload, schemas, Default::default()) {
            prop_assert!(!e.code().is_empty());
        }
        let mut as_order = payload.clone();
        if prefix == 1 {
            as_order[4] = 2;
        }
        if let Err(e) = decode_order(&as_order, schemas, Default::default()) {
            prop_assert!(!e.code().is_empty());
        }
    }

    /// A valid click comes back as written, through Avro and through JSON.
    #[test]
    fn every_valid_click_round_trips(event in click()) {
        for format in [PayloadFormat::Avro, PayloadFormat::Json] {
            let bytes = encode_click(&event, format).expect("encode");
            prop_assert_eq!(&decode_click(&bytes, Schemas::builtin(), Default::default()).expect("decode"), &event);
        }
    }

    /// A valid order comes back as written, through Avro and through JSON.
    #[test]
    fn every_valid_order_round_trips(event in order()) {
        for format in [PayloadFormat::Avro, PayloadFormat::Json] {
            let bytes = encode_order(&event, format).expect("encode");
            prop_assert_eq!(&decode_order(&bytes, Schemas::builtin(), Default::default()).expect("decode"), &event);
        }
    }

    /// Our field-by-field reader and apache_avro's generic one agree on
    /// every click body, valid or damaged (cut, a byte changed, bytes
    /// added): the same event or both an error, except that ours refuses
    /// a body cut short that apache_avro completes with nulls.
    #[test]
    fn the_click_reader_agrees_with_apache_avro_on_any_body(
        event in click(),
        damage in damage(),
    ) {
        let body = damaged(&encode_click(&event, PayloadFormat::Avro).expect("encode")[5..], &damage);
        let ours = crate::binary::read_click(&body).map(crate::binary::ClickView::into_owned);
        let reference = crate::codec::generic_click(&body);
        match (ours, reference) {
            (Ok(a), Ok(b)) => prop_assert!(same_click(&a, &b), "{:?} != {:?}", a, b),
            (Err(_), Err(_)) => {}
            // apache_avro reads a body cut before its optional fields as if
            // they were null; ours refuses it (a cut record is dead-lettered).
            (Err(e), Ok(_)) => prop_assert!(e.to_string().contains("ends early"), "{e}"),
            (Ok(a), Err(e)) => prop_assert!(false, "ours read {:?}, apache_avro refused: {}", a, e),
        }
    }

    /// The same for order bodies, arrays of categories in one or several
    /// blocks (a negative count carries the block's size, as Java writes).
    #[test]
    fn the_order_reader_agrees_with_apache_avro_on_any_body(
        event in order(),
        damage in damage(),
        blocks in any::<bool>(),
    ) {
        let mut body = encode_order(&event, PayloadFormat::Avro).expect("encode")[5..].to_vec();
        if blocks {
            body = in_sized_blocks(&event);
        }
        let body = damaged(&body, &damage);
        let ours = crate::binary::read_order(&body).map(crate::binary::OrderView::into_owned);
        if matches!(damage, Damage::None) {
            prop_assert_eq!(ours.as_ref().ok(), Some(&event));
        }
        let reference = crate::codec::generic_order(&body);
        match (ours, reference) {
            (Ok(a), Ok(b)) => prop_assert!(same_order(&a, &b), "{:?} != {:?}", a, b),
            (Err(_), Err(_)) => {}
            // apache_avro reads a body cut before its optional fields as if
            // they were null; ours refuses it (a cut record is dead-lettered).
            (Err(e), Ok(_)) => prop_assert!(e.to_string().contains("ends early"), "{e}"),
            (Ok(a), Err(e)) => prop_assert!(false, "ours read {:?}, apache_avro refused: {}", a, e),
        }
    }
}

/// What is done to a valid body.
#[derive(Debug, Clone)]
enum Damage {
    None,
    Cut(usize),
    Set(usize, u8),
    Append(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        Just(Damage::None),
        (0..200_usize).prop_map(Damage::Cut),
        (0..200_usize, any::<u8>()).prop_map(|(i, b)| Damage::Set(i, b)),
        proptest::collection::vec(any::<u8>(), 1..4).prop_map(Damage::Append),
    ]
}

fn damaged(body: &[u8], damage: &Damage) -> Vec<u8> {
    let mut body = body.to_vec();
    match damage {
        Damage::None => {}
        Damage::Cut(at) => body.truncate(at % (body.len() + 1)),
        Damage::Set(at, byte) => {
            let at = at % body.len().max(1);
            if let Some(b) = body.get_mut(at) {
                *b = *byte;
            }
        }
        Damage::Append(bytes) => body.extend(bytes),
    }
    body
}

/// Equal, NaN prices and amounts (a damaged double) equal to themselves.
fn same_f64(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits()
}

fn same_click(a: &ClickEvent, b: &ClickEvent) -> bool {
    let prices = match (a.price, b.price) {
        (Some(x), Some(y)) => same_f64(x, y),
        (x, y) => x.is_none() && y.is_none(),
    };
    prices && ClickEvent { price: None, ..a.clone() } == ClickEvent { price: None, ..b.clone() }
}

fn same_order(a: &OrderEvent, b: &OrderEvent) -> bool {
    same_f64(a.total, b.total)
        && same_f64(a.discount_amount, b.discount_amount)
        && OrderEvent { total: 0.0, discount_amount: 0.0, ..a.clone() }
            == OrderEvent { total: 0.0, discount_amount: 0.0, ..b.clone() }
}

fn zigzag(value: i64, out: &mut Vec<u8>) {
    let mut z = ((value << 1) ^ (value >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn string(s: &str, out: &mut Vec<u8>) {
    zigzag(s.len() as i64, out);
    out.extend(s.as_bytes());
}

/// An order body written by hand, its categories one per block, each
/// block's count negative and followed by its size in bytes.
fn in_sized_blocks(e: &OrderEvent) -> Vec<u8> {
    let mut out = Vec::new();
    string(&e.order_id, &mut out);
    string(e.customer_id.as_str(), &mut out);
    zigzag(e.event_time.millis(), &mut out);
    zigzag(e.status as i64, &mut out);
    out.extend(e.total.to_le_bytes());
    string(&e.currency, &mut out);
    out.extend(e.discount_amount.to_le_bytes());
    zigzag(i64::from(e.item_count), &mut out);
    for c in &e.categories {
        let mut item = Vec::new();
        string(c, &mut item);
        zigzag(-1, &mut out);
        zigzag(item.len() as i64, &mut out);
        out.extend(item);
    }
    zigzag(0, &mut out);
    match &e.payment_method {
        None => zigzag(0, &mut out),
        Some(p) => {
            zigzag(1, &mut out);
            string(p, &mut out);
        }
    }
    out
}

prop_compose! {
    fn change()(
        event_id in text(),
        customer in "[a-z0-9-]{1,12}",
        kind in 0..SegmentKind::ALL.len(),
        segment in text(),
        entered in any::<bool>(),
        previous_segment in optional(text()),
        cause in any::<i64>(),
        emit in any::<i64>(),
        trigger in 0..Trigger::ALL.len(),
        cause_event_id in optional(text()),
        rule_id in text(),
        rule_version in any::<i32>(),
        model_version in optional(text()),
        reason in text(),
        features in proptest::collection::btree_map(text(), -1e12..1e12_f64, 0..4),
    ) -> SegmentChange {
        SegmentChange {
            event_id,
            customer_id: CustomerId::new(&customer),
            kind: SegmentKind::ALL[kind],
            segment,
            change: if entered { ChangeType::Entered } else { ChangeType::Exited },
            previous_segment,
            cause_event_time: EventTime::from_millis(cause),
            emit_time: EventTime::from_millis(emit),
            trigger: Trigger::ALL[trigger],
            cause_event_id,
            rule_id,
            rule_version,
            model_version,
            reason,
            features,
        }
    }
}

prop_compose! {
    fn membership()(
        customer in "[a-z0-9-]{1,12}",
        segments in proptest::collection::vec((0..SegmentKind::ALL.len(), text(), any::<i64>()), 0..5),
        updated_at in any::<i64>(),
        rule_version in any::<i32>(),
    ) -> CustomerSegments {
        CustomerSegments {
            customer_id: CustomerId::new(&customer),
            segments: segments
                .into_iter()
                .map(|(kind, segment, since)| Membership {
                    kind: SegmentKind::ALL[kind],
                    segment,
                    since: EventTime::from_millis(since),
                })
                .collect(),
            updated_at: EventTime::from_millis(updated_at),
            rule_version,
        }
    }
}

/// `apache_avro`'s generic writer of a value of `schema`, framed as ours.
fn generic(schema: &apache_avro::Schema, id: u32, value: apache_avro::types::Value) -> Vec<u8> {
    crate::wire::frame(id, &crate::avro_fields::write_datum(schema, value).expect("generic writer"))
}

fn symbol(index: u32, name: &str) -> apache_avro::types::Value {
    apache_avro::types::Value::Enum(index, name.to_owned())
}

fn opt(v: Option<&String>) -> apache_avro::types::Value {
    crate::avro_fields::opt_string_value(&v.cloned())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, max_shrink_time: 10_000, ..ProptestConfig::default() })]

    /// The outputs written field by field are what apache_avro's writer
    /// makes of the same record (byte for byte; a map of more than one
    /// entry is compared through the reader, the generic writer's map
    /// order being a hash map's) and read back as written.
    #[test]
    fn changes_written_by_hand_are_apache_avros_bytes_and_read_back(c in change()) {
        use apache_avro::types::Value;
        let bytes = c.to_avro().expect("encode");
        prop_assert_eq!(&SegmentChange::from_avro(&bytes).expect("decode"), &c);
        if c.features.len() <= 1 {
            let value = Value::Record(vec![
                ("event_id".into(), Value::String(c.event_id.clone())),
                ("customer_id".into(), Value::String(c.customer_id.to_string())),
                ("kind".into(), symbol(c.kind as u32, c.kind.as_str())),
                ("segment".into(), Value::String(c.segment.clone())),
                ("change".into(), symbol(c.change as u32, c.change.as_str())),
                ("previous_segment".into(), opt(c.previous_segment.as_ref())),
                ("cause_event_time".into(), Value::TimestampMillis(c.cause_event_time.millis())),
                ("emit_time".into(), Value::TimestampMillis(c.emit_time.millis())),
                ("trigger".into(), symbol(c.trigger as u32, c.trigger.as_str())),
                ("cause_event_id".into(), opt(c.cause_event_id.as_ref())),
                ("rule_id".into(), Value::String(c.rule_id.clone())),
                ("rule_version".into(), Value::Int(c.rule_version)),
                ("model_version".into(), opt(c.model_version.as_ref())),
                ("reason".into(), Value::String(c.reason.clone())),
                (
                    "features".into(),
                    Value::Map(c.features.iter().map(|(k, v)| (k.clone(), Value::Double(*v))).collect()),
                ),
            ]);
            let reference = generic(&Schemas::builtin().change, crate::schema::SEGMENT_CHANGES_SCHEMA_ID, value);
            prop_assert_eq!(bytes, reference);
        }
    }

    #[test]
    fn memberships_written_by_hand_are_apache_avros_bytes_and_read_back(m in membership()) {
        use apache_avro::types::Value;
        let bytes = m.to_avro().expect("encode");
        prop_assert_eq!(&CustomerSegments::from_avro(&bytes).expect("decode"), &m);
        let segments = m
            .segments
            .iter()
            .map(|s| {
                Value::Record(vec![
                    ("kind".into(), symbol(s.kind as u32, s.kind.as_str())),
                    ("segment".into(), Value::String(s.segment.clone())),
                    ("since".into(), Value::TimestampMillis(s.since.millis())),
                ])
            })
            .collect();
        let value = Value::Record(vec![
            ("customer_id".into(), Value::String(m.customer_id.to_string())),
            ("segments".into(), Value::Array(segments)),
            ("updated_at".into(), Value::TimestampMillis(m.updated_at.millis())),
            ("rule_version".into(), Value::Int(m.rule_version)),
        ]);
        let reference =
            generic(&Schemas::builtin().membership, crate::schema::CUSTOMER_SEGMENTS_SCHEMA_ID, value);
        prop_assert_eq!(bytes, reference);
    }
}
