//! Apache Kafka in: a consumer-group member that batches each partition's messages into raw
//! batches, and hands partitions over on rebalance without losing or repeating a record.
//!
//! Lanes are partition numbers. With the `range` assignor and topics of equal partition
//! counts, partition `p` of every topic goes to the same member, so a user's events (keyed by
//! user id) across the four EventSim topics meet in one lane and its plugin state.
//!
//! Positions are the lake's, not the group's: a lane resumes from the offsets in its furthest
//! commit record (`LakeReader::lane_checkpoints`), which are written atomically with the data
//! and state they produced. Offsets are also committed to the group, but only after the lake
//! commit is durable: for lag monitoring and for tools, never for correctness.
//!
//! Rebalance (eager protocol, in librdkafka's callback on the source thread): on revoke, the
//! batches still held are handed on, the pipeline commits and closes the lanes, and their
//! offsets are committed before the partitions are released; on assign, the pipeline opens the
//! lanes (restoring state) and the partitions start at the lanes' checkpointed offsets.
use super::{RawBatch, Source, SourceError, SourceEvent};
use crate::config::{KafkaConfig, KafkaFormat, KafkaStart};
use crate::decode::DeadLetter;
use crate::decode::avro::AvroDecoder;
use crate::sink::lake::LaneCheckpoint;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, producer::BaseProducer};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

type Events = mpsc::SyncSender<Result<SourceEvent, SourceError>>;

/// A partition's messages not yet handed on.
struct Pending {
    batch: RawBatch,
    since: Instant,
    /// Past the last message taken, including one that was rejected rather than batched.
    next_offset: i64,
}

/// What the rebalance callback and `next_batch` share (both run on the source thread).
#[derive(Default)]
struct Batches {
    pending: BTreeMap<(String, i32), Pending>,
    ready: VecDeque<RawBatch>,
    /// Per lane, the next offset of each `topic/partition` as of the batches handed on.
    positions: BTreeMap<u32, BTreeMap<String, i64>>,
    assigned: bool,
    assigned_at: Option<Instant>,
}

impl Batches {
    /// Turns a partition's pending messages into a batch that ends at a consistent cut.
    fn seal(&mut self, key: &(String, i32)) {
        let Some(Pending {
            mut batch,
            next_offset,
            ..
        }) = self.pending.remove(key)
        else {
            return;
        };
        let position = self.positions.entry(batch.lane).or_default();
        position.insert(batch.origin.clone(), next_offset);
        batch.position = Some(serde_json::to_value(&*position).expect("offsets serialise"));
        self.ready.push_back(batch);
    }

    fn seal_lanes(&mut self, lanes: &[u32]) {
        let keys: Vec<_> = self
            .pending
            .keys()
            .filter(|(_, p)| lanes.contains(&(*p as u32)))
            .cloned()
            .collect();
        for key in keys {
            self.seal(&key);
        }
    }
}

pub struct LaneContext {
    batches: Mutex<Batches>,
    events: Events,
    pipeline: String,
}

impl ClientContext for LaneContext {
    /// librdkafka's periodic statistics carry each assigned partition's consumer lag.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, stats) in &stats.partitions {
                if *partition < 0 || !stats.desired || stats.consumer_lag < 0 {
                    continue;
                }
                crate::metrics::CONSUMER_LAG
                    .with_label_values(&[self.pipeline.as_str(), topic, &partition.to_string()])
                    .set(stats.consumer_lag);
            }
        }
    }
}

impl ConsumerContext for LaneContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        let lanes: Vec<u32> = {
            let mut lanes: Vec<u32> = partitions
                .elements()
                .iter()
                .map(|e| e.partition() as u32)
                .collect();
            lanes.sort_unstable();
            lanes.dedup();
            lanes
        };
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assign(consumer, &lanes, partitions)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.revoke(consumer, &lanes),
            other => {
                tracing::warn!(error = ?other, "rebalance failed; releasing all partitions");
                let held: Vec<u32> = self.lock().positions.keys().copied().collect();
                self.revoke(consumer, &held);
            }
        }
    }
}

