//! The `kafka` source connector: a topic's partitions, explicitly assigned, read from offsets
//! that live in Eddy's checkpoints. (The `kafka` and `upsert-kafka` sinks are in `sink.rs`.)
//!
//! ```sql
//! CREATE SOURCE bids (auction BIGINT, price BIGINT, date_time TIMESTAMP(3),
//!   WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
//! WITH (connector = 'kafka', topic = 'bids', properties.bootstrap.servers = '127.0.0.1:9092',
//!       format = 'json', scan.startup.mode = 'earliest-offset');
//! ```
//!
//! # Reading
//! A reader asks the cluster for the topic's partitions, keeps those its split owns
//! ([`options::assigned`]: partition `p` goes to reader `p % readers`) and assigns them to its
//! consumer, each from its start: the restored checkpoint's offset, else the startup mode.
//! There is no consumer-group membership and no rebalancing. Partitions added to the topic
//! after the reader started are not read.
//!
//! The source is not splittable yet: one reader reads every partition, so the source's
//! watermark is the generic one over that reader's rows, in the order they arrive (per-partition
//! watermarks with idleness are not implemented; a reader with no partitions would hold the
//! watermark back forever).
//!
//! Each batch holds up to `batch_size` messages, or what arrived within
//! [`LINGER`] of the first one.
//!
//! # Positions and checkpoints
//! The reader publishes, before yielding each batch, the *next* offset to read of every
//! partition that has yielded a message (or was started at an explicit offset), in Flink's
//! syntax (`partition:0,offset:42;...`), as its [`ConnectorPosition`]. The engine stores it at
//! each checkpoint barrier and hands it back on restore, where it overrides the startup mode
//! for the partitions it lists: the first message read after a restore is exactly the first one
//! not yet sent downstream. A partition that had yielded nothing when the checkpoint was taken
//! starts again by the startup mode (with `latest-offset`, messages produced between the first
//! start and the restore are then not read).
//!
//! # Bounded mode
//! With `scan.bounded.mode = 'latest-offset'` each partition is read up to the end offset (the
//! Fetch response's high watermark) seen by the reader's first fetch from it, then the source
//! ends. ListOffsets is not used for this: some brokers (tansu) answer it wrongly.

mod client;
mod decode;
mod encode;
mod librdkafka;
pub(crate) mod options;
mod sink;
mod sink_options;
mod transaction;
mod upsert;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use eddy_engine::connector::{
    ConnectorError, ConnectorOptions, ConnectorPosition, ConnectorResult, SourceConnector,
    SourceContext, SourceReader, SourceSplit,
};
use futures::StreamExt;

pub use self::client::{
    KafkaClient, KafkaConsumer, KafkaProducer, KafkaRecord, ProducerRecord, StartOffset, Watermarks,
};
use self::decode::ValueDecoder;
pub use self::librdkafka::RdKafkaClient;
use self::options::{KafkaOptions, StartupMode, assigned, format_offsets, parse_offsets};
pub use self::sink::KafkaSinkConnector;

/// How long a batch waits for more messages after its first one.
pub const LINGER: Duration = Duration::from_millis(50);

/// How long the reader waits for the topic's metadata before failing.
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one wait for a message lasts before the reader checks whether a bounded read is
/// complete.
const POLL: Duration = Duration::from_millis(200);

/// The `kafka` source connector.
#[derive(Clone)]
pub struct KafkaConnector {
    client: Arc<dyn KafkaClient>,
}

impl Default for KafkaConnector {
    fn default() -> Self {
        Self::new(Arc::new(RdKafkaClient))
    }
}

impl KafkaConnector {
    /// A connector reading through `client`.
    pub fn new(client: Arc<dyn KafkaClient>) -> Self {
        Self { client }
    }
}

