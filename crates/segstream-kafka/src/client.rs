use rdkafka::ClientConfig;
use segstream_config::Config;

use crate::error::KafkaIoError;

/// Consumer settings exactly-once depends on, with the reason.
const CONSUMER_ENFORCED: &[(&str, &str, &str)] = &[
    ("enable.auto.commit", "false", "offsets are committed inside the output transaction"),
    ("enable.auto.offset.store", "false", "offsets are committed inside the output transaction"),
    ("isolation.level", "read_committed", "aborted upstream transactions must not reach the state"),
    (
        "partition.assignment.strategy",
        "cooperative-sticky",
        "the group assigns clickstream only and the worker adds orders partition i to clickstream partition i; a rebalance moves only the partitions that change owner, and the worker commits and checkpoints them before they go",
    ),
    ("auto.offset.reset", "earliest", "a new partition is read from its start, state is rebuilt by replay"),
    (
        "enable.partition.eof",
        "true",
        "a lane counts as idle only once the consumer says it is at the end of its log",
    ),
];

/// Producer settings exactly-once depends on.
const PRODUCER_ENFORCED: &[(&str, &str, &str)] = &[
    ("enable.idempotence", "true", "retries must not duplicate change records"),
    ("acks", "all", "a change is acknowledged only once replicated"),
];

/// Fetch settings of the input consumers, chosen for latency and
/// throughput: librdkafka's defaults back off 1 s when its local queue is
/// full, which left a worker reading a backlog at a fifth of what the
/// broker serves. None of the guarantees depends on them:
/// `[kafka.librdkafka_options]` overrides each.
const INPUT_FETCH_DEFAULTS: &[(&str, &str)] = &[
    // Fetch again 10 ms after the local queue was full, not 1 s.
    ("fetch.queue.backoff.ms", "10"),
    // A fetch answers as soon as a record is there, waits at most 100 ms
    // for one on a quiet partition (default 500 ms).
    ("fetch.wait.max.ms", "100"),
];

/// Keys that identify the client and must come from segstream's own config.
const OWNED_KEYS: &[(&str, &str)] = &[
    ("bootstrap.servers", "set kafka.bootstrap_servers instead"),
    ("group.id", "set kafka.group_id instead"),
    ("transactional.id", "set worker.instance_id instead"),
    ("transaction.timeout.ms", "set worker.transaction_timeout_ms instead"),
    ("group.instance.id", "set worker.instance_id instead (workers are static group members)"),
    ("session.timeout.ms", "set worker.session_timeout_ms instead"),
];

fn base(config: &Config, enforced: &[(&str, &str, &str)]) -> Result<ClientConfig, KafkaIoError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.kafka.bootstrap_servers);
    for (key, value) in &config.kafka.librdkafka_options {
        if let Some((_, required, why)) =
            CONSUMER_ENFORCED.iter().chain(PRODUCER_ENFORCED).find(|(k, _, _)| k == key)
        {
            return Err(KafkaIoError::ProtectedOption {
                key: key.clone(),
                required: (*required).to_owned(),
                why,
            });
        }
        if let Some((_, fix)) = OWNED_KEYS.iter().find(|(k, _)| k == key) {
            return Err(KafkaIoError::ProtectedOption {
                key: key.clone(),
                required: "its own setting".into(),
                why: fix,
            });
        }
        c.set(key, value);
    }
    for (key, value, _) in enforced {
        c.set(*key, *value);
    }
    Ok(c)
}

/// Configuration of the worker's group member, which subscribes to the
/// clickstream topic: static membership (`group.instance.id` from
/// `worker.instance_id`), the worker's session timeout, end-of-partition
/// events.
pub fn consumer_config(config: &Config) -> Result<ClientConfig, KafkaIoError> {
    let mut c = base(config, CONSUMER_ENFORCED)?;
    c.set("group.id", &config.kafka.group_id);
    c.set("group.instance.id", config.instance_id());
    let session = config.worker.session_timeout_ms;
    c.set("session.timeout.ms", session.to_string());
    c.set_if_absent("heartbeat.interval.ms", &(session / 3).max(100).to_string());
    c.set_if_absent("statistics.interval.ms", "5000");
    input_fetch_defaults(&mut c);
    Ok(c)
}

/// Configuration of a consumer the worker assigns partitions to itself (the
/// orders lane, the decisions topic, tail probes): not a group member,
/// `read_committed`, end-of-partition events, never commits.
pub fn assigned_consumer_config(config: &Config) -> Result<ClientConfig, KafkaIoError> {
    let mut c = base(config, CONSUMER_ENFORCED)?;
    c.remove("partition.assignment.strategy");
    // librdkafka wants a group id for a consumer; this one never joins it.
    c.set("group.id", format!("{}-assigned", config.kafka.group_id));
    c.set_if_absent("statistics.interval.ms", "5000");
    input_fetch_defaults(&mut c);
    Ok(c)
}