impl LaneContext {
    fn lock(&self) -> std::sync::MutexGuard<'_, Batches> {
        self.batches.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn assign(
        &self,
        consumer: &BaseConsumer<Self>,
        lanes: &[u32],
        partitions: &mut TopicPartitionList,
    ) {
        let (reply, answer) = mpsc::channel();
        let checkpoints: BTreeMap<u32, LaneCheckpoint> =
            match self.events.send(Ok(SourceEvent::Assigned {
                lanes: lanes.to_vec(),
                reply,
            })) {
                Ok(()) => answer.recv().unwrap_or_default(),
                Err(_) => BTreeMap::new(),
            };
        let mut batches = self.lock();
        let elements: Vec<(String, i32)> = partitions
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        for (topic, partition) in elements {
            let lane = partition as u32;
            let origin = format!("{topic}/{partition}");
            let offset = checkpoints
                .get(&lane)
                .and_then(|c| c.position.get(&origin))
                .and_then(serde_json::Value::as_i64);
            let offset = offset.map_or(Offset::Stored, Offset::Offset);
            tracing::info!(partition = %origin, ?offset, "assigned");
            let _ = partitions.set_partition_offset(&topic, partition, offset);
        }
        for &lane in lanes {
            let known = checkpoints
                .get(&lane)
                .and_then(|c| serde_json::from_value(c.position.clone()).ok())
                .unwrap_or_default();
            batches.positions.insert(lane, known);
        }
        batches.assigned = true;
        batches.assigned_at = Some(Instant::now());
        drop(batches);
        if let Err(e) = consumer.assign(partitions) {
            tracing::error!(error = %e, "cannot take the assigned partitions");
        }
    }

    /// Hands on what is held for `lanes`, waits until the pipeline has committed it, commits
    /// the offsets to the group and lets the partitions go.
    fn revoke(&self, consumer: &BaseConsumer<Self>, lanes: &[u32]) {
        let ready = {
            let mut batches = self.lock();
            batches.seal_lanes(lanes);
            std::mem::take(&mut batches.ready)
        };
        let mut pipeline_alive = true;
        for batch in ready {
            if self.events.send(Ok(SourceEvent::Batch(batch))).is_err() {
                pipeline_alive = false;
            }
        }
        if pipeline_alive && !lanes.is_empty() {
            let (reply, answer) = mpsc::channel();
            let positions = match self.events.send(Ok(SourceEvent::Revoked {
                lanes: lanes.to_vec(),
                reply,
            })) {
                Ok(()) => answer.recv().unwrap_or_default(),
                Err(_) => BTreeMap::new(),
            };
            if let Err(e) = commit_offsets(consumer, &positions, CommitMode::Sync) {
                tracing::warn!(error = %e, "committing offsets of revoked partitions to the group");
            }
        }
        let mut batches = self.lock();
        for lane in lanes {
            batches.positions.remove(lane);
        }
        batches.assigned = !batches.positions.is_empty();
        drop(batches);
        if let Err(e) = consumer.unassign() {
            tracing::warn!(error = %e, "releasing partitions");
        }
    }
}

/// Commits lane positions (`{"topic/partition": next_offset}` per lane) to the group.
fn commit_offsets(
    consumer: &BaseConsumer<LaneContext>,
    positions: &BTreeMap<u32, serde_json::Value>,
    mode: CommitMode,
) -> Result<(), rdkafka::error::KafkaError> {
    let mut list = TopicPartitionList::new();
    for position in positions.values() {
        let Some(offsets) = position.as_object() else {
            continue;
        };
        for (origin, offset) in offsets {
            let (Some((topic, partition)), Some(offset)) =
                (origin.rsplit_once('/'), offset.as_i64())
            else {
                continue;
            };
            let Ok(partition) = partition.parse() else {
                continue;
            };
            list.add_partition_offset(topic, partition, Offset::Offset(offset))?;
        }
    }
    if list.count() == 0 {
        return Ok(());
    }
    consumer.commit(&list, mode)
}