impl SourceConnector for KafkaConnector {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn validate(&self, schema: &SchemaRef, options: &ConnectorOptions) -> ConnectorResult<()> {
        let parsed = KafkaOptions::parse(options)?;
        if schema.fields().is_empty() {
            return Err(ConnectorError::InvalidOption(
                "a kafka source needs its columns declared: CREATE SOURCE name (col TYPE, ...) \
                 WITH (connector = 'kafka', ...)"
                    .to_string(),
            ));
        }
        decode::check_schema(schema, &parsed.format)
    }

    fn open(&self, ctx: SourceContext) -> ConnectorResult<SourceReader> {
        let options = KafkaOptions::parse(&ctx.options)?;
        let mut properties = options.properties.clone();
        // librdkafka needs a group id even for an assign-only consumer; it is never joined.
        properties
            .entry("group.id".to_string())
            .or_insert_with(|| format!("eddy-{}", ctx.source_name));
        let consumer = self.client.consumer(&properties)?;
        let restored = match &ctx.start_position {
            Some(text) => parse_offsets(text).map_err(|e| {
                ConnectorError::Io(format!(
                    "kafka source '{}': unreadable checkpoint position '{text}': {e}",
                    ctx.source_name
                ))
            })?,
            None => BTreeMap::new(),
        };
        // Only the columns the query reads are decoded; with none (`count(*)`), every
        // column is decoded so that malformed values are still told apart, then dropped.
        let output = ctx.output_schema()?;
        let (decoded, projection) = if output.fields().is_empty() {
            (Arc::clone(&ctx.schema), None)
        } else {
            (Arc::clone(&output), ctx.projection.as_deref())
        };
        let decoder = ValueDecoder::new(
            &options.topic,
            &options.format,
            &ctx.schema,
            projection,
            decoded,
            Arc::clone(&ctx.metrics),
            ctx.batch_size,
        );
        let position = Arc::new(ConnectorPosition::new(ctx.start_position.clone()));
        let bounded = options.bounded;
        let reader = PartitionReader {
            consumer,
            decoder,
            drop_columns: output.fields().is_empty(),
            topic: options.topic,
            startup: options.startup,
            bounded,
            split: ctx.split,
            batch_size: ctx.batch_size.max(1),
            restored,
            partitions: BTreeMap::new(),
            assigned: false,
            metrics: Arc::clone(&ctx.metrics),
            position: Arc::clone(&position),
        };
        let stream = futures::stream::unfold(reader, |mut reader| async move {
            let item = reader.next_batch().await.transpose()?;
            Some((item, reader))
        })
        .boxed();
        Ok(SourceReader {
            stream,
            bounded,
            position: Some(position),
        })
    }
}

/// What a reader knows about one assigned partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PartitionState {
    start: StartOffset,
    /// The next offset to read, once known (a message was read, or the start was explicit).
    next: Option<i64>,
    /// Bounded mode: the end offset (exclusive), once the first fetch reported it.
    end: Option<i64>,
}

impl PartitionState {
    /// Whether a bounded read of the partition is complete (`low` is the log's first offset).
    fn complete(&self, low: i64) -> bool {
        let Some(end) = self.end else {
            return false;
        };
        match (self.next, self.start) {
            (Some(next), _) => next >= end,
            // Nothing read yet: the log is empty from where the reader starts.
            (None, StartOffset::Earliest) => low >= end,
            // Started at the end as of the first fetch, which is where the read ends.
            (None, StartOffset::Latest) => true,
            (None, StartOffset::At(offset)) => offset >= end,
        }
    }
}

struct PartitionReader {
    consumer: Box<dyn KafkaConsumer>,
    decoder: ValueDecoder,
    /// The query reads no column: batches carry only a row count.
    drop_columns: bool,
    topic: String,
    startup: StartupMode,
    bounded: bool,
    split: SourceSplit,
    batch_size: usize,
    /// Next offsets from the restored checkpoint.
    restored: BTreeMap<i32, i64>,
    partitions: BTreeMap<i32, PartitionState>,
    assigned: bool,
    metrics: Arc<eddy_engine::connector::SourceMetrics>,
    position: Arc<ConnectorPosition>,
}

