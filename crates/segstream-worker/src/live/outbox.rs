//! The transactional producer. Outputs go into a transaction opened at the
//! first record; a commit adds the input offsets (with the consumer group's
//! metadata, so a member that has been fenced by a rebalance cannot commit)
//! and commits. The producer is polled by the pipeline thread itself, and
//! the commit waits for the last delivery reports with short polls, so it
//! never sits out a fixed flush interval.
//!
//! Under `worker.processing_guarantee = "at_least_once"` the outputs
//! (changes, memberships, dead letters, tombstones) go through a second,
//! idempotent producer outside the transactions, readable as soon as the
//! broker has them; a commit first waits until every one sent before it is
//! delivered (a failed delivery aborts the commit, as in a transaction), so
//! committed offsets never cover an output that is not there.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DefaultProducerContext, DeliveryResult, Producer, ProducerContext, PurgeConfig,
};
use rdkafka::topic_partition_list::TopicPartitionList;
use segstream_config::{Config, ProcessingGuarantee};
use segstream_kafka::{KafkaIoError, producer_config, transactional_id};

use crate::error::WorkerError;

/// The producer was fenced by another one with its transactional id.
fn fenced(e: &KafkaError) -> bool {
    matches!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced))
}

/// One output record.
#[derive(Debug)]
pub(crate) struct Record<'a> {
    pub(crate) topic: &'a str,
    /// Explicit partition (the decisions topic), else by key.
    pub(crate) partition: Option<i32>,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) payload: Option<&'a [u8]>,
    pub(crate) headers: Option<OwnedHeaders>,
}

/// How a failed transaction step must be handled.
#[derive(Debug)]
pub(crate) enum TxFailure {
    /// Abort, bring the partitions back to their committed state, go on.
    Abortable(KafkaError),
    /// The consumer group moved on without this member (its session
    /// expired, or a rebalance completed): abort, drop the partitions'
    /// state, let the consumer rejoin.
    GroupFenced(KafkaError),
    /// The producer cannot go on, and no twin stopped it: most often the
    /// broker aborted a transaction that ran past its timeout (a broker
    /// restart, an output away) and bumped the producer's epoch, which
    /// librdkafka reports as fenced or as an invalid state. A new producer
    /// takes over (in [`Outbox::abort`]); the partitions go back to their
    /// committed state.
    Renew(KafkaError),
    /// The producer cannot go on: stop.
    Fatal(WorkerError),
}

/// Keeps the first failed delivery of the outputs sent outside
/// transactions, until the next commit takes it.
#[derive(Debug, Default)]
struct Deliveries {
    failed: Mutex<Option<KafkaError>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result
            && let Ok(mut failed) = self.failed.lock()
        {
            failed.get_or_insert_with(|| e.clone());
        }
    }
}

/// See the module documentation.
pub(crate) struct Outbox {
    producer: BaseProducer<DefaultProducerContext>,
    /// The outputs' producer outside transactions (at-least-once), if any.
    direct: Option<BaseProducer<Deliveries>>,
    /// When the open transaction began (`None`: none is open).
    opened: Option<Instant>,
    /// When the producer was renewed lately.
    renewals: Vec<Instant>,
    timeout: Duration,
    transactional_id: String,
    instance_id: String,
    config: Config,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("transactional_id", &self.transactional_id)
            .field("opened", &self.opened)
            .finish()
    }
}

impl Outbox {
    /// Creates the producer and fences any previous incarnation with the
    /// same transactional id (its open transaction is aborted, so
    /// `read_committed` readers are not held back by it).
    ///
    /// The last requests of the incarnation being fenced can still bump the
    /// producer epoch while this one starts: a fence at start-up is retried
    /// a few times with a new producer before it counts as a duplicate.
    pub(crate) fn new(config: &Config) -> Result<Self, WorkerError> {
        let transactional_id = transactional_id(config);
        let direct = match config.worker.processing_guarantee {
            ProcessingGuarantee::ExactlyOnce => None,
            ProcessingGuarantee::AtLeastOnce => Some(
                producer_config(config, None)?
                    .create_with_context(Deliveries::default())
                    .map_err(KafkaIoError::kafka("creating the outputs' producer"))?,
            ),
        };
        Ok(Self {
            producer: start(config, &transactional_id)?,
            direct,
            opened: None,
            renewals: Vec::new(),
            timeout: Duration::from_millis(config.worker.transaction_timeout_ms),
            transactional_id,
            instance_id: config.instance_id(),
            config: config.clone(),
        })
    }

    /// Replaces a producer whose transaction the broker aborted on its
    /// timeout (its epoch is stale) with a new one.
    fn renew(&mut self) -> Result<(), WorkerError> {
        self.opened = None;
        self.renewals.retain(|t| t.elapsed() < RENEWAL_WINDOW);
        self.renewals.push(Instant::now());
        self.producer = start(&self.config, &self.transactional_id)?;
        Ok(())
    }
    /// The transactional id, for logs.
    pub(crate) fn transactional_id(&self) -> &str {
        &self.transactional_id
    }

