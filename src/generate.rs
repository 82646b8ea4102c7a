//! `segstream generate`: synthetic traffic to Kafka or to JSON-lines files.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::NaiveDate;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use segstream_config::Config;
use segstream_events::schema::{CLICKSTREAM_AVSC, ORDERS_AVSC};
use segstream_events::{EventTime, PayloadFormat, encode_click, encode_order};
use segstream_generator::{Event, Generator, GeneratorOptions, Persona};

/// Where generated events go.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Target {
    /// The configured clickstream and orders topics.
    Kafka,
    /// clickstream.jsonl and orders.jsonl in --out.
    Files,
}

/// Payload encoding on Kafka.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    /// Confluent wire format, Avro binary.
    Avro,
    /// JSON objects.
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct GenerateArgs {
    /// Number of customers.
    #[arg(long, default_value_t = 1000)]
    customers: u32,
    /// Random seed: the same seed gives the same events.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// First simulated day (UTC), YYYY-MM-DD.
    #[arg(long, default_value = "2024-01-01")]
    start: String,
    /// Number of simulated days. Event time runs as fast as --rate allows,
    /// far faster than wall time: a year of history takes seconds.
    #[arg(long, default_value_t = 540)]
    days: u32,
    /// Maximum events per second of wall time (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Where to write.
    #[arg(long, value_enum, default_value_t = Target::Kafka)]
    to: Target,
    /// Output directory for --to files.
    #[arg(long, default_value = "generated")]
    out: PathBuf,
    /// Payload encoding for --to kafka.
    #[arg(long, value_enum, default_value_t = Format::Avro)]
    format: Format,
}

/// Where events are written.
trait Sink {
    fn write(&mut self, event: &Event) -> anyhow::Result<()>;
    fn finish(&mut self) -> anyhow::Result<()>;
}

struct KafkaSink {
    producer: ThreadedProducer<DefaultProducerContext>,
    clickstream: String,
    orders: String,
    format: PayloadFormat,
    /// With a schema registry: the ids it gave the click and order schemas.
    registered: Option<(u32, u32)>,
}

impl Sink for KafkaSink {
    fn write(&mut self, event: &Event) -> anyhow::Result<()> {
        let (topic, mut payload, id) = match event {
            Event::Click(c) => {
                (&self.clickstream, encode_click(c, self.format)?, self.registered.map(|r| r.0))
            }
            Event::Order(o) => (&self.orders, encode_order(o, self.format)?, self.registered.map(|r| r.1)),
        };
        if let Some(id) = id {
            segstream_events::wire::set_schema_id(&mut payload, id);
        }
        let key = event.customer().as_str().as_bytes();
        loop {
            let record = BaseRecord::to(topic).key(key).payload(&payload);
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    _,
                )) => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => bail!("producing to {topic}: {e}"),
            }
        }
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.producer.flush(Duration::from_secs(60)).context("flushing the producer")
    }
}

struct FileSink {
    clicks: BufWriter<File>,
    orders: BufWriter<File>,
}

impl Sink for FileSink {
    fn write(&mut self, event: &Event) -> anyhow::Result<()> {
        match event {
            Event::Click(c) => {
                serde_json::to_writer(&mut self.clicks, c)?;
                self.clicks.write_all(b"\n")?;
            }
            Event::Order(o) => {
                serde_json::to_writer(&mut self.orders, o)?;
                self.orders.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.clicks.flush()?;
        self.orders.flush()?;
        Ok(())
    }
}

/// With `schema_registry.url`, registers the input schemas under
/// `<topic>-value`, as a Confluent serializer does; the ids to frame with.
fn register_inputs(config: &Config) -> anyhow::Result<Option<(u32, u32)>> {
    let Some(registry) = segstream_registry::Registry::from_config(&config.schema_registry)? else {
        return Ok(None);
    };
    let topics = &config.topics;
    let clicks = registry.register_value_schema(&topics.clickstream, CLICKSTREAM_AVSC)?;
    let orders = registry.register_value_schema(&topics.orders, ORDERS_AVSC)?;
    Ok(Some((clicks, orders)))
}

pub(crate) async fn run(args: GenerateArgs, config: Config) -> anyhow::Result<()> {
    // Generation and blocking produce calls stay off the async runtime.
    tokio::task::spawn_blocking(move || generate(args, config)).await.context("generator thread")?
}

fn generate(args: GenerateArgs, config: Config) -> anyhow::Result<()> {
    let start = NaiveDate::parse_from_str(&args.start, "%Y-%m-%d")
        .with_context(|| format!("--start {:?}: expected a date like 2024-01-01", args.start))?;
    let start_ms = start.and_hms_opt(0, 0, 0).map(|d| d.and_utc().timestamp_millis()).unwrap_or_default();
    if args.customers == 0 || args.days == 0 {
        bail!("--customers and --days must be at least 1");
    }
    let mut sink: Box<dyn Sink> = match args.to {
        Target::Kafka => {
            let producer =
                segstream_kafka::producer_config(&config, None)?.create().context("creating the producer")?;
            let format = match args.format {
                Format::Avro => PayloadFormat::Avro,
                Format::Json => PayloadFormat::Json,
            };
            Box::new(KafkaSink {
                producer,
                clickstream: config.topics.clickstream.clone(),
                orders: config.topics.orders.clone(),
                format,
                registered: if format == PayloadFormat::Avro { register_inputs(&config)? } else { None },
            })
        }
        Target::Files => {
            std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
            let open = |name: &str| -> anyhow::Result<BufWriter<File>> {
                let path = args.out.join(name);
                Ok(BufWriter::new(
                    File::create(&path).with_context(|| format!("creating {}", path.display()))?,
                ))
            };
            Box::new(FileSink { clicks: open("clickstream.jsonl")?, orders: open("orders.jsonl")? })
        }
    };
    let mut generator = Generator::new(GeneratorOptions {
        seed: args.seed,
        customers: args.customers,
        start: EventTime::from_millis(start_ms),
        days: args.days,
    });
    let bar = ProgressBar::new(u64::from(args.days)).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] day {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("generating");
    let began = Instant::now();
    let mut sent: u64 = 0;
    for day in generator.by_ref() {
        for event in &day.events {
            sink.write(event)?;
            sent += 1;
            if args.rate > 0 && sent.is_multiple_of(100) {
                // Pace to --rate: sleep until the wall clock catches up with the count.
                let due = Duration::from_secs_f64(sent as f64 / args.rate as f64);
                if let Some(wait) = due.checked_sub(began.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        bar.inc(1);
    }
    sink.finish()?;
    bar.finish_and_clear();
    let totals = generator.totals();
    let secs = began.elapsed().as_secs_f64();
    println!(
        "generated {sent} events in {secs:.1} s ({:.0}/s), seed {}",
        sent as f64 / secs.max(1e-9),
        args.seed
    );
    println!(
        "  clicks {}  orders {}  discounted {}  cancelled/refunded {}  abandoned carts {}",
        totals.clicks, totals.orders, totals.discounted_orders, totals.voided_orders, totals.abandoned_carts
    );
    println!("ground truth, customers per persona:");
    for p in Persona::ALL {
        println!("  {:<15} {}", p.as_str(), totals.personas.get(&p).copied().unwrap_or(0));
    }
    Ok(())
}
