//! Right to be forgotten: `segstream forget` and the erasures topic.

use std::time::{Duration, Instant};

use segstream_events::EventTime;

use crate::support::{KeepLogsOnPanic, Setup, WorkerProc, http_get, metric, order_record, produce, sql_get};

const T0: i64 = 1_704_103_200_000;

/// The customers the worker's live state holds, in order.
fn customers(sql: &str) -> Vec<String> {
    let q = "SELECT%20customer_id%20FROM%20features%20ORDER%20BY%20customer_id";
    let (status, body) = sql_get(sql, &format!("/sql?format=json&q={q}"));
    assert_eq!(status, 200, "{body}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(body.trim()).unwrap();
    rows.iter().map(|r| r["customer_id"].as_str().unwrap().to_owned()).collect()
}

fn wait_customers(sql: &str, want: &[&str], worker: &WorkerProc) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while customers(sql) != want {
        assert!(Instant::now() < deadline, "{:?} != {want:?}:\n{}", customers(sql), worker.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The tombstone-or-not of each customer's last record on `customer-segments`.
fn last_is_tombstone(setup: &Setup, customer: &str, at_least: usize) -> bool {
    let members = setup.read(&setup.topic("members"), at_least, Duration::from_secs(30));
    members.iter().rfind(|r| r.key.as_deref() == Some(customer)).is_some_and(|r| r.payload.is_none())
}

/// `segstream forget` erases customers, whether a worker runs or not: a
/// worker that restores a checkpoint taken before the erasure drops the
/// customer from it, a running worker drops the customer at once, and each
/// writes the tombstone that ends the customer's memberships on
/// `customer-segments`. After a SIGKILL the next worker restores that old
/// checkpoint again and replays the log, which still holds the customers'
/// orders: they stay gone. An order placed after the erasure starts the
/// customer anew.
#[test]
fn an_erased_customer_is_gone_from_state_and_memberships_and_stays_gone_after_a_sigkill() {
    let _keep = KeepLogsOnPanic;
    // Checkpoints only at shutdown: the one the later workers restore predates the erasures.
    let setup = Setup::new("erasure", 1).with("checkpoint.interval_ms=600000");
    let orders = setup.topic("orders");
    let p = setup.producer();
    produce(&p, &orders, &["gone-a", "gone-b", "gone-c"].map(|c| order_record(c, &format!("{c}-o1"), T0)));
    let mut first = setup.spawn_worker();
    first.wait_ready(Duration::from_secs(60));
    wait_customers(&first.sql_addr(), &["gone-a", "gone-b", "gone-c"], &first);
    assert!(first.terminate(Duration::from_secs(30)).0.success());

    // Erased while no worker runs.
    let out = setup.cli(&["forget", "gone-b"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut second = setup.spawn_worker();
    let addr = second.wait_ready(Duration::from_secs(60));
    let sql = second.sql_addr();
    wait_customers(&sql, &["gone-a", "gone-c"], &second);
    assert!(second.log_text().contains("erased customers dropped from the restored checkpoint"));
    assert!(last_is_tombstone(&setup, "gone-b", 4), "gone-b's memberships end in a tombstone");

    // Erased while the worker runs.
    let out = setup.cli(&["forget", "gone-c"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_customers(&sql, &["gone-a"], &second);
    let metrics = http_get(&addr, "/metrics").1;
    assert_eq!(metric(&metrics, "segstream_erasures_total{result=\"dropped_state\"}"), 1.0, "{metrics}");
    assert!(last_is_tombstone(&setup, "gone-c", 5), "gone-c's memberships end in a tombstone");
    let log = second.log_text();
    assert!(!log.contains("gone-b") && !log.contains("gone-c"), "no customer id in the log at info:\n{log}");

    second.kill();
    let mut third = setup.spawn_worker();
    third.wait_ready(Duration::from_secs(90));
    let sql = third.sql_addr();
    wait_customers(&sql, &["gone-a"], &third);

    // Back after the erasure: a new customer record.
    let later = EventTime::now().millis() + 60_000;
    produce(&p, &orders, &[order_record("gone-b", "gone-b-o2", later)]);
    wait_customers(&sql, &["gone-a", "gone-b"], &third);
    let q = "SELECT%20lifetime_orders%20FROM%20features%20WHERE%20customer_id%20%3D%20'gone-b'";
    let (_, body) = sql_get(&sql, &format!("/sql?format=json&q={q}"));
    assert_eq!(body.trim(), r#"[{"lifetime_orders":1}]"#, "only the order after the erasure");
    assert!(third.terminate(Duration::from_secs(30)).0.success());
}
