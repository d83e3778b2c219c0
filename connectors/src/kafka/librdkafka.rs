//! [`KafkaClient`] on rdkafka (librdkafka 2.12, built from source by the `cmake-build` feature).
//!
//! Consumers are rdkafka `StreamConsumer`s with explicit assignment: a `group.id` is set (the
//! source's `properties.group.id`, else one derived from the topic) because librdkafka refuses
//! an assign-only consumer without one, but the group is never joined, and offsets are neither
//! stored nor auto-committed: they live in Eddy's checkpoints.
//!
//! Producers are rdkafka `ThreadedProducer`s (a thread polls for delivery reports); the first
//! failed delivery since the last flush is kept and reported by the next `send` or `flush`. A
//! transaction's marker is an offset committed through `send_offsets_to_transaction` for a
//! consumer group named after the transactional id; a consumer of that group (never joined,
//! made on first use) supplies the group metadata and reads the committed marker back.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eddy_engine::connector::{ConnectorError, ConnectorResult};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Headers;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, Timestamp, TopicPartitionList};

use super::client::{
    KafkaClient, KafkaConsumer, KafkaProducer, KafkaRecord, ProducerRecord, StartOffset,
    TimestampType, Watermarks,
};

/// The rdkafka-backed client.
#[derive(Debug, Default, Clone, Copy)]
pub struct RdKafkaClient;

/// Sends librdkafka's log lines to `tracing` (rdkafka logs through the `log` crate otherwise,
/// which the server does not collect).
struct TracingContext;

impl ClientContext for TracingContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_to_tracing(level, facility, message);
    }
}