impl PartitionReader {
    async fn assign(&mut self) -> ConnectorResult<()> {
        let all = self
            .consumer
            .partitions(&self.topic, METADATA_TIMEOUT)
            .await?;
        for partition in all.into_iter().filter(|p| assigned(*p, self.split)) {
            let start = match (self.restored.get(&partition), &self.startup) {
                (Some(next), _) => StartOffset::At(*next),
                (None, StartupMode::Earliest) => StartOffset::Earliest,
                (None, StartupMode::Latest) => StartOffset::Latest,
                (None, StartupMode::Specific(offsets)) => offsets
                    .get(&partition)
                    .map_or(StartOffset::Earliest, |o| StartOffset::At(*o)),
            };
            let next = match start {
                StartOffset::At(offset) => Some(offset),
                StartOffset::Earliest | StartOffset::Latest => None,
            };
            self.partitions.insert(
                partition,
                PartitionState {
                    start,
                    next,
                    end: None,
                },
            );
        }
        let starts: Vec<_> = self.partitions.iter().map(|(p, s)| (*p, s.start)).collect();
        tracing::debug!(topic = %self.topic, ?starts, "kafka reader assigned partitions");
        self.consumer.assign(&self.topic, &starts)?;
        self.assigned = true;
        Ok(())
    }

    /// Bounded mode: learns end offsets from fetches; true once every partition is read.
    fn bounded_read_complete(&mut self) -> bool {
        let mut complete = true;
        for (partition, state) in self.partitions.iter_mut() {
            let watermarks = self.consumer.fetched_watermarks(&self.topic, *partition);
            if state.end.is_none() {
                state.end = watermarks.map(|w| w.high);
            }
            complete &= state.complete(watermarks.map_or(0, |w| w.low));
        }
        complete
    }

    /// The next batch, `None` at the end of a bounded read. A batch may be empty when every
    /// message it read was malformed (its position still moves past them).
    async fn next_batch(&mut self) -> ConnectorResult<Option<RecordBatch>> {
        if !self.assigned {
            self.assign().await?;
        }
        let mut records: Vec<KafkaRecord> = Vec::new();
        loop {
            if self.bounded && self.bounded_read_complete() {
                return Ok(None);
            }
            if self.partitions.is_empty() {
                // No partition for this reader: an unbounded source stays open and quiet.
                std::future::pending::<()>().await;
            }
            let Some(record) = self.consumer.next_record(POLL).await? else {
                continue;
            };
            if self.accept(record, &mut records) {
                break;
            }
        }
        let deadline = tokio::time::Instant::now() + LINGER;
        while records.len() < self.batch_size {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            match self.consumer.next_record(left).await? {
                Some(record) => {
                    self.accept(record, &mut records);
                }
                None => break,
            }
        }
        let batch = self.decoder.decode(&records)?;
        let batch = if self.drop_columns {
            batch.project(&[])?
        } else {
            batch
        };
        self.metrics.add_rows(batch.num_rows() as u64);
        let next: BTreeMap<i32, i64> = self
            .partitions
            .iter()
            .filter_map(|(p, s)| Some((*p, s.next?)))
            .collect();
        if !next.is_empty() {
            self.position.set(format_offsets(&next));
        }
        Ok(Some(batch))
    }

    /// Takes `record` into the batch unless a bounded read has passed its partition's end;
    /// returns whether it was taken.
    fn accept(&mut self, record: KafkaRecord, records: &mut Vec<KafkaRecord>) -> bool {
        let Some(state) = self.partitions.get_mut(&record.partition) else {
            return false;
        };
        if state.next.is_some_and(|next| record.offset < next) {
            // Redelivered (a reconnect): already read.
            return false;
        }
        if self.bounded {
            if state.end.is_none() {
                state.end = self
                    .consumer
                    .fetched_watermarks(&self.topic, record.partition)
                    .map(|w| w.high);
            }
            if state.end.is_some_and(|end| record.offset >= end) {
                return false;
            }
        }
        state.next = Some(record.offset + 1);
        records.push(record);
        true
    }
}

#[cfg(test)]
mod tests;
