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
//! The source is splittable: a query with parallelism `n` opens `n` readers. Each asks the
//! cluster for the topic's partitions, keeps those its split owns ([`options::assigned`]:
//! partition `p` goes to reader `p % n`, a pure function of the two) and assigns them to its
//! consumer, each from its start: the restored checkpoint's offset, else the startup mode
//! (`earliest-offset`, `latest-offset`, `specific-offsets`, or `group-offsets`: the offsets
//! committed to `properties.group.id`, then `properties.auto.offset.reset`; or `timestamp`:
//! from the earliest offset, skipping messages until the first stamped at or after the time,
//! which every broker answers alike, unlike ListOffsets by time). There is no
//! consumer-group membership and no rebalancing. Every `scan.topic-partition-discovery.interval`
//! (default 5 minutes, `0` never; never in bounded mode) the reader looks for partitions added
//! to the topic and reads the ones it owns from their earliest offset.
//!
//! Each batch holds messages of one partition only, up to `batch_size` of them, read within
//! [`LINGER`] of the first. The reader tells the engine its partitions and each batch's
//! ([`SourcePartitions`]), so the engine keeps a watermark per partition and combines them
//! by minimum; with `scan.watermark.idle-timeout` a partition without messages for that
//! long stops holding the watermark back until it has messages again, and a reader that owns
//! no partition is idle (see `eddy_engine::runtime::partition_watermarks`).
//!
//! A malformed message (its value, or its key, does not decode) is handed to the source's
//! metrics at `topic/partition@offset`: the source's `format.on-error` (the engine's option)
//! counts and skips it (`'skip'`, the default), fails the query (`'fail'`) or sends it to
//! `eddy_dead_letters` (`'dead-letter'`, with the bytes that did not decode as its raw text).
//!
//! # Positions and checkpoints
//! The reader publishes, before yielding each batch, the *next* offset to read of every
//! partition that has yielded a message (or was started at an explicit offset), in Flink's
//! syntax (`partition:0,offset:42;...`), as its [`ConnectorPosition`]. The engine stores it at
//! each checkpoint barrier and hands it back on restore, where it overrides the startup mode
//! for the partitions it lists: the first message read after a restore is exactly the first one
//! not yet sent downstream. A partition started at the latest offset publishes that offset
//! once the client has resolved it (while the reader waits for messages), so a checkpoint
//! taken before its first message restores it there too; any other partition that had yielded
//! nothing when the checkpoint was taken starts again by the startup mode, which reads the same
//! messages again (nothing was sent). When a checkpoint completes and the source names
//! a `properties.group.id`, its offsets are committed to that group (asynchronously, for lag
//! monitoring: Eddy itself restarts from its checkpoints, never from the group).
//!
//! # upsert-kafka
//! The same reader, opened by the `upsert-kafka` connector ([`KafkaConnector::upsert`]), reads
//! messages that upsert or delete the row their key identifies: the key fields (the source's
//! `PRIMARY KEY`, handed over as `key.fields`) always come from the key, a message without a
//! value is a delete, and each batch ends with the engine's `__upsert` flag column (see
//! `SourceConnector::upserts`). The engine's `ChangelogNormalize` turns them into a changelog.
//! The topic is always read from its earliest offset.
//!
//! # Bounded mode
//! With `scan.bounded.mode = 'latest-offset'` each partition is read up to the end offset (the
//! Fetch response's high watermark) seen by the reader's first fetch from it, then the source
//! ends. ListOffsets is not used for this: some brokers (tansu) answer it wrongly. With
//! `specific-offsets` or `group-offsets` each partition ends before the offset given or
//! committed to the group; a partition without one is not read. With `timestamp` each
//! partition ends before its first message stamped at or after the time, or at the end of the
//! log as the first fetch reports it, whichever comes first.