fn log_to_tracing(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(facility, "librdkafka: {message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(facility, "librdkafka: {message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(facility, "librdkafka: {message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(facility, "librdkafka: {message}"),
    }
}

impl ConsumerContext for TracingContext {}

struct RdKafkaConsumer {
    consumer: Arc<StreamConsumer<TracingContext>>,
}

/// The partitions of `topic`, each at its start.
fn partition_list(
    topic: &str,
    starts: &[(i32, StartOffset)],
) -> ConnectorResult<TopicPartitionList> {
    let mut list = TopicPartitionList::new();
    for (partition, start) in starts {
        let offset = match start {
            StartOffset::Earliest => Offset::Beginning,
            StartOffset::Latest => Offset::End,
            StartOffset::At(offset) => Offset::Offset(*offset),
        };
        list.add_partition_offset(topic, *partition, offset)
            .map_err(|e| client_error("cannot assign partitions", e))?;
    }
    Ok(list)
}

fn client_error(what: &str, e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Io(format!("kafka: {what}: {e}"))
}

impl KafkaClient for RdKafkaClient {
    fn producer(
        &self,
        properties: &BTreeMap<String, String>,
        transactional_id: Option<&str>,
    ) -> ConnectorResult<Box<dyn KafkaProducer>> {
        let mut config = ClientConfig::new();
        for (key, value) in properties {
            config.set(key, value);
        }
        if let Some(id) = transactional_id {
            config.set("transactional.id", id);
        }
        let context = DeliveryContext {
            failed: std::sync::Mutex::new(None),
        };
        let producer: ThreadedProducer<DeliveryContext> = config
            .create_with_context(context)
            .map_err(|e| ConnectorError::InvalidOption(format!("kafka client properties: {e}")))?;
        Ok(Box::new(RdKafkaProducer {
            producer,
            properties: properties.clone(),
            transactional_id: transactional_id.map(str::to_string),
            marker_consumer: None,
        }))
    }

    fn consumer(
        &self,
        properties: &BTreeMap<String, String>,
    ) -> ConnectorResult<Box<dyn KafkaConsumer>> {
        let mut config = ClientConfig::new();
        config
            .set("group.id", "eddy")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            // When the prefetch queue is over its thresholds (the reader is behind the broker),
            // librdkafka postpones the partition's next fetch by this much; its default, 1 s,
            // left the reader idle most of the time (0.25 M messages/s from a local broker, 0.65
            // M with 20 ms: docs/benchmarks.md). A `properties.*` setting overrides it.
            .set("fetch.queue.backoff.ms", "20");
        for (key, value) in properties {
            config.set(key, value);
        }
        let consumer: StreamConsumer<TracingContext> =
            config.create_with_context(TracingContext).map_err(|e| {
                ConnectorError::InvalidOption(format!("kafka client properties: {e}"))
            })?;
        Ok(Box::new(RdKafkaConsumer {
            consumer: Arc::new(consumer),
        }))
    }
}

#[async_trait]
impl KafkaConsumer for RdKafkaConsumer {
    async fn partitions(&mut self, topic: &str, timeout: Duration) -> ConnectorResult<Vec<i32>> {
        let consumer = Arc::clone(&self.consumer);
        let name = topic.to_string();
        // A blocking request: off the async threads.
        let metadata =
            tokio::task::spawn_blocking(move || consumer.fetch_metadata(Some(&name), timeout))
                .await
                .map_err(|e| ConnectorError::Io(format!("kafka metadata request failed: {e}")))?
                .map_err(|e| {
                    client_error(&format!("cannot read the metadata of topic '{topic}'"), e)
                })?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Err(ConnectorError::Io(format!(
                "kafka: topic '{topic}' does not exist"
            )));
        };
        if let Some(error) = found.error() {
            return Err(ConnectorError::Io(format!(
                "kafka: topic '{topic}': {:?}",
                rdkafka::error::RDKafkaErrorCode::from(error)
            )));
        }
        let mut partitions: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
        partitions.sort_unstable();
        Ok(partitions)
    }

    fn assign(&mut self, topic: &str, starts: &[(i32, StartOffset)]) -> ConnectorResult<()> {
        self.consumer
            .assign(&partition_list(topic, starts)?)
            .map_err(|e| client_error("cannot assign partitions", e))
    }

    fn add_partitions(
        &mut self,
        topic: &str,
        starts: &[(i32, StartOffset)],
    ) -> ConnectorResult<()> {
        self.consumer
            .incremental_assign(&partition_list(topic, starts)?)
            .map_err(|e| client_error("cannot add partitions", e))
    }

    async fn committed(
        &mut self,
        topic: &str,
        partitions: &[i32],
        timeout: Duration,
    ) -> ConnectorResult<BTreeMap<i32, i64>> {
        let mut list = TopicPartitionList::new();
        for partition in partitions {
            list.add_partition(topic, *partition);
        }
        let consumer = Arc::clone(&self.consumer);
        // A blocking request: off the async threads.
        let committed =
            tokio::task::spawn_blocking(move || consumer.committed_offsets(list, timeout))
                .await
                .map_err(|e| ConnectorError::Io(format!("kafka offset request failed: {e}")))?
                .map_err(|e| client_error("cannot read the group's committed offsets", e))?;
        Ok(committed
            .elements_for_topic(topic)
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(offset) => Some((e.partition(), offset)),
                _ => None,
            })
            .collect())
    }

    fn commit(&mut self, topic: &str, offsets: &BTreeMap<i32, i64>) -> ConnectorResult<()> {
        let starts: Vec<_> = offsets
            .iter()
            .map(|(p, o)| (*p, StartOffset::At(*o)))
            .collect();
        self.consumer
            .commit(&partition_list(topic, &starts)?, CommitMode::Async)
            .map_err(|e| client_error("cannot commit offsets to the consumer group", e))
    }

    async fn next_record(&mut self, timeout: Duration) -> ConnectorResult<Option<KafkaRecord>> {
        match tokio::time::timeout(timeout, self.consumer.recv()).await {
            Err(_) => Ok(None),
            Ok(Ok(message)) => Ok(Some(KafkaRecord {
                partition: message.partition(),
                offset: message.offset(),
                payload: message.payload().map(<[u8]>::to_vec),
                key: message.key().map(<[u8]>::to_vec),
                timestamp_ms: message.timestamp().to_millis(),
                timestamp_type: match message.timestamp() {
                    Timestamp::NotAvailable => TimestampType::None,
                    Timestamp::CreateTime(_) => TimestampType::CreateTime,
                    Timestamp::LogAppendTime(_) => TimestampType::LogAppendTime,
                },
                headers: message
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default(),
            })),
            Ok(Err(e)) => Err(client_error("cannot read", e)),
        }
    }

    fn positions(&self, topic: &str, partitions: &[i32]) -> BTreeMap<i32, i64> {
        let Ok(list) = self.consumer.position() else {
            return BTreeMap::new();
        };
        list.elements_for_topic(topic)
            .iter()
            .filter(|e| partitions.contains(&e.partition()))
            .filter_map(|e| match e.offset() {
                Offset::Offset(offset) => Some((e.partition(), offset)),
                _ => None,
            })
            .collect()
    }

    fn fetched_watermarks(&self, topic: &str, partition: i32) -> Option<Watermarks> {
        let topic = CString::new(topic).ok()?;
        let (mut low, mut high) = (-1i64, -1i64);
        // rdkafka 0.39 has no safe wrapper for the cached (fetch-reported) watermarks.
        // SAFETY: the handle lives as long as `self.consumer`; `topic` is a valid C string
        // for the call; `low` and `high` are valid out-pointers.
        let error = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                self.consumer.client().native_ptr(),
                topic.as_ptr(),
                partition,
                &mut low,
                &mut high,
            )
        };
        (error == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            && low >= 0
            && high >= 0)
            .then_some(Watermarks { low, high })
    }
}

