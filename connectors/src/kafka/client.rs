//! The Kafka client as the connector sees it: the few calls a partition-assigned reader needs.
//!
//! The connector talks to brokers only through [`KafkaClient`] and [`KafkaConsumer`], so the
//! client library ([`super::librdkafka`] today) can be replaced, e.g. by a pure-Rust one,
//! without touching offsets, decoding or checkpoints.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use eddy_engine::connector::ConnectorResult;

/// One message of a topic, owned (copied out of the client's buffers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    pub partition: i32,
    pub offset: i64,
    /// The value; `None` for a tombstone.
    pub payload: Option<Vec<u8>>,
    /// The key, if the message has one.
    pub key: Option<Vec<u8>>,
    /// The message's timestamp (create or log-append time), milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
    pub timestamp_type: TimestampType,
    /// The headers, in order (a key may repeat; a value may be null).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// What a message's timestamp means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TimestampType {
    #[default]
    None,
    CreateTime,
    LogAppendTime,
}

/// Where a partition starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    Earliest,
    Latest,
    /// This offset: the next record read is the one at `offset`.
    At(i64),
}

/// A partition's offsets as the broker last reported them in a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    /// The first offset still in the log.
    pub low: i64,
    /// The offset the next produced record will get (the end of the log).
    pub high: i64,
}

/// Makes consumers; one per source reader.
pub trait KafkaClient: Send + Sync + 'static {
    /// A consumer configured with `properties` (the source's `properties.*`, without the
    /// prefix: `bootstrap.servers`, `group.id`, SASL/TLS settings...).
    fn consumer(
        &self,
        properties: &BTreeMap<String, String>,
    ) -> ConnectorResult<Box<dyn KafkaConsumer>>;
}

/// A consumer with explicitly assigned partitions (no group membership, no rebalancing).
#[async_trait]
pub trait KafkaConsumer: Send {
    /// The partition numbers of `topic`, from the cluster's metadata.
    async fn partitions(&mut self, topic: &str, timeout: Duration) -> ConnectorResult<Vec<i32>>;

    /// Reads exactly these partitions of `topic` from now on, each from its start.
    fn assign(&mut self, topic: &str, starts: &[(i32, StartOffset)]) -> ConnectorResult<()>;

    /// Also reads these partitions of `topic` (discovered after [`Self::assign`]).
    fn add_partitions(&mut self, topic: &str, starts: &[(i32, StartOffset)])
    -> ConnectorResult<()>;

    /// The offsets the consumer group (`group.id`) has committed for these partitions: the
    /// next offset to read of each partition that has one.
    async fn committed(
        &mut self,
        topic: &str,
        partitions: &[i32],
        timeout: Duration,
    ) -> ConnectorResult<BTreeMap<i32, i64>>;

    /// Commits `offsets` (the next offset to read, per partition) to the consumer group,
    /// without waiting for the answer: for lag monitoring, not for Eddy's own restarts.
    fn commit(&mut self, topic: &str, offsets: &BTreeMap<i32, i64>) -> ConnectorResult<()>;

    /// The next record of any assigned partition (in offset order within a partition), or
    /// `None` if none arrived within `timeout`.
    async fn next_record(&mut self, timeout: Duration) -> ConnectorResult<Option<KafkaRecord>>;

    /// A partition's offsets as of the latest fetch from it; `None` before its first fetch.
    /// Taken from the Fetch response, not ListOffsets (which some brokers answer wrongly).
    fn fetched_watermarks(&self, topic: &str, partition: i32) -> Option<Watermarks>;
}