mod client;
mod decode;
mod encode;
mod format_options;
#[doc(hidden)]
pub mod fuzzing;
mod librdkafka;
mod metadata;
pub(crate) mod options;
mod sink;
mod sink_options;
mod transaction;
mod upsert;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{BooleanArray, UInt32Array};
use datafusion::arrow::compute::{take, take_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use eddy_engine::connector::{
    ConnectorError, ConnectorOptions, ConnectorPosition, ConnectorResult, MalformedRow,
    SourceConnector, SourceContext, SourcePartitions, SourceReader, SourceSplit,
};
use futures::StreamExt;

pub use self::client::{
    KafkaClient, KafkaConsumer, KafkaProducer, KafkaRecord, ProducerRecord, StartOffset,
    TimestampType, Watermarks,
};
use self::decode::ValueDecoder;
pub use self::librdkafka::RdKafkaClient;
use self::metadata::Layout;
use self::options::{
    KafkaOptions, Reset, StartupMode, StopMode, assigned, format_offsets, parse_offsets,
};
pub use self::sink::KafkaSinkConnector;

/// How long a batch waits for more messages after its first one.
pub const LINGER: Duration = Duration::from_millis(50);

/// How long the reader waits for the topic's metadata before failing.
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one wait for a message lasts before the reader checks whether a bounded read is
/// complete.
const POLL: Duration = Duration::from_millis(200);

/// The `kafka` source connector, and the `upsert-kafka` one.
#[derive(Clone)]
pub struct KafkaConnector {
    client: Arc<dyn KafkaClient>,
    /// `upsert-kafka`: messages upsert or delete rows by the source's primary key.
    upsert: bool,
}

impl Default for KafkaConnector {
    fn default() -> Self {
        Self::new(Arc::new(RdKafkaClient))
    }
}

impl KafkaConnector {
    /// A `kafka` connector reading through `client`.
    pub fn new(client: Arc<dyn KafkaClient>) -> Self {
        Self {
            client,
            upsert: false,
        }
    }

    /// An `upsert-kafka` connector reading through `client`.
    pub fn upsert(client: Arc<dyn KafkaClient>) -> Self {
        Self {
            client,
            upsert: true,
        }
    }

    fn options(&self, options: &ConnectorOptions) -> ConnectorResult<KafkaOptions> {
        if self.upsert {
            KafkaOptions::parse_upsert(options)
        } else {
            KafkaOptions::parse(options)
        }
    }
}

impl SourceConnector for KafkaConnector {
    fn name(&self) -> &'static str {
        if self.upsert { "upsert-kafka" } else { "kafka" }
    }

    fn metadata(&self) -> Vec<(&'static str, DataType)> {
        metadata::offered()
    }

    fn upserts(&self) -> bool {
        self.upsert
    }

    fn validate(&self, schema: &SchemaRef, options: &ConnectorOptions) -> ConnectorResult<()> {
        let parsed = self.options(options)?;
        if schema.fields().is_empty() {
            return Err(ConnectorError::InvalidOption(format!(
                "a {0} source needs its columns declared: CREATE SOURCE name (col TYPE, ...) \
                 WITH (connector = '{0}', ...)",
                self.name()
            )));
        }
        match (&parsed.key, parsed.except_key || parsed.upsert) {
            (Some(key), true) => {
                let columns = key.columns(schema)?;
                decode::check_schema(
                    &key.decoded_schema(&Arc::new(schema.project(&columns)?)),
                    &key.format,
                )?;
                let values: Vec<usize> = (0..schema.fields().len())
                    .filter(|c| !columns.contains(c))
                    .collect();
                decode::check_schema(&Arc::new(schema.project(&values)?), &parsed.format)
            }
            (Some(key), false) => {
                // With ALL the values hold the key fields too, and they are read from there.
                key.columns(schema)?;
                decode::check_schema(schema, &parsed.format)
            }
            (None, _) => decode::check_schema(schema, &parsed.format),
        }
    }

    /// Partitions are dealt over the readers ([`options::assigned`]); each partition's rows
    /// stay in order in one reader.
    fn splittable(&self, _options: &ConnectorOptions) -> bool {
        true
    }

    fn open(&self, ctx: SourceContext) -> ConnectorResult<SourceReader> {
        let options = self.options(&ctx.options)?;
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
        // Only the value columns the query reads are decoded; metadata columns are filled
        // from the messages, key fields (with EXCEPT_KEY) decoded from the keys. The key
        // columns are resolved among the declared columns without the metadata ones, as
        // `validate` saw them.
        let key_columns = match (&options.key, options.except_key || options.upsert) {
            (Some(key), true) => {
                let physical: Vec<usize> = (0..ctx.schema.fields().len())
                    .filter(|c| !ctx.metadata.iter().any(|m| m.column == *c))
                    .collect();
                key.columns(&Arc::new(ctx.schema.project(&physical)?))?
                    .into_iter()
                    .map(|i| physical[i])
                    .collect()
            }
            _ => Vec::new(),
        };
        let mut layout = Layout::new(
            &ctx.schema,
            ctx.projection.as_deref(),
            &ctx.metadata,
            &key_columns,
        )?;
        if options.upsert {
            layout = layout.for_upserts();
        }
        // The keys' decoder counts nothing: a message is counted once, as malformed, when its
        // key or its value does not decode (see `PartitionReader::yield_batch`).
        let keys = match (&options.key, &layout.key_schema) {
            (Some(key), Some(schema)) => Some(ValueDecoder::new(
                &options.topic,
                &key.format,
                &key.decoded_schema(schema),
                None,
                key.decoded_schema(schema),
                Arc::new(eddy_engine::connector::SourceMetrics::default()),
                ctx.batch_size,
            )),
            _ => None,
        };
        let decoder = |metrics| {
            ValueDecoder::new(
                &options.topic,
                &options.format,
                &layout.value_schema,
                layout.value_projection.as_deref(),
                Arc::clone(&layout.decoded),
                metrics,
                ctx.batch_size,
            )
        };
        // With metadata columns or keys, a batch with malformed values is decoded again
        // message by message (counting nothing) to learn which messages its rows came from.
        let probe = layout
            .needs_alignment()
            .then(|| decoder(Arc::new(eddy_engine::connector::SourceMetrics::default())));
        let decoder = decoder(Arc::clone(&ctx.metrics));
        let position = Arc::new(ConnectorPosition::new(ctx.start_position.clone()));
        let partitions = Arc::new(SourcePartitions::new(options.idle_timeout));
        let bounded = options.bounded;
        let reader = PartitionReader {
            consumer,
            decoder,
            probe,
            keys,
            layout,
            source_name: ctx.source_name.clone(),
            split: ctx.split,
            batch_size: ctx.batch_size.max(1),
            restored,
            partitions: BTreeMap::new(),
            yielded: BTreeMap::new(),
            pending: VecDeque::new(),
            assigned: false,
            next_discovery: options.discovery.map(|d| tokio::time::Instant::now() + d),
            metrics: Arc::clone(&ctx.metrics),
            position: Arc::clone(&position),
            announced: Arc::clone(&partitions),
            options,
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
            partitions: Some(partitions),
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
    /// `scan.startup.mode = 'timestamp'`: messages stamped before this time (or without a
    /// timestamp) are skipped until the first one at or after it, from which on every message
    /// is read, as from the offset Kafka's offsets-for-times returns.
    from_time: Option<i64>,
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
    /// Tells which messages' values decode, when metadata columns need to know.
    probe: Option<ValueDecoder>,
    /// Decodes the message keys into the key fields (with EXCEPT_KEY).
    keys: Option<ValueDecoder>,
    layout: Layout,
    source_name: String,
    options: KafkaOptions,
    split: SourceSplit,
    batch_size: usize,
    /// Next offsets from the restored checkpoint.
    restored: BTreeMap<i32, i64>,
    partitions: BTreeMap<i32, PartitionState>,
    /// The next offset after the messages yielded downstream (or the explicit start), per
    /// partition: what the published position says.
    yielded: BTreeMap<i32, i64>,
    /// Messages read but not yielded yet, one batch per partition run.
    pending: VecDeque<(i32, Vec<KafkaRecord>)>,
    assigned: bool,
    /// When to look for new partitions next (`None`: never).
    next_discovery: Option<tokio::time::Instant>,
    metrics: Arc<eddy_engine::connector::SourceMetrics>,
    position: Arc<ConnectorPosition>,
    /// Tells the engine the reader's partitions and each batch's.
    announced: Arc<SourcePartitions>,
}

impl PartitionReader {
    fn topic(&self) -> &str {
        &self.options.topic
    }

    /// Where each of `new` (partitions this reader owns, not read yet) starts: the restored
    /// checkpoint's offset, else the startup mode (`discovered`: found after the start,
    /// which reads them from the earliest offset, as Flink does).
    async fn starts(
        &mut self,
        new: &[i32],
        discovered: bool,
    ) -> ConnectorResult<Vec<(i32, StartOffset)>> {
        let committed = match &self.options.startup {
            StartupMode::GroupOffsets { .. } if !discovered => {
                let topic = self.options.topic.clone();
                self.consumer
                    .committed(&topic, new, METADATA_TIMEOUT)
                    .await?
            }
            _ => BTreeMap::new(),
        };
        let mut starts = Vec::with_capacity(new.len());
        for &partition in new {
            let start = match (self.restored.get(&partition), &self.options.startup) {
                (Some(next), _) => StartOffset::At(*next),
                _ if discovered => StartOffset::Earliest,
                // Read from the earliest offset, skipping messages stamped before the time
                // until the first one at or after it (`PartitionState::from_time`).
                (None, StartupMode::Earliest | StartupMode::Timestamp(_)) => StartOffset::Earliest,
                (None, StartupMode::Latest) => StartOffset::Latest,
                (None, StartupMode::Specific(offsets)) => offsets
                    .get(&partition)
                    .map_or(StartOffset::Earliest, |o| StartOffset::At(*o)),
                (None, StartupMode::GroupOffsets { reset }) => {
                    match (committed.get(&partition), reset) {
                        (Some(offset), _) => StartOffset::At(*offset),
                        (None, Some(Reset::Earliest)) => StartOffset::Earliest,
                        (None, Some(Reset::Latest)) => StartOffset::Latest,
                        (None, None) => {
                            return Err(ConnectorError::Io(format!(
                                "kafka source '{}': the consumer group '{}' has no committed \
                                 offset for partition {partition} of topic '{}' (set \
                                 properties.auto.offset.reset = 'earliest' or 'latest' to \
                                 start such partitions anyway)",
                                self.source_name,
                                self.options
                                    .properties
                                    .get("group.id")
                                    .map_or("", String::as_str),
                                self.options.topic
                            )));
                        }
                    }
                }
            };
            starts.push((partition, start));
        }
        Ok(starts)
    }

    /// Where a bounded read of each of `partitions` ends, when the bound is known before
    /// reading (`None`: the first fetch's end of the log, or unbounded).
    async fn stops(&mut self, partitions: &[i32]) -> ConnectorResult<BTreeMap<i32, i64>> {
        if !self.options.bounded {
            return Ok(BTreeMap::new());
        }
        let known = match &self.options.stop {
            // The timestamp bound is found while reading (`PartitionReader::accept`).
            StopMode::Latest | StopMode::Timestamp(_) => return Ok(BTreeMap::new()),
            StopMode::Specific(offsets) => offsets.clone(),
            StopMode::GroupOffsets => {
                let topic = self.options.topic.clone();
                self.consumer
                    .committed(&topic, partitions, METADATA_TIMEOUT)
                    .await?
            }
        };
        // A partition without a bound is not read: it ends where it starts.
        Ok(partitions
            .iter()
            .map(|p| (*p, known.get(p).copied().unwrap_or(0)))
            .collect())
    }

    /// Takes in partitions `new` with their starts (and the ends of a bounded read);
    /// `discovered`: found after the start (read from the earliest offset, whatever the
    /// startup mode).
    fn track(
        &mut self,
        starts: &[(i32, StartOffset)],
        stops: &BTreeMap<i32, i64>,
        discovered: bool,
    ) {
        for (partition, start) in starts {
            let from_time = match self.options.startup {
                StartupMode::Timestamp(t)
                    if !discovered && !self.restored.contains_key(partition) =>
                {
                    Some(t)
                }
                _ => None,
            };
            let next = match start {
                StartOffset::At(offset) => {
                    self.yielded.insert(*partition, *offset);
                    Some(*offset)
                }
                StartOffset::Earliest | StartOffset::Latest => None,
            };
            self.partitions.insert(
                *partition,
                PartitionState {
                    start: *start,
                    next,
                    end: stops.get(partition).copied(),
                    from_time,
                },
            );
        }
        self.announced.assign(starts.iter().map(|(p, _)| *p));
    }

    /// The topic's partitions this reader owns and does not read yet.
    async fn unread_partitions(&mut self) -> ConnectorResult<Vec<i32>> {
        let topic = self.options.topic.clone();
        let all = self.consumer.partitions(&topic, METADATA_TIMEOUT).await?;
        Ok(all
            .into_iter()
            .filter(|p| assigned(*p, self.split) && !self.partitions.contains_key(p))
            .collect())
    }

    async fn assign(&mut self) -> ConnectorResult<()> {
        let new = self.unread_partitions().await?;
        let starts = self.starts(&new, false).await?;
        let stops = self.stops(&new).await?;
        tracing::debug!(topic = %self.topic(), ?starts, ?stops, "kafka reader assigned partitions");
        let topic = self.options.topic.clone();
        self.consumer.assign(&topic, &starts)?;
        self.track(&starts, &stops, false);
        self.assigned = true;
        Ok(())
    }

    /// Looks for partitions added to the topic, when it is time to.
    async fn discover(&mut self) -> ConnectorResult<()> {
        let (Some(due), Some(every)) = (self.next_discovery, self.options.discovery) else {
            return Ok(());
        };
        if tokio::time::Instant::now() < due {
            return Ok(());
        }
        self.next_discovery = Some(tokio::time::Instant::now() + every);
        let new = self.unread_partitions().await?;
        if new.is_empty() {
            return Ok(());
        }
        let starts = self.starts(&new, true).await?;
        tracing::info!(topic = %self.topic(), ?starts, "kafka reader found new partitions");
        let topic = self.options.topic.clone();
        self.consumer.add_partitions(&topic, &starts)?;
        self.track(&starts, &BTreeMap::new(), true);
        Ok(())
    }

    /// Commits the offsets of the newest completed checkpoint to the consumer group, if the
    /// source names one.
    fn commit_completed(&mut self) {
        let Some(text) = self.position.take_completed() else {
            return;
        };
        if !self.options.commit_to_group {
            return;
        }
        let topic = self.options.topic.clone();
        let result = parse_offsets(&text)
            .map_err(ConnectorError::Io)
            .and_then(|offsets| self.consumer.commit(&topic, &offsets));
        if let Err(e) = result {
            // Only monitoring depends on it: the next checkpoint commits again.
            tracing::warn!(topic = %topic, error = %e, "kafka offsets not committed to the group");
        }
    }

    /// Publishes the resolved start of each partition that started at the latest offset and
    /// has yielded nothing yet, so that a checkpoint taken before its first message restores
    /// it there (not at the latest offset of the restore, which would skip the messages
    /// produced in between).
    fn publish_resolved_starts(&mut self) {
        let unresolved: Vec<i32> = self
            .partitions
            .iter()
            .filter(|(p, s)| s.start == StartOffset::Latest && !self.yielded.contains_key(p))
            .map(|(p, _)| *p)
            .collect();
        if unresolved.is_empty() {
            return;
        }
        let resolved = self.consumer.positions(&self.options.topic, &unresolved);
        if resolved.is_empty() {
            return;
        }
        self.yielded.extend(resolved);
        self.position.set(format_offsets(&self.yielded));
    }

    /// Bounded mode: learns end offsets from fetches; true once every partition is read.
    fn bounded_read_complete(&mut self) -> bool {
        let mut complete = true;
        for (partition, state) in self.partitions.iter_mut() {
            let watermarks = self
                .consumer
                .fetched_watermarks(&self.options.topic, *partition);
            if state.end.is_none() {
                state.end = watermarks.map(|w| w.high);
            }
            complete &= state.complete(watermarks.map_or(0, |w| w.low));
        }
        complete
    }

    /// The next batch, `None` at the end of a bounded read. Every batch holds messages of
    /// one partition. A batch may be empty when every message it read was malformed (its
    /// position still moves past them).
    async fn next_batch(&mut self) -> ConnectorResult<Option<RecordBatch>> {
        if let Some((partition, records)) = self.pending.pop_front() {
            return self.yield_batch(partition, records).map(Some);
        }
        if !self.assigned {
            self.assign().await?;
        }
        let mut records: Vec<KafkaRecord> = Vec::new();
        loop {
            self.commit_completed();
            self.discover().await?;
            if self.options.bounded && self.bounded_read_complete() {
                return Ok(None);
            }
            if self.partitions.is_empty() {
                // No partition for this reader (yet): an unbounded source stays open, quiet
                // and idle, looking for new partitions now and then.
                tokio::time::sleep(POLL).await;
                continue;
            }
            let Some(record) = self.consumer.next_record(POLL).await? else {
                self.publish_resolved_starts();
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
        // One batch per partition, each partition's messages in offset order.
        let mut runs: Vec<(i32, Vec<KafkaRecord>)> = Vec::new();
        for record in records {
            match runs.iter_mut().find(|(p, _)| *p == record.partition) {
                Some((_, run)) => run.push(record),
                None => runs.push((record.partition, vec![record])),
            }
        }
        self.pending.extend(runs);
        let (partition, records) = self.pending.pop_front().expect("one message was accepted");
        self.yield_batch(partition, records).map(Some)
    }

    /// Decodes the messages of one partition into the batch to yield, and publishes the
    /// position after it and its partition.
    fn yield_batch(
        &mut self,
        partition: i32,
        records: Vec<KafkaRecord>,
    ) -> ConnectorResult<RecordBatch> {
        let (values, keys, kept, upserts) = if self.options.upsert {
            let (values, keys, kept, upserts) = self.decode_upserts(&records)?;
            (values, Some(keys), Some(kept), Some(upserts))
        } else {
            let (values, keys, kept) = self.decode(&records)?;
            (values, keys, kept, None)
        };
        let batch = self.layout.assemble(
            &self.options.topic,
            values,
            keys.as_ref(),
            &records,
            kept.as_deref(),
        )?;
        let batch = match upserts {
            Some(flags) => self.layout.with_upsert_flags(batch, flags)?,
            None => batch,
        };
        self.metrics.add_rows(batch.num_rows() as u64);
        if let Some(last) = records.last() {
            self.yielded.insert(partition, last.offset + 1);
        }
        if !self.yielded.is_empty() {
            self.position.set(format_offsets(&self.yielded));
        }
        self.announced.batch_from(partition);
        Ok(batch)
    }

    /// Decodes the values (and keys) of `records`: the decoded values, the decoded keys, and
    /// which records they came from (`None`: every record). A message whose value or key does
    /// not decode is counted once as malformed and left out.
    #[allow(clippy::type_complexity)]
    fn decode(
        &self,
        records: &[KafkaRecord],
    ) -> ConnectorResult<(RecordBatch, Option<RecordBatch>, Option<Vec<usize>>)> {
        let values = self.decoder.decode(records)?;
        let Some(key_decoder) = &self.keys else {
            let kept = match &self.probe {
                Some(probe) if values.num_rows() < records.len() => {
                    Some(decodable(probe, records)?)
                }
                _ => None,
            };
            return Ok((values, None, kept));
        };
        // The keys as the payloads of records the decoder reads (partition and offset kept
        // for its messages).
        let key_records: Vec<KafkaRecord> = records.iter().map(key_record).collect();
        let keys = key_decoder.decode(&key_records)?;
        if values.num_rows() == records.len() && keys.num_rows() == records.len() {
            return Ok((values, Some(keys), None));
        }
        let probe = self.probe.as_ref().expect("a probe when keys are read");
        let value_ok = decodable(probe, records)?;
        let key_ok = decodable(key_decoder, &key_records)?;
        if value_ok.len() != values.num_rows() || key_ok.len() != keys.num_rows() {
            // Decoding one at a time disagreed with decoding together: never guess the rows.
            return Err(ConnectorError::Io(format!(
                "kafka source '{}': messages decoded one by one disagree with the batch",
                self.source_name
            )));
        }
        let mut kept = Vec::new();
        for &i in &value_ok {
            if key_ok.binary_search(&i).is_ok() {
                kept.push(i);
            } else {
                self.key_malformed(&records[i], "")?;
            }
        }
        let rows_of = |ok: &[usize]| -> UInt32Array {
            kept.iter()
                .map(|i| ok.binary_search(i).expect("kept rows decoded") as u32)
                .collect()
        };
        let values = take_record_batch(&values, &rows_of(&value_ok))?;
        let keys = take_record_batch(&keys, &rows_of(&key_ok))?;
        Ok((values, Some(keys), Some(kept)))
    }

    /// Decodes the messages of an upsert source: every key, and the values of the messages
    /// that have one (a message without a value deletes its key's row). Returns the values
    /// (NULL rows for the deletes), the keys, which records they came from, and per row
    /// whether it upserts. A message whose key, or whose value, does not decode is counted
    /// once as malformed and left out.
    #[allow(clippy::type_complexity)]
    fn decode_upserts(
        &self,
        records: &[KafkaRecord],
    ) -> ConnectorResult<(RecordBatch, RecordBatch, Vec<usize>, BooleanArray)> {
        let key_decoder = self
            .keys
            .as_ref()
            .ok_or_else(|| ConnectorError::Io("upsert-kafka: no key decoder".to_string()))?;
        let probe = self.probe.as_ref().expect("a probe when keys are read");
        let key_records: Vec<KafkaRecord> = records.iter().map(key_record).collect();
        let keys = key_decoder.decode(&key_records)?;
        let key_ok: Vec<usize> = if keys.num_rows() == records.len() {
            (0..records.len()).collect()
        } else {
            decodable(key_decoder, &key_records)?
        };
        // The messages with a value, and which of them decode.
        let live: Vec<usize> = (0..records.len())
            .filter(|i| records[*i].payload.is_some())
            .collect();
        // Without tombstones (the usual batch) the records are decoded as they are; only a
        // batch with some copies the others out.
        let copied: Vec<KafkaRecord>;
        let live_records: &[KafkaRecord] = if live.len() == records.len() {
            records
        } else {
            copied = live.iter().map(|i| records[*i].clone()).collect();
            &copied
        };
        let values = self.decoder.decode(live_records)?;
        let value_ok: Vec<usize> = if values.num_rows() == live.len() {
            live.clone()
        } else {
            decodable(probe, live_records)?
                .into_iter()
                .map(|i| live[i])
                .collect()
        };
        if key_ok.len() != keys.num_rows() || value_ok.len() != values.num_rows() {
            return Err(ConnectorError::Io(format!(
                "kafka source '{}': messages decoded one by one disagree with the batch",
                self.source_name
            )));
        }
        let mut kept = Vec::with_capacity(records.len());
        let mut key_rows = Vec::with_capacity(records.len());
        let mut value_rows: Vec<Option<u32>> = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            let value = value_ok.binary_search(&i).ok();
            let tombstone = record.payload.is_none();
            if !tombstone && value.is_none() {
                // Counted by the value decoder.
                continue;
            }
            let Ok(key) = key_ok.binary_search(&i) else {
                let why = if record.key.is_none() {
                    " (no key)"
                } else {
                    ""
                };
                self.key_malformed(record, why)?;
                continue;
            };
            kept.push(i);
            key_rows.push(key as u32);
            value_rows.push(value.map(|v| v as u32));
        }
        let upserts: BooleanArray = value_rows.iter().map(|v| Some(v.is_some())).collect();
        // The deletes' rows are NULL values, whatever the columns declare.
        let indices = UInt32Array::from(value_rows);
        let columns = values
            .columns()
            .iter()
            .map(|c| take(c.as_ref(), &indices, None))
            .collect::<Result<Vec<_>, _>>()?;
        let nullable: Vec<_> = values
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let values = RecordBatch::try_new_with_options(
            Arc::new(datafusion::arrow::datatypes::Schema::new(nullable)),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(indices.len())),
        )?;
        let keys = take_record_batch(&keys, &UInt32Array::from(key_rows))?;
        Ok((values, keys, kept, upserts))
    }

    /// Reports a message whose key does not decode (`why` completes the reason); its raw
    /// bytes are the key's.
    fn key_malformed(&self, record: &KafkaRecord, why: &str) -> ConnectorResult<()> {
        self.metrics.malformed_row(|| MalformedRow {
            position: decode::message_position(&self.options.topic, record),
            reason: format!("the key does not decode as key.format{why}"),
            raw: record.key.clone().filter(|_| self.metrics.keeps_raw()),
        })
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
        if self.options.bounded {
            if state.end.is_none() {
                state.end = self
                    .consumer
                    .fetched_watermarks(&self.options.topic, record.partition)
                    .map(|w| w.high);
            }
            if let StopMode::Timestamp(t) = self.options.stop
                && record.timestamp_ms.is_some_and(|ts| ts >= t)
            {
                // The bound: this partition ends before this message.
                state.end = Some(state.end.map_or(record.offset, |e| e.min(record.offset)));
                state.next = Some(record.offset);
            }
            if state.end.is_some_and(|end| record.offset >= end) {
                return false;
            }
        }
        if let Some(t) = state.from_time {
            if record.timestamp_ms.is_none_or(|ts| ts < t) {
                // Before the startup time: read past, never yielded.
                state.next = Some(record.offset + 1);
                return false;
            }
            state.from_time = None;
        }
        state.next = Some(record.offset + 1);
        records.push(record);
        true
    }
}

/// A message's key as the payload of a record a key decoder reads (partition and offset kept
/// for its reports).
fn key_record(record: &KafkaRecord) -> KafkaRecord {
    KafkaRecord {
        partition: record.partition,
        offset: record.offset,
        payload: record.key.clone(),
        key: None,
        timestamp_ms: None,
        timestamp_type: Default::default(),
        headers: Vec::new(),
    }
}

/// The indices of the messages whose values `decoder` decodes, one at a time.
fn decodable(decoder: &ValueDecoder, records: &[KafkaRecord]) -> ConnectorResult<Vec<usize>> {
    let mut ok = Vec::new();
    for (i, record) in records.iter().enumerate() {
        if decoder.decode(std::slice::from_ref(record))?.num_rows() == 1 {
            ok.push(i);
        }
    }
    Ok(ok)
}

#[cfg(test)]
mod tests;