/// Keeps the first failed delivery since the last flush, for the producer to report.
struct DeliveryContext {
    failed: std::sync::Mutex<Option<String>>,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_to_tracing(level, facility, message);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, message)) = result {
            let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
            if failed.is_none() {
                *failed = Some(format!(
                    "a message to topic '{}' partition {} was not delivered: {error}",
                    message.topic(),
                    message.partition()
                ));
            }
        }
    }
}

struct RdKafkaProducer {
    producer: ThreadedProducer<DeliveryContext>,
    /// For the marker consumer: the same cluster and security settings.
    properties: BTreeMap<String, String>,
    transactional_id: Option<String>,
    marker_consumer: Option<BaseConsumer<TracingContext>>,
}

impl RdKafkaProducer {
    fn delivery_failure(&self) -> ConnectorResult<()> {
        let failed = self
            .producer
            .context()
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match failed {
            Some(why) => Err(ConnectorError::Io(format!("kafka: {why}"))),
            None => Ok(()),
        }
    }

    /// The consumer of the transactional id's marker group (never joined).
    fn marker_consumer(&mut self) -> ConnectorResult<&BaseConsumer<TracingContext>> {
        let Some(id) = &self.transactional_id else {
            return Err(ConnectorError::Io(
                "kafka: transaction markers need a transactional producer".to_string(),
            ));
        };
        if self.marker_consumer.is_none() {
            let mut config = ClientConfig::new();
            for (key, value) in &self.properties {
                if !PRODUCER_ONLY.contains(&key.as_str()) {
                    config.set(key, value);
                }
            }
            config
                .set("group.id", id)
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false");
            let consumer: BaseConsumer<TracingContext> =
                config.create_with_context(TracingContext).map_err(|e| {
                    ConnectorError::InvalidOption(format!("kafka client properties: {e}"))
                })?;
            self.marker_consumer = Some(consumer);
        }
        self.marker_consumer
            .as_ref()
            .ok_or_else(|| ConnectorError::Io("kafka: no marker consumer".to_string()))
    }
}

/// Producer settings a consumer would only warn about.
const PRODUCER_ONLY: &[&str] = &[
    "acks",
    "enable.idempotence",
    "linger.ms",
    "message.timeout.ms",
    "partitioner",
    "transaction.timeout.ms",
    "compression.type",
    "batch.size",
    "batch.num.messages",
    "queue.buffering.max.messages",
    "queue.buffering.max.kbytes",
    "retries",
];

fn transaction_error(what: &str, e: KafkaError) -> ConnectorError {
    let fenced = match &e {
        KafkaError::Transaction(error) => error.is_fatal() || error.txn_requires_abort(),
        _ => false,
    };
    let hint = if fenced || e.rdkafka_error_code() == Some(RDKafkaErrorCode::OperationTimedOut) {
        " (a timeout or fatal error here usually means that another producer with the same \
         transactional id fenced this one: another sink or server using the same \
         sink.transactional-id-prefix and sink name)"
    } else {
        ""
    };
    ConnectorError::Io(format!("kafka: {what}: {e}{hint}"))
}