    /// Messages sent and not yet acknowledged by the broker.
    pub(crate) fn in_flight(&self) -> usize {
        let direct = self.direct.as_ref().map_or(0, Producer::in_flight_count);
        usize::try_from(self.producer.in_flight_count().saturating_add(direct)).unwrap_or(0)
    }

    /// True while a transaction is open.
    pub(crate) fn is_open(&self) -> bool {
        self.opened.is_some()
    }

    fn begin(&mut self) -> Result<(), TxFailure> {
        if self.opened.is_none() {
            self.producer.begin_transaction().map_err(|e| self.classify(e))?;
            self.opened = Some(Instant::now());
        }
        Ok(())
    }

    /// Sends a record in the open transaction (opening one if needed).
    pub(crate) fn send(&mut self, out: Record<'_>) -> Result<(), TxFailure> {
        self.begin()?;
        produce(&self.producer, out).map_err(|e| self.classify(e))
    }

    /// Sends an output record: in the open transaction, or at once outside
    /// it under at-least-once.
    pub(crate) fn send_output(&mut self, out: Record<'_>) -> Result<(), TxFailure> {
        match &self.direct {
            Some(direct) => produce(direct, out).map_err(TxFailure::Abortable),
            None => self.send(out),
        }
    }

    /// Serves delivery reports without waiting.
    pub(crate) fn poll(&self) {
        self.producer.poll(Duration::ZERO);
        if let Some(direct) = &self.direct {
            direct.poll(Duration::ZERO);
        }
    }