pub struct KafkaSource {
    consumer: BaseConsumer<LaneContext>,
    batch_rows: usize,
    max_batch_age: Duration,
    exit_when_idle: Option<Duration>,
    last_message: Instant,
    avro: Option<AvroDecoder>,
    durable: mpsc::Receiver<BTreeMap<u32, serde_json::Value>>,
    durable_sender: mpsc::Sender<BTreeMap<u32, serde_json::Value>>,
    /// Set by a signal: checked between polls, since a quiet stream never returns a batch.
    stop_requested: Option<Arc<AtomicBool>>,
    last_age_check: Instant,
}

fn client_config(brokers: &str, options: &BTreeMap<String, String>) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in options {
        config.set(key, value);
    }
    config
}

impl KafkaSource {
    pub fn new(
        kafka: &KafkaConfig,
        pipeline: &str,
        batch_rows: usize,
        events: Events,
        stop: Option<Arc<AtomicBool>>,
    ) -> Result<Self, SourceError> {
        let mut config = client_config(&kafka.brokers, &BTreeMap::new());
        config
            .set("group.id", &kafka.group)
            .set("client.id", format!("sluice-{pipeline}"))
            // Co-partitioning: partition p of every topic goes to the same member.
            .set("partition.assignment.strategy", "range")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                match kafka.start {
                    KafkaStart::Earliest => "earliest",
                    KafkaStart::Latest => "latest",
                },
            )
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "2000")
            // Bounds what librdkafka prefetches while the pipeline applies back pressure.
            .set("queued.max.messages.kbytes", "16384")
            // Once that queue is full, a partition's next fetch waited 1 s (the default): a
            // pipeline faster than that refill idled between bursts. Kafka → bronze on 2 cores
            // drained 1M events at ~80K events/s with both cores half idle, ~340K with this.
            .set("fetch.queue.backoff.ms", "10")
            .set("fetch.max.bytes", "16777216")
            .set("statistics.interval.ms", "5000");
        for (key, value) in &kafka.options {
            config.set(key, value);
        }
        let context = LaneContext {
            batches: Mutex::new(Batches::default()),
            events,
            pipeline: pipeline.to_string(),
        };
        let consumer: BaseConsumer<LaneContext> = config
            .create_with_context(context)
            .map_err(|e| SourceError::Kafka(format!("cannot create the consumer: {e}")))?;
        let topics: Vec<&str> = kafka.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| SourceError::Kafka(format!("cannot subscribe to {topics:?}: {e}")))?;
        let avro = match kafka.format {
            KafkaFormat::Json => None,
            KafkaFormat::Avro => Some(AvroDecoder::inline(&kafka.avro_schemas)?),
            KafkaFormat::ConfluentAvro => Some(AvroDecoder::registry(
                kafka.schema_registry.as_deref().unwrap_or_default(),
            )),
        };
        let (durable_sender, durable) = mpsc::channel();
        Ok(KafkaSource {
            consumer,
            batch_rows: batch_rows.max(1),
            max_batch_age: Duration::from_millis(kafka.max_batch_ms),
            exit_when_idle: kafka.exit_when_idle_ms.map(Duration::from_millis),
            last_message: Instant::now(),
            avro,
            durable,
            durable_sender,
            stop_requested: stop,
            last_age_check: Instant::now(),
        })
    }

    /// Adds a message to its partition's pending batch; a batch if one is ready.
    fn add(
        context: &LaneContext,
        avro: &mut Option<AvroDecoder>,
        batch_rows: usize,
        message: &rdkafka::message::BorrowedMessage<'_>,
    ) -> Option<RawBatch> {
        let topic = message.topic();
        let partition = message.partition();
        let payload = message.payload().unwrap_or_default();
        let key = (topic.to_string(), partition);
        let mut batches = context.lock();
        let pending = batches.pending.entry(key.clone()).or_insert_with(|| {
            let mut batch = RawBatch::new(topic, &format!("{topic}/{partition}"));
            batch.lane = partition as u32;
            Pending {
                batch,
                since: Instant::now(),
                next_offset: 0,
            }
        });
        pending.next_offset = message.offset() + 1;
        let batch = &mut pending.batch;
        match avro {
            None => batch.push(payload, message.offset()),
            Some(avro) => match avro.to_json(topic, payload) {
                Ok(json) => batch.push(&json, message.offset()),
                Err(reason) => {
                    batch.rejected.push(DeadLetter {
                        topic: topic.to_string(),
                        stage: "decode".into(),
                        plugin: None,
                        reason,
                        origin: batch.origin.clone(),
                        offset: Some(message.offset()),
                        raw: hex(payload),
                        bytes: Some(payload.to_vec()),
                    });
                }
            },
        }
        if batch.len() + batch.rejected.len() >= batch_rows {
            batches.seal(&key);
        }
        batches.ready.pop_front()
    }

    /// Seals partitions whose oldest pending message is older than `max_batch_age`, looking
    /// at most every 10 ms (not per message) and otherwise handing out sealed batches.
    fn seal_old(&mut self) -> Option<RawBatch> {
        let mut batches = self.consumer.context().lock();
        if self.last_age_check.elapsed() < Duration::from_millis(10) {
            return batches.ready.pop_front();
        }
        self.last_age_check = Instant::now();
        let old: Vec<_> = batches
            .pending
            .iter()
            .filter(|(_, p)| p.since.elapsed() >= self.max_batch_age)
            .map(|(k, _)| k.clone())
            .collect();
        for key in old {
            batches.seal(&key);
        }
        batches.ready.pop_front()
    }

    /// Whether every assigned partition has been read to its end (its high watermark), so an
    /// idle stream is drained rather than merely unreachable.
    fn caught_up(&self) -> bool {
        let Ok(assignment) = self.consumer.assignment() else {
            return false;
        };
        let batches = self.consumer.context().lock();
        if !batches.pending.is_empty() || !batches.ready.is_empty() {
            return false;
        }
        assignment.elements().iter().all(|element| {
            let (topic, partition) = (element.topic(), element.partition());
            let next = batches
                .positions
                .get(&(partition as u32))
                .and_then(|p| p.get(&format!("{topic}/{partition}")))
                .copied();
            match self
                .consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(5))
            {
                Ok((low, high)) => next.map_or(low >= high, |next| next >= high),
                Err(e) => {
                    tracing::info!(error = %e, "cannot tell whether {topic}/{partition} is drained");
                    false
                }
            }
        })
    }

    fn commit_durable(&self) {
        let mut latest = BTreeMap::new();
        while let Ok(positions) = self.durable.try_recv() {
            latest.extend(positions);
        }
        if latest.is_empty() {
            return;
        }
        if let Err(e) = commit_offsets(&self.consumer, &latest, CommitMode::Async) {
            tracing::warn!(error = %e, "committing durable offsets to the group");
        }
    }
}