impl KafkaProducer for RdKafkaProducer {
    fn partition_count(&mut self, topic: &str, timeout: Duration) -> ConnectorResult<i32> {
        let metadata = self
            .producer
            .client()
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| {
                client_error(&format!("cannot read the metadata of topic '{topic}'"), e)
            })?;
        let found = metadata.topics().iter().find(|t| t.name() == topic);
        match found {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                Ok(i32::try_from(t.partitions().len()).unwrap_or(i32::MAX))
            }
            Some(t) if t.error().is_some() => Err(ConnectorError::Io(format!(
                "kafka: topic '{topic}': {:?}",
                t.error().map(RDKafkaErrorCode::from)
            ))),
            _ => Err(ConnectorError::Io(format!(
                "kafka: topic '{topic}' does not exist"
            ))),
        }
    }

    fn send(&mut self, topic: &str, record: &ProducerRecord) -> ConnectorResult<()> {
        self.delivery_failure()?;
        loop {
            let mut message = BaseRecord::<[u8], [u8]>::to(topic);
            if let Some(partition) = record.partition {
                message = message.partition(partition);
            }
            if let Some(key) = &record.key {
                message = message.key(key.as_slice());
            }
            if let Some(value) = &record.value {
                message = message.payload(value.as_slice());
            }
            match self.producer.send(message) {
                Ok(()) => return Ok(()),
                // The polling thread frees room as deliveries complete (or time out).
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(client_error(&format!("cannot send to '{topic}'"), e)),
            }
        }
    }

    fn flush(&mut self, timeout: Duration) -> ConnectorResult<()> {
        let flushed = self.producer.flush(timeout);
        // A failed delivery says more than the timeout it may have caused.
        self.delivery_failure()?;
        flushed.map_err(|e| {
            client_error(
                &format!(
                    "not every message was acknowledged within {} s",
                    timeout.as_secs()
                ),
                e,
            )
        })
    }

    fn init_transactions(&mut self, timeout: Duration) -> ConnectorResult<()> {
        self.producer
            .init_transactions(timeout)
            .map_err(|e| transaction_error("cannot initialise transactions", e))
    }

    fn begin_transaction(&mut self) -> ConnectorResult<()> {
        self.producer
            .begin_transaction()
            .map_err(|e| transaction_error("cannot begin a transaction", e))
    }

    fn send_marker(&mut self, topic: &str, marker: i64, timeout: Duration) -> ConnectorResult<()> {
        let metadata = self
            .marker_consumer()?
            .group_metadata()
            .ok_or_else(|| ConnectorError::Io("kafka: no consumer group metadata".to_string()))?;
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(topic, 0, Offset::Offset(marker))
            .map_err(|e| client_error("cannot make the transaction marker", e))?;
        self.producer
            .send_offsets_to_transaction(&offsets, &metadata, timeout)
            .map_err(|e| transaction_error("cannot add the marker to the transaction", e))
    }

    fn commit_transaction(&mut self, timeout: Duration) -> ConnectorResult<()> {
        self.producer
            .commit_transaction(timeout)
            .map_err(|e| transaction_error("cannot commit the transaction", e))?;
        // The commit flushed: a failed delivery would have failed it, so none is pending.
        self.delivery_failure()
    }

    fn abort_transaction(&mut self, timeout: Duration) -> ConnectorResult<()> {
        let aborted = self
            .producer
            .abort_transaction(timeout)
            .map_err(|e| transaction_error("cannot abort the transaction", e));
        // Deliveries of an aborted transaction do not matter any more.
        let _ = self.delivery_failure();
        aborted
    }

    fn committed_marker(&mut self, topic: &str, timeout: Duration) -> ConnectorResult<Option<i64>> {
        let mut partitions = TopicPartitionList::new();
        partitions.add_partition(topic, 0);
        let committed = self
            .marker_consumer()?
            .committed_offsets(partitions, timeout)
            .map_err(|e| client_error("cannot read the committed transaction marker", e))?;
        Ok(
            match committed.find_partition(topic, 0).map(|p| p.offset()) {
                Some(Offset::Offset(marker)) => Some(marker),
                _ => None,
            },
        )
    }
}