/// Producer configuration; transactional when `transactional_id` is given.
/// Keys are hashed with murmur2, as Java clients do, so records we produce
/// land on the same partitions a Java producer would choose.
pub fn producer_config(
    config: &Config,
    transactional_id: Option<&str>,
) -> Result<ClientConfig, KafkaIoError> {
    let mut c = base(config, PRODUCER_ENFORCED)?;
    c.set_if_absent("partitioner", "murmur2_random");
    c.set_if_absent("linger.ms", "5");
    if let Some(id) = transactional_id {
        c.set("transactional.id", id);
        c.set("transaction.timeout.ms", config.worker.transaction_timeout_ms.to_string());
    }
    Ok(c)
}

/// Configuration of a plain reader (watch, subscribers' examples, tests):
/// `read_committed`, no offset commits, its own group id.
pub fn reader_config(config: &Config, group_id: &str) -> Result<ClientConfig, KafkaIoError> {
    let mut c = base(config, &[])?;
    c.set("group.id", group_id);
    c.set("isolation.level", "read_committed");
    c.set("enable.auto.commit", "false");
    c.set("enable.partition.eof", "false");
    Ok(c)
}

/// The worker's transactional id: stable per group and instance, so a
/// restarted worker fences its previous incarnation.
pub fn transactional_id(config: &Config) -> String {
    format!("segstream-{}-{}", config.kafka.group_id, config.instance_id())
}

fn input_fetch_defaults(c: &mut ClientConfig) {
    for (key, value) in INPUT_FETCH_DEFAULTS {
        c.set_if_absent(key, value);
    }
}

trait SetIfAbsent {
    fn set_if_absent(&mut self, key: &str, value: &str);
}

impl SetIfAbsent for ClientConfig {
    fn set_if_absent(&mut self, key: &str, value: &str) {
        if self.get(key).is_none() {
            self.set(key, value);
        }
    }
}

/// The partition Kafka's default partitioner picks for a key among
/// `partitions` (Java clients, and librdkafka with `murmur2_random`, which
/// [`producer_config`] sets): `murmur2(key) & 0x7fffffff mod partitions`.
/// Replay uses it to put each customer on the partition a live run saw it on.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    // Kafka's murmur2 seed.
    let hash = murmur2::murmur2(key, 0x9747_b28c) & 0x7fff_ffff;
    i32::try_from(hash % partitions.max(1).unsigned_abs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_land_on_the_partition_a_java_producer_picks() {
        // Kafka's UtilsTest: murmur2("21") = -973932308.
        assert_eq!(murmur2::murmur2(b"21", 0x9747_b28c) as i32, -973_932_308);
        assert_eq!(partition_for(b"21", 6), ((-973_932_308_i32 & 0x7fff_ffff) % 6));
    }

    #[test]
    fn protected_options_are_refused_with_the_reason() {
        let mut config = Config::default();
        config.kafka.librdkafka_options.insert("isolation.level".into(), "read_uncommitted".into());
        let err = consumer_config(&config).expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("isolation.level") && text.contains("read_committed"), "{text}");
    }

    #[test]
    fn passthrough_options_reach_the_client_and_enforced_ones_win() {
        let mut config = Config::default();
        config.kafka.librdkafka_options.insert("socket.timeout.ms".into(), "1234".into());
        let c = consumer_config(&config).expect("config");
        assert_eq!(c.get("socket.timeout.ms"), Some("1234"));
        assert_eq!(c.get("partition.assignment.strategy"), Some("cooperative-sticky"));
        let p = producer_config(&config, Some("tx")).expect("config");
        assert_eq!((p.get("acks"), p.get("transactional.id")), (Some("all"), Some("tx")));
    }

    #[test]
    fn the_group_member_is_static_and_the_assigned_consumers_are_not_members() {
        let mut config = Config::default();
        config.worker.instance_id = "w-7".into();
        config.worker.session_timeout_ms = 6_000;
        let c = consumer_config(&config).expect("config");
        assert_eq!(c.get("group.instance.id"), Some("w-7"));
        assert_eq!(
            (c.get("session.timeout.ms"), c.get("heartbeat.interval.ms")),
            (Some("6000"), Some("2000"))
        );
        assert_eq!(c.get("enable.partition.eof"), Some("true"));
        let a = assigned_consumer_config(&config).expect("config");
        assert_eq!((a.get("group.instance.id"), a.get("isolation.level")), (None, Some("read_committed")));
    }

    #[test]
    fn inputs_fetch_again_soon_unless_told_otherwise() {
        let mut config = Config::default();
        let c = assigned_consumer_config(&config).expect("config");
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("10"));
        config.kafka.librdkafka_options.insert("fetch.queue.backoff.ms".into(), "500".into());
        let c = consumer_config(&config).expect("config");
        assert_eq!((c.get("fetch.queue.backoff.ms"), c.get("fetch.wait.max.ms")), (Some("500"), Some("100")));
    }

    #[test]
    fn session_and_instance_come_from_segstream_config() {
        let mut config = Config::default();
        config.kafka.librdkafka_options.insert("session.timeout.ms".into(), "45000".into());
        let text = consumer_config(&config).expect_err("refused").to_string();
        assert!(text.contains("worker.session_timeout_ms"), "{text}");
    }

    #[test]
    fn identity_keys_must_come_from_segstream_config() {
        let mut config = Config::default();
        config.kafka.librdkafka_options.insert("group.id".into(), "x".into());
        assert!(producer_config(&config, None).expect_err("refused").to_string().contains("kafka.group_id"));
    }
}