impl Source for KafkaSource {
    fn next_batch(&mut self) -> Result<Option<RawBatch>, SourceError> {
        loop {
            if self
                .stop_requested
                .as_ref()
                .is_some_and(|s| s.load(Ordering::Relaxed))
            {
                self.stop();
                return Ok(None);
            }
            self.commit_durable();
            if let Some(batch) = self.seal_old() {
                return Ok(Some(batch));
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    self.last_message = Instant::now();
                    if message.payload().is_none() && message.key().is_none() {
                        tracing::debug!("empty message at {}", message.offset());
                    }
                    let added = Self::add(
                        self.consumer.context(),
                        &mut self.avro,
                        self.batch_rows,
                        &message,
                    );
                    if let Some(batch) = added {
                        return Ok(Some(batch));
                    }
                }
                // Broker down, partition moving…: librdkafka retries on its own; report it.
                Some(Err(e)) => tracing::warn!(error = %e, "kafka"),
                None => {
                    let Some(idle) = self.exit_when_idle else {
                        continue;
                    };
                    let (assigned, since) = {
                        let batches = self.consumer.context().lock();
                        (batches.assigned, batches.assigned_at)
                    };
                    let quiet = self.last_message.max(since.unwrap_or(self.last_message));
                    if assigned && quiet.elapsed() >= idle {
                        if self.caught_up() {
                            self.stop();
                            return Ok(None);
                        }
                        // Quiet but behind (a broker outage, say): keep waiting.
                        self.last_message = Instant::now();
                    }
                }
            }
        }
    }

    fn is_bounded(&self) -> bool {
        false
    }

    fn durable_positions(&self) -> Option<mpsc::Sender<BTreeMap<u32, serde_json::Value>>> {
        Some(self.durable_sender.clone())
    }

    /// Gives every lane back as a revocation would, so that whoever takes the partitions
    /// next resumes from a durable checkpoint of this instance's work.
    fn stop(&mut self) {
        let held: Vec<u32> = self
            .consumer
            .context()
            .lock()
            .positions
            .keys()
            .copied()
            .collect();
        self.consumer.context().revoke(&self.consumer, &held);
        self.commit_durable();
        self.consumer.unsubscribe();
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Counts failed deliveries, so a flush can tell whether every message arrived.
#[derive(Default)]
pub struct DeliveryCheck {
    failed: AtomicU64,
}

impl ClientContext for DeliveryCheck {}

impl ProducerContext for DeliveryCheck {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            tracing::warn!(%error, "delivery failed");
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub type CheckedProducer = BaseProducer<DeliveryCheck>;

pub fn producer(
    brokers: &str,
    options: &BTreeMap<String, String>,
) -> Result<CheckedProducer, SourceError> {
    let mut config = client_config(brokers, options);
    config
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("compression.type", "lz4")
        .set("partitioner", "murmur2_random");
    config
        .create_with_context(DeliveryCheck::default())
        .map_err(|e| SourceError::Kafka(format!("cannot create a producer for {brokers}: {e}")))
}

/// Sends a record, waiting while librdkafka's queue is full (back pressure).
pub fn send(
    producer: &CheckedProducer,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: Option<OwnedHeaders>,
) -> Result<(), SourceError> {
    let mut record = BaseRecord::to(topic).payload(payload);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(headers) = headers {
        record = record.headers(headers);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                back,
            )) => {
                record = back;
                producer.poll(Duration::from_millis(50));
            }
            Err((e, _)) => return Err(SourceError::Kafka(format!("producing to {topic}: {e}"))),
        }
    }
}