    /// Waits (at most the transaction timeout) until every output sent
    /// outside the transactions is delivered; the first failed delivery
    /// since the last call, if any, aborts the commit.
    fn deliver_outputs(&self) -> Result<(), TxFailure> {
        let Some(direct) = &self.direct else { return Ok(()) };
        serve_reports(direct, self.timeout);
        let failed = direct.context().failed.lock().ok().and_then(|mut f| f.take());
        if let Some(e) = failed {
            return Err(TxFailure::Abortable(e));
        }
        if direct.in_flight_count() > 0 {
            return Err(TxFailure::Abortable(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)));
        }
        Ok(())
    }

    /// Commits the open transaction (opening one if only offsets move) with
    /// the input offsets, under the consumer group's current generation.
    /// How long each part took: waiting for deliveries, adding the offsets,
    /// ending the transaction.
    pub(crate) fn commit(
        &mut self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<[(&'static str, Duration); 3], TxFailure> {
        let started = Instant::now();
        self.deliver_outputs()?;
        self.begin()?;
        // librdkafka's commit flushes first, and rust-rdkafka's flush sleeps in
        // 100 ms polls: wait for the last delivery reports here, in short polls.
        self.serve_reports();
        let delivered = Instant::now();
        if offsets.count() > 0 {
            self.retrying(|p, t| p.send_offsets_to_transaction(offsets, group, t))?;
        }
        let offsets_added = Instant::now();
        self.retrying(|p, t| p.commit_transaction(t))?;
        self.opened = None;
        Ok([
            ("deliveries", delivered - started),
            ("offsets", offsets_added - delivered),
            ("end", offsets_added.elapsed()),
        ])
    }

    /// Aborts the open transaction, if any (renewing the producer if the
    /// broker already aborted it on its timeout).
    pub(crate) fn abort(&mut self) -> Result<(), WorkerError> {
        if self.opened.is_none() {
            return Ok(());
        }
        // The records of an aborted transaction are dropped; librdkafka's
        // abort waits for their delivery reports, which only a poll serves
        // (while the broker is away they are still queued or in flight).
        self.producer.purge(PurgeConfig::default().queue().inflight());
        self.serve_reports();
        let result = self.retrying(|p, t| p.abort_transaction(t));
        self.opened = None;
        match result {
            Ok(()) => Ok(()),
            Err(TxFailure::Renew(e)) => {
                tracing::warn!(error = %e, "the producer cannot go on (its transaction was aborted by the broker): a new one takes over");
                self.renew()
            }
            Err(TxFailure::Fatal(e)) => Err(e),
            // Still timing out after the retries (the coordinator is away
            // longer, e.g. a broker restarting on a loaded machine): a new
            // producer's start fences this one, and the coordinator aborts
            // the open transaction when it is back.
            Err(TxFailure::Abortable(KafkaError::Transaction(e))) if e.is_retriable() => {
                tracing::warn!(error = %e, "the abort did not finish: a new producer takes over");
                self.renew()
            }
            Err(TxFailure::Abortable(source) | TxFailure::GroupFenced(source)) => {
                Err(WorkerError::Transaction { context: "aborting a transaction", source })
            }
        }
    }

    /// Tells whether another producer with this transactional id has
    /// fenced this one: opens a transaction, adds `offsets` to it (a round
    /// trip to the transaction coordinator under this producer's epoch)
    /// and aborts it. `DuplicateInstance` if fenced; other failures (the
    /// group coordinator refusing a fenced member's offsets) are what the
    /// probe expects.
    pub(crate) fn probe_fence(
        &mut self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<(), WorkerError> {
        if let Err(TxFailure::Fatal(e)) = self.begin() {
            return Err(e);
        }
        if let Err(TxFailure::Fatal(e)) =
            self.retrying(|p, t| p.send_offsets_to_transaction(offsets, group, t))
        {
            return Err(e);
        }
        self.abort()
    }

    /// Serves delivery reports until none is outstanding, for at most the
    /// transaction timeout.
    fn serve_reports(&self) {
        serve_reports(&self.producer, self.timeout);
    }

    /// Runs a transactional call, again while librdkafka says it may be
    /// retried (serving the delivery reports it may be waiting for).
    fn retrying(
        &self,
        call: impl Fn(&BaseProducer<DefaultProducerContext>, Duration) -> Result<(), KafkaError>,
    ) -> Result<(), TxFailure> {
        let mut attempts = 0;
        loop {
            match call(&self.producer, self.timeout) {
                Ok(()) => return Ok(()),
                Err(KafkaError::Transaction(e)) if e.is_retriable() && attempts < 5 => {
                    attempts += 1;
                    tracing::warn!(error = %e, attempts, "transaction step failed, retrying");
                    self.serve_reports();
                }
                Err(e) => return Err(self.classify(e)),
            }
        }
    }

    fn classify(&self, e: KafkaError) -> TxFailure {
        let code = e.rdkafka_error_code();
        let fatal = match &e {
            KafkaError::Transaction(t) => t.is_fatal(),
            _ => code == Some(RDKafkaErrorCode::Fatal),
        };
        if fatal {
            // The underlying reason of a fatal error is kept by the client.
            let reason = self.producer.client().fatal_error();
            let fenced = fenced(&e)
                || matches!(reason, Some((RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced, _)));
            // The broker aborts a transaction open longer than its timeout
            // and bumps the epoch: that looks fenced, but only a transaction
            // that old can have met it; a younger one was fenced by a twin.
            let expired = self.opened.is_some_and(|at| at.elapsed() >= self.timeout);
            let recent = self.renewals.iter().filter(|t| t.elapsed() < RENEWAL_WINDOW).count();
            if (fenced && !expired) || recent >= MAX_RENEWALS {
                tracing::error!(error = %e, reason = ?reason, renewals = recent, "fatal producer error");
                return TxFailure::Fatal(if fenced && !expired {
                    WorkerError::DuplicateInstance {
                        instance_id: self.instance_id.clone(),
                        seen_by: "transactional producer",
                    }
                } else {
                    WorkerError::Transaction { context: "a transaction (fatal producer error)", source: e }
                });
            }
            return TxFailure::Renew(e);
        }
        match code {
            Some(
                RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::FencedInstanceId
                | RDKafkaErrorCode::RebalanceInProgress,
            ) => TxFailure::GroupFenced(e),
            _ => TxFailure::Abortable(e),
        }
    }
}

/// Serves `producer`'s delivery reports until none is outstanding, for at
/// most `timeout`, in short polls.
fn serve_reports<C: ProducerContext>(producer: &BaseProducer<C>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while producer.in_flight_count() > 0 && Instant::now() < deadline {
        producer.poll(Duration::from_millis(1));
    }
}

/// Sends one record through `producer`, serving delivery reports while its
/// local queue is full.
fn produce<C: ProducerContext<DeliveryOpaque = ()>>(
    producer: &BaseProducer<C>,
    out: Record<'_>,
) -> Result<(), KafkaError> {
    let mut headers = out.headers;
    loop {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(out.topic);
        if let Some(p) = out.partition {
            record = record.partition(p);
        }
        if let Some(k) = out.key {
            record = record.key(k);
        }
        if let Some(p) = out.payload {
            record = record.payload(p);
        }
        if let Some(h) = headers.take() {
            record = record.headers(h);
        }
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                headers = back.headers;
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// More renewals of the producer than this within [`RENEWAL_WINDOW`] stop
/// the worker with the error (it is not transient).
const MAX_RENEWALS: usize = 5;
const RENEWAL_WINDOW: Duration = Duration::from_secs(600);

/// A transactional producer with transactions initialised: any previous
/// incarnation with the same transactional id is fenced and its open
/// transaction aborted. The last requests of an incarnation being fenced
/// can still bump the epoch meanwhile: a fence here is retried a few times
/// with a new producer before it counts as a duplicate.
fn start(
    config: &Config,
    transactional_id: &str,
) -> Result<BaseProducer<DefaultProducerContext>, WorkerError> {
    let timeout = Duration::from_millis(config.worker.transaction_timeout_ms);
    let mut attempt = 0;
    loop {
        let producer: BaseProducer<DefaultProducerContext> = producer_config(config, Some(transactional_id))?
            .create()
            .map_err(KafkaIoError::kafka("creating the producer"))?;
        match producer.init_transactions(timeout.max(Duration::from_secs(30))) {
            Ok(()) => return Ok(producer),
            Err(e) if fenced(&e) && attempt < 5 => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "fenced while starting; trying again");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) if fenced(&e) => {
                return Err(WorkerError::DuplicateInstance {
                    instance_id: config.instance_id(),
                    seen_by: "transactional producer",
                });
            }
            Err(source) => {
                return Err(WorkerError::Transaction { context: "initialising transactions", source });
            }
        }
    }
}
