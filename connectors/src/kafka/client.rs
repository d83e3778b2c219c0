//! The Kafka client as the connectors see it: the few calls a partition-assigned reader and a
//! (transactional) writer need.
//!
//! The connectors talk to brokers only through [`KafkaClient`], [`KafkaConsumer`] and
//! [`KafkaProducer`], so the client library ([`super::librdkafka`] today) can be replaced, e.g.
//! by a pure-Rust one, without touching offsets, encoding, decoding or checkpoints.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use eddy_engine::connector::{ConnectorError, ConnectorResult};

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

/// Makes consumers (one per source reader) and producers (one per sink writer).
pub trait KafkaClient: Send + Sync + 'static {
    /// A consumer configured with `properties` (the source's `properties.*`, without the
    /// prefix: `bootstrap.servers`, `group.id`, SASL/TLS settings...).
    fn consumer(
        &self,
        properties: &BTreeMap<String, String>,
    ) -> ConnectorResult<Box<dyn KafkaConsumer>>;

    /// A producer configured with `properties` (the sink's `properties.*`, without the
    /// prefix); a transactional one when `transactional_id` is given (its transactions are
    /// not initialised yet: [`KafkaProducer::init_transactions`]). A read-only client (a
    /// test's in-memory topic) need not have one.
    fn producer(
        &self,
        properties: &BTreeMap<String, String>,
        transactional_id: Option<&str>,
    ) -> ConnectorResult<Box<dyn KafkaProducer>> {
        let _ = (properties, transactional_id);
        Err(ConnectorError::Unsupported(
            "producing to Kafka with this client".to_string(),
        ))
    }
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

    /// The offset the consumer fetches next from each of `partitions` that it knows one of
    /// (a start such as the latest offset is resolved once the client asked the broker).
    fn positions(&self, topic: &str, partitions: &[i32]) -> BTreeMap<i32, i64>;
}

/// One message to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    /// The partition; `None` lets the client's partitioner choose (by the key's hash).
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    /// The value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
}

impl ProducerRecord {
    /// Bytes the record holds (key and value), for memory accounting.
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len) + self.value.as_ref().map_or(0, Vec::len)
    }
}

/// A producer of one sink writer. Every call may block (the writer runs on a thread that may);
/// `timeout` bounds the calls that wait for the cluster.
///
/// Transactions follow Kafka's protocol: [`init_transactions`](Self::init_transactions) once
/// (it fences any earlier producer with the same transactional id and aborts its open
/// transaction), then per transaction [`begin_transaction`](Self::begin_transaction),
/// [`send`](Self::send)s, [`flush`](Self::flush), optionally
/// [`send_marker`](Self::send_marker), and [`commit_transaction`](Self::commit_transaction) or
/// [`abort_transaction`](Self::abort_transaction).
pub trait KafkaProducer: Send {
    /// The number of partitions of `topic`, from the cluster's metadata.
    fn partition_count(&mut self, topic: &str, timeout: Duration) -> ConnectorResult<i32>;

    /// Queues `record` for `topic` (waiting while the client's queue is full). Its delivery is
    /// confirmed by the next [`flush`](Self::flush); an error here is a failure to queue, or
    /// an earlier delivery that failed.
    fn send(&mut self, topic: &str, record: &ProducerRecord) -> ConnectorResult<()>;

    /// Waits until every queued message is delivered (acknowledged by the brokers). An error
    /// names the first delivery that failed since the last flush, or the timeout.
    fn flush(&mut self, timeout: Duration) -> ConnectorResult<()>;

    /// Registers the transactional id with its coordinator, fencing earlier producers.
    fn init_transactions(&mut self, timeout: Duration) -> ConnectorResult<()>;

    fn begin_transaction(&mut self) -> ConnectorResult<()>;

    /// Adds `marker` to the open transaction for `topic`: it becomes the transactional id's
    /// [committed marker](Self::committed_marker) if and only if the transaction commits.
    /// (Kafka's `TxnOffsetCommit`: the marker is an offset committed for partition 0 of
    /// `topic` in the consumer group named after the transactional id.)
    fn send_marker(&mut self, topic: &str, marker: i64, timeout: Duration) -> ConnectorResult<()>;

    fn commit_transaction(&mut self, timeout: Duration) -> ConnectorResult<()>;

    fn abort_transaction(&mut self, timeout: Duration) -> ConnectorResult<()>;

    /// The marker of the last committed transaction of this transactional id that sent one
    /// for `topic`; `None` if there is none.
    fn committed_marker(&mut self, topic: &str, timeout: Duration) -> ConnectorResult<Option<i64>>;
}