/// Waits until everything sent has been acknowledged; an error if anything was not.
pub fn flush(producer: &CheckedProducer) -> Result<(), SourceError> {
    producer
        .flush(Duration::from_secs(120))
        .map_err(|e| SourceError::Kafka(format!("flushing the producer: {e}")))?;
    let failed = producer.context().failed.swap(0, Ordering::Relaxed);
    if failed > 0 {
        return Err(SourceError::Kafka(format!(
            "{failed} messages were not delivered"
        )));
    }
    Ok(())
}

/// Where undecodable messages go, with why and where they came from in headers.
pub struct DeadLetterTopic {
    producer: CheckedProducer,
    topic: String,
}

impl DeadLetterTopic {
    pub fn new(kafka: &KafkaConfig, topic: &str) -> Result<Self, SourceError> {
        Ok(DeadLetterTopic {
            producer: producer(&kafka.brokers, &kafka.options)?,
            topic: topic.to_string(),
        })
    }

    /// Produces the decode failures among `letters` and waits until the broker has them, so
    /// the commit that follows never gets ahead of the dead-letter topic.
    pub fn send(&mut self, letters: &[DeadLetter]) -> Result<(), SourceError> {
        for letter in letters.iter().filter(|l| l.stage == "decode") {
            let (partition, offset) = (
                letter.origin.rsplit_once('/').map_or("", |(_, p)| p),
                letter.offset.map(|o| o.to_string()).unwrap_or_default(),
            );
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "sluice.error",
                    value: Some(letter.reason.as_str()),
                })
                .insert(Header {
                    key: "sluice.topic",
                    value: Some(letter.topic.as_str()),
                })
                .insert(Header {
                    key: "sluice.partition",
                    value: Some(partition),
                })
                .insert(Header {
                    key: "sluice.offset",
                    value: Some(offset.as_str()),
                });
            let payload = letter.bytes.as_deref().unwrap_or(letter.raw.as_bytes());
            send(&self.producer, &self.topic, None, payload, Some(headers))?;
        }
        flush(&self.producer)
    }
}

