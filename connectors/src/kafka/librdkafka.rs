//! [`KafkaClient`] on rdkafka (librdkafka 2.12, built from source by the `cmake-build` feature).
//!
//! Consumers are rdkafka `StreamConsumer`s with explicit assignment: a `group.id` is set (the
//! source's `properties.group.id`, else one derived from the topic) because librdkafka refuses
//! an assign-only consumer without one, but the group is never joined, and offsets are neither
//! stored nor auto-committed: they live in Eddy's checkpoints.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eddy_engine::connector::{ConnectorError, ConnectorResult};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, Timestamp, TopicPartitionList};

use super::client::{
    KafkaClient, KafkaConsumer, KafkaRecord, StartOffset, TimestampType, Watermarks,
};

/// The rdkafka-backed client.
#[derive(Debug, Default, Clone, Copy)]
pub struct RdKafkaClient;

/// Sends librdkafka's log lines to `tracing` (rdkafka logs through the `log` crate otherwise,
/// which the server does not collect).
struct TracingContext;

impl ClientContext for TracingContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
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
    fn consumer(
        &self,
        properties: &BTreeMap<String, String>,
    ) -> ConnectorResult<Box<dyn KafkaConsumer>> {
        let mut config = ClientConfig::new();
        config
            .set("group.id", "eddy")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
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
