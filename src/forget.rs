//! `segstream forget`: asks every worker to erase customers (right to be
//! forgotten), through the erasures topic.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use segstream_config::Config;
use segstream_events::{CustomerId, ErasureRequest, EventTime};

#[derive(Debug, Args)]
pub(crate) struct ForgetArgs {
    /// Customer ids to erase.
    #[arg(required = true)]
    customers: Vec<String>,
}

pub(crate) async fn run(args: ForgetArgs, config: Config) -> anyhow::Result<()> {
    let topic = config.topics.erasures.clone();
    let request = ErasureRequest { requested_at: EventTime::now() };
    let customers: Vec<CustomerId> = args.customers.iter().map(|c| CustomerId::new(c.trim())).collect();
    anyhow::ensure!(
        customers.iter().all(|c| !c.as_str().is_empty()),
        "an empty customer id cannot be erased"
    );
    let producer: ThreadedProducer<DefaultProducerContext> =
        segstream_kafka::producer_config(&config, None)?.create().context("creating the producer")?;
    // Blocking sends and flush: off the async runtime.
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let value = request.to_json();
        for c in &customers {
            producer
                .send(BaseRecord::to(&topic).key(c.as_str()).payload(value.as_slice()))
                .map_err(|(e, _)| e)
                .with_context(|| format!("sending an erasure to {topic}"))?;
        }
        producer.flush(Duration::from_secs(30)).with_context(|| format!("writing erasures to {topic}"))?;
        eprintln!(
            "erasure of {} customer(s) requested on {topic} as of {}: workers drop their state and memberships and ignore their events up to then",
            customers.len(),
            request.requested_at
        );
        Ok(())
    })
    .await?
}