/// How `sluice gen --to kafka://…` produces.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    /// Events per second; 0 for as fast as the broker takes them.
    pub rate: u64,
    /// Partitions of each topic, if it has to be created.
    pub partitions: i32,
    pub format: KafkaFormat,
    /// For `confluent_avro`: where the topics' schemas are registered.
    pub schema_registry: Option<String>,
}

/// Produces generated EventSim events to their four topics, keyed by user id (a guest's
/// events by session id) so a user's events stay in one partition. Returns counts per topic.
pub fn produce_generated(
    config: &crate::source::generator::GeneratorConfig,
    brokers: &str,
    options: &ProduceOptions,
) -> Result<[u64; 4], SourceError> {
    use crate::decode::avro;
    use crate::source::generator::{EventGenerator, Topic};
    create_topics(brokers, options.partitions)?;
    let producer = producer(brokers, &BTreeMap::new())?;
    // Per topic: its Avro schema and, for the wire format, the registered id.
    let mut schemas = Vec::new();
    for topic in Topic::ALL {
        let arrow = crate::decode::schema::eventsim(topic.name()).expect("built-in topic");
        let text = avro::avro_schema(topic.name(), &arrow);
        let id = match (options.format, &options.schema_registry) {
            (KafkaFormat::ConfluentAvro, Some(url)) => Some(
                avro::RegistryClient::new(url)
                    .register(&format!("{}-value", topic.name()), &text)
                    .map_err(SourceError::Kafka)?,
            ),
            (KafkaFormat::ConfluentAvro, None) => {
                return Err(SourceError::Config(
                    "confluent_avro needs --schema-registry".into(),
                ));
            }
            _ => None,
        };
        let schema = apache_avro::Schema::parse_str(&text).expect("generated schemas parse");
        schemas.push((schema, id));
    }
    let started = Instant::now();
    let mut counts = [0u64; 4];
    let mut generator = EventGenerator::new(config);
    while let Some((topic, record)) = generator.next_record() {
        let key = record_key(&record);
        let (schema, id) = &schemas[topic.index()];
        let payload = match options.format {
            KafkaFormat::Json => record.clone(),
            KafkaFormat::Avro | KafkaFormat::ConfluentAvro => {
                let datum = avro::encode_json(schema, &record).map_err(|e| {
                    SourceError::Kafka(format!("encoding a {} record: {e}", topic.name()))
                })?;
                match id {
                    Some(id) => avro::wire_format(*id, &datum),
                    None => datum,
                }
            }
        };
        send(&producer, topic.name(), key, &payload, None)?;
        counts[topic.index()] += 1;
        generator.recycle(record);
        let sent = generator.emitted();
        if options.rate > 0 && sent.is_multiple_of(1000) {
            let due = Duration::from_secs_f64(sent as f64 / options.rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        producer.poll(Duration::ZERO);
    }
    flush(&producer)?;
    Ok(counts)
}

/// The partitioning key of a generated record: `userId`, or `sessionId` for guests.
fn record_key(record: &[u8]) -> Option<&[u8]> {
    ["\"userId\":", "\"sessionId\":"].iter().find_map(|field| {
        let at = find(record, field.as_bytes())? + field.len();
        let digits = record[at..]
            .iter()
            .take_while(|b| b.is_ascii_digit() || **b == b'-')
            .count();
        (digits > 0).then(|| &record[at..at + digits])
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Creates the four EventSim topics with `partitions` partitions unless they exist.
fn create_topics(brokers: &str, partitions: i32) -> Result<(), SourceError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        client_config(brokers, &BTreeMap::new())
            .create()
            .map_err(|e| SourceError::Kafka(format!("cannot reach {brokers}: {e}")))?;
    let topics: Vec<NewTopic> = crate::source::generator::Topic::ALL
        .iter()
        .map(|t| NewTopic::new(t.name(), partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = futures::executor::block_on(admin.create_topics(&topics, &options))
        .map_err(|e| SourceError::Kafka(format!("creating topics on {brokers}: {e}")))?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(SourceError::Kafka(format!(
                    "creating topic {topic}: {code}"
                )));
            }
        }
    }
    Ok(())
}
