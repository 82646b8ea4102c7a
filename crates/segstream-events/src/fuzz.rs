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
}
