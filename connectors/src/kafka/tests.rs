//! The reader against an in-memory [`KafkaClient`]: assignment, bounded ends and positions.

use std::sync::Mutex;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use eddy_engine::connector::{DeadLetterSink, OnError, SourceMetrics, SourceSplit};
use futures::StreamExt;

use super::*;

/// A message in memory: its key and its value (`None`: a tombstone).
type Message = (Option<String>, Option<String>);

/// A topic in memory: the messages of each partition, by offset.
#[derive(Default)]
struct MemoryTopic {
    partitions: Mutex<Vec<Vec<Message>>>,
    /// The offsets committed to the consumer group, per partition.
    committed: Mutex<BTreeMap<i32, i64>>,
}

impl MemoryTopic {
    fn new(partitions: usize) -> Arc<Self> {
        Arc::new(Self {
            partitions: Mutex::new(vec![Vec::new(); partitions]),
            committed: Mutex::default(),
        })
    }

    fn add_partition(&self) {
        self.partitions.lock().unwrap().push(Vec::new());
    }

    fn produce(&self, partition: usize, value: &str) {
        self.partitions.lock().unwrap()[partition].push((None, Some(value.to_string())));
    }

    fn produce_keyed(&self, partition: usize, key: &str, value: &str) {
        self.partitions.lock().unwrap()[partition]
            .push((Some(key.to_string()), Some(value.to_string())));
    }

    fn produce_tombstone(&self, partition: usize, key: &str) {
        self.partitions.lock().unwrap()[partition].push((Some(key.to_string()), None));
    }
}

impl KafkaClient for Arc<MemoryTopic> {
    fn consumer(
        &self,
        _properties: &BTreeMap<String, String>,
    ) -> ConnectorResult<Box<dyn KafkaConsumer>> {
        Ok(Box::new(MemoryConsumer {
            topic: Arc::clone(self),
            next: BTreeMap::new(),
            fetched: BTreeMap::new(),
        }))
    }
}

struct MemoryConsumer {
    topic: Arc<MemoryTopic>,
    next: BTreeMap<i32, i64>,
    /// The high watermark of each partition's latest fetch.
    fetched: BTreeMap<i32, i64>,
}

#[async_trait]
impl KafkaConsumer for MemoryConsumer {
    async fn partitions(&mut self, _topic: &str, _timeout: Duration) -> ConnectorResult<Vec<i32>> {
        Ok((0..self.topic.partitions.lock().unwrap().len() as i32).collect())
    }

    fn assign(&mut self, _topic: &str, starts: &[(i32, StartOffset)]) -> ConnectorResult<()> {
        let partitions = self.topic.partitions.lock().unwrap();
        for (partition, start) in starts {
            let offset = match start {
                StartOffset::Earliest => 0,
                StartOffset::Latest => partitions[*partition as usize].len() as i64,
                StartOffset::At(offset) => *offset,
            };
            self.next.insert(*partition, offset);
        }
        Ok(())
    }

    fn add_partitions(
        &mut self,
        topic: &str,
        starts: &[(i32, StartOffset)],
    ) -> ConnectorResult<()> {
        self.assign(topic, starts)
    }

    async fn committed(
        &mut self,
        _topic: &str,
        partitions: &[i32],
        _timeout: Duration,
    ) -> ConnectorResult<BTreeMap<i32, i64>> {
        let committed = self.topic.committed.lock().unwrap();
        Ok(partitions
            .iter()
            .filter_map(|p| Some((*p, *committed.get(p)?)))
            .collect())
    }

    fn commit(&mut self, _topic: &str, offsets: &BTreeMap<i32, i64>) -> ConnectorResult<()> {
        self.topic.committed.lock().unwrap().extend(offsets);
        Ok(())
    }

    async fn next_record(&mut self, timeout: Duration) -> ConnectorResult<Option<KafkaRecord>> {
        let record = {
            let partitions = self.topic.partitions.lock().unwrap();
            let mut found = None;
            for (partition, next) in self.next.iter_mut() {
                let values = &partitions[*partition as usize];
                self.fetched.insert(*partition, values.len() as i64);
                if let Some((key, value)) = values.get(*next as usize) {
                    found = Some(KafkaRecord {
                        partition: *partition,
                        offset: *next,
                        payload: value.clone().map(String::into_bytes),
                        key: key.clone().map(String::into_bytes),
                        // Every message is stamped its offset in seconds.
                        timestamp_ms: Some(*next * 1000),
                        timestamp_type: TimestampType::CreateTime,
                        headers: Vec::new(),
                    });
                    *next += 1;
                    break;
                }
            }
            found
        };
        if record.is_none() {
            tokio::time::sleep(timeout.min(Duration::from_millis(5))).await;
        }
        Ok(record)
    }

    fn positions(&self, _topic: &str, partitions: &[i32]) -> BTreeMap<i32, i64> {
        partitions
            .iter()
            .filter_map(|p| Some((*p, *self.next.get(p)?)))
            .collect()
    }

    fn fetched_watermarks(&self, _topic: &str, partition: i32) -> Option<Watermarks> {
        self.fetched.get(&partition).map(|high| Watermarks {
            low: 0,
            high: *high,
        })
    }
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]))
}

fn options(pairs: &[(&str, &str)]) -> ConnectorOptions {
    let mut o: ConnectorOptions = [
        ("connector", "kafka"),
        ("topic", "t"),
        ("properties.bootstrap.servers", "127.0.0.1:1"),
        ("format", "json"),
        ("scan.bounded.mode", "latest-offset"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in pairs {
        o.insert(k.to_string(), v.to_string());
    }
    o
}

/// A context reading every column of source `s` as its only reader, from the start.
fn context(
    schema: SchemaRef,
    options: ConnectorOptions,
    metrics: &Arc<SourceMetrics>,
    batch_size: usize,
) -> SourceContext {
    SourceContext {
        source_name: "s".to_string(),
        schema,
        projection: None,
        options,
        metrics: Arc::clone(metrics),
        batch_size,
        split: SourceSplit::WHOLE,
        parallelism: 1,
        start_row: 0,
        start_position: None,
        metadata: Vec::new(),
    }
}

/// Validates and opens `connector` over a source declared `declared` with `options` (batches
/// of `batch_size`), and reads it to its end.
async fn read_batches(
    connector: &KafkaConnector,
    declared: &SchemaRef,
    options: &ConnectorOptions,
    metrics: &Arc<SourceMetrics>,
) -> Vec<RecordBatch> {
    connector.validate(declared, options).unwrap();
    let reader = connector
        .open(context(Arc::clone(declared), options.clone(), metrics, 10))
        .unwrap();
    reader.stream.map(|b| b.unwrap()).collect().await
}

/// Reads a bounded source to its end: the values, and the position after the last batch.
async fn read(
    topic: &Arc<MemoryTopic>,
    options: ConnectorOptions,
    split: SourceSplit,
    start_position: Option<String>,
) -> (Vec<i64>, Option<String>, Arc<SourceMetrics>) {
    let connector = KafkaConnector::new(Arc::new(Arc::clone(topic)));
    connector.validate(&schema(), &options).unwrap();
    let metrics = Arc::new(SourceMetrics::default());
    let reader = connector
        .open(SourceContext {
            split,
            parallelism: 1,
            start_position,
            ..context(schema(), options, &metrics, 2)
        })
        .unwrap();
    assert!(reader.bounded);
    let position = reader.position.unwrap();
    let batches: Vec<_> = tokio::time::timeout(
        Duration::from_secs(10),
        reader.stream.map(|b| b.unwrap()).collect::<Vec<_>>(),
    )
    .await
    .expect("a bounded read ends");
    let mut values: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    values.sort_unstable();
    (values, position.get(), metrics)
}

fn produce(topic: &MemoryTopic, partition: usize, values: std::ops::Range<i64>) {
    for v in values {
        topic.produce(partition, &format!("{{\"v\":{v}}}"));
    }
}

#[tokio::test]
async fn a_bounded_read_ends_at_the_end_offsets_and_publishes_next_offsets() {
    let topic = MemoryTopic::new(2);
    produce(&topic, 0, 0..5);
    produce(&topic, 1, 10..13);
    topic.produce(1, "oops");
    let (values, position, metrics) = read(&topic, options(&[]), SourceSplit::WHOLE, None).await;
    assert_eq!(values, vec![0, 1, 2, 3, 4, 10, 11, 12]);
    assert_eq!(metrics.malformed(), 1);
    // The next offsets to read: past the malformed message too.
    assert_eq!(
        position.as_deref(),
        Some("partition:0,offset:5;partition:1,offset:4")
    );

    // Resuming from that position reads only what was produced since.
    produce(&topic, 0, 5..7);
    let (values, position, _) = read(&topic, options(&[]), SourceSplit::WHOLE, position).await;
    assert_eq!(values, vec![5, 6]);
    assert_eq!(
        position.as_deref(),
        Some("partition:0,offset:7;partition:1,offset:4")
    );
}

#[tokio::test]
async fn startup_modes_choose_where_partitions_start() {
    let topic = MemoryTopic::new(2);
    produce(&topic, 0, 0..5);
    produce(&topic, 1, 10..13);
    let (values, ..) = read(
        &topic,
        options(&[
            ("scan.startup.mode", "specific-offsets"),
            ("scan.startup.specific-offsets", "partition:0,offset:3"),
        ]),
        SourceSplit::WHOLE,
        None,
    )
    .await;
    assert_eq!(
        values,
        vec![3, 4, 10, 11, 12],
        "partition 1 from the earliest"
    );
    let (values, position, _) = read(
        &topic,
        options(&[("scan.startup.mode", "latest-offset")]),
        SourceSplit::WHOLE,
        None,
    )
    .await;
    assert!(values.is_empty());
    assert_eq!(
        position.as_deref(),
        Some("partition:0,offset:5;partition:1,offset:3"),
        "nothing read: the latest offsets the reader started at"
    );
}

#[tokio::test]
async fn readers_of_a_split_source_share_the_partitions() {
    let topic = MemoryTopic::new(3);
    produce(&topic, 0, 0..2);
    produce(&topic, 1, 10..12);
    produce(&topic, 2, 20..22);
    let (first, ..) = read(
        &topic,
        options(&[]),
        SourceSplit { index: 0, count: 2 },
        None,
    )
    .await;
    let (second, ..) = read(
        &topic,
        options(&[]),
        SourceSplit { index: 1, count: 2 },
        None,
    )
    .await;
    assert_eq!(first, vec![0, 1, 20, 21]);
    assert_eq!(second, vec![10, 11]);
}

/// Opens a reader of `topic` over the whole topic.
fn open(topic: &Arc<MemoryTopic>, options: ConnectorOptions) -> (SourceReader, Arc<SourceMetrics>) {
    open_with(topic, options, SourceMetrics::default())
}

/// Opens a reader whose malformed rows go to `metrics` (and what its policy says).
fn open_with(
    topic: &Arc<MemoryTopic>,
    options: ConnectorOptions,
    metrics: SourceMetrics,
) -> (SourceReader, Arc<SourceMetrics>) {
    let connector = KafkaConnector::new(Arc::new(Arc::clone(topic)));
    connector.validate(&schema(), &options).unwrap();
    let metrics = Arc::new(metrics);
    let reader = connector
        .open(context(schema(), options, &metrics, 3))
        .unwrap();
    (reader, metrics)
}

/// The values of the next batch, and the partition the reader said it came from.
async fn next(reader: &mut SourceReader) -> (Vec<i64>, i32) {
    let batch = tokio::time::timeout(Duration::from_secs(10), reader.stream.next())
        .await
        .expect("a batch comes")
        .expect("the stream goes on")
        .unwrap();
    let values = batch
        .column(0)
        .as_primitive::<Int64Type>()
        .values()
        .to_vec();
    let partition = reader.partitions.as_ref().unwrap().current().unwrap();
    (values, partition)
}

fn unbounded(pairs: &[(&str, &str)]) -> ConnectorOptions {
    let mut o = options(pairs);
    o.remove("scan.bounded.mode");
    o
}

#[tokio::test]
async fn every_batch_holds_one_partition_s_messages_and_says_which() {
    let topic = MemoryTopic::new(3);
    produce(&topic, 0, 0..4);
    produce(&topic, 1, 100..103);
    produce(&topic, 2, 200..202);
    let (mut reader, _) = open(&topic, options(&[]));
    let partitions = Arc::clone(reader.partitions.as_ref().unwrap());
    let mut seen = 0;
    while let Some(batch) = reader.stream.next().await {
        let values = batch
            .unwrap()
            .column(0)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec();
        let partition = partitions.current().unwrap() as i64;
        assert!(
            values.iter().all(|v| v / 100 == partition),
            "batch {values:?} said partition {partition}"
        );
        seen += values.len();
    }
    assert_eq!(seen, 9);
    assert_eq!(partitions.assigned(), Some(vec![0, 1, 2]));
}

#[tokio::test]
async fn offsets_of_completed_checkpoints_are_committed_to_the_named_group() {
    let topic = MemoryTopic::new(1);
    produce(&topic, 0, 0..3);
    let (mut reader, _) = open(&topic, unbounded(&[("properties.group.id", "watchers")]));
    assert_eq!(next(&mut reader).await, (vec![0, 1, 2], 0));
    let position = Arc::clone(reader.position.as_ref().unwrap());
    assert_eq!(position.get().as_deref(), Some("partition:0,offset:3"));
    position.checkpoint_completed(position.get().unwrap());
    produce(&topic, 0, 3..4);
    assert_eq!(next(&mut reader).await, (vec![3], 0));
    assert_eq!(*topic.committed.lock().unwrap(), BTreeMap::from([(0, 3)]));

    // Without a group id nothing is committed.
    let topic = MemoryTopic::new(1);
    produce(&topic, 0, 0..3);
    let (mut reader, _) = open(&topic, unbounded(&[]));
    next(&mut reader).await;
    let position = Arc::clone(reader.position.as_ref().unwrap());
    position.checkpoint_completed(position.get().unwrap());
    produce(&topic, 0, 3..4);
    next(&mut reader).await;
    assert!(topic.committed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn group_offsets_startup_reads_the_committed_offsets_back() {
    let topic = MemoryTopic::new(2);
    produce(&topic, 0, 0..5);
    produce(&topic, 1, 100..102);
    topic.committed.lock().unwrap().insert(0, 3);
    let group = [
        ("scan.startup.mode", "group-offsets"),
        ("properties.group.id", "g"),
        ("properties.auto.offset.reset", "earliest"),
    ];
    let (values, ..) = read(&topic, options(&group), SourceSplit::WHOLE, None).await;
    assert_eq!(
        values,
        vec![3, 4, 100, 101],
        "partition 1 has no committed offset"
    );

    // Without auto.offset.reset a partition without a committed offset fails the reader.
    let (mut reader, _) = open(&topic, options(&group[..2]));
    let error = reader.stream.next().await.unwrap().unwrap_err().to_string();
    assert!(
        error.contains("no committed offset for partition 1"),
        "{error}"
    );
}

#[tokio::test]
async fn partitions_added_to_the_topic_are_found_and_read_from_the_start() {
    let topic = MemoryTopic::new(1);
    produce(&topic, 0, 0..2);
    let (mut reader, _) = open(
        &topic,
        unbounded(&[("scan.topic-partition-discovery.interval", "50 ms")]),
    );
    assert_eq!(next(&mut reader).await, (vec![0, 1], 0));
    topic.add_partition();
    produce(&topic, 1, 100..102);
    assert_eq!(next(&mut reader).await, (vec![100, 101], 1));
    assert_eq!(
        reader.partitions.as_ref().unwrap().assigned(),
        Some(vec![0, 1])
    );
}

#[tokio::test]
async fn a_malformed_message_fails_the_reader_with_on_error_fail() {
    let topic = MemoryTopic::new(1);
    produce(&topic, 0, 0..2);
    topic.produce(0, "not json");
    let failing = SourceMetrics::new("src", OnError::Fail, None).unwrap();
    let (mut reader, metrics) = open_with(&topic, options(&[]), failing);
    let error = reader.stream.next().await.unwrap().unwrap_err();
    assert!(
        matches!(&error, ConnectorError::MalformedRow { position, .. } if position == "t/0@2"),
        "{error:?}"
    );
    let error = error.to_string();
    assert!(error.contains("format.on-error = 'fail'"), "{error}");
    assert!(error.contains("invalid JSON"), "{error}");
    assert_eq!(metrics.malformed(), 1);
}

/// Records the dead letters it is given.
#[derive(Debug, Default)]
struct Letters(std::sync::Mutex<Vec<(String, MalformedRow)>>);

impl DeadLetterSink for Letters {
    fn append(&self, source: &str, rows: Vec<MalformedRow>) -> ConnectorResult<()> {
        let mut letters = self.0.lock().unwrap();
        letters.extend(rows.into_iter().map(|r| (source.to_string(), r)));
        Ok(())
    }
}

#[tokio::test]
async fn malformed_messages_become_dead_letters_with_their_value_and_offset() {
    let topic = MemoryTopic::new(1);
    produce(&topic, 0, 0..1);
    topic.produce(0, "not json");
    produce(&topic, 0, 1..2);
    let letters = Arc::new(Letters::default());
    let metrics = SourceMetrics::new(
        "src",
        OnError::DeadLetter,
        Some(Arc::clone(&letters) as Arc<dyn DeadLetterSink>),
    )
    .unwrap();
    let (mut reader, metrics) = open_with(&topic, options(&[]), metrics);
    assert_eq!(next(&mut reader).await, (vec![0, 1], 0));
    metrics.flush_dead_letters().unwrap();
    let letters = letters.0.lock().unwrap().clone();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let (source, row) = &letters[0];
    assert_eq!(source, "src");
    assert_eq!(row.position, "t/0@1");
    assert_eq!(row.raw.as_deref(), Some(&b"not json"[..]));
    assert!(row.reason.starts_with("invalid JSON"), "{}", row.reason);
    assert_eq!((metrics.malformed(), metrics.dead_letters()), (1, 1));
}

#[tokio::test]
async fn metadata_columns_come_from_each_message_and_follow_skipped_values() {
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use eddy_engine::connector::MetadataColumn;

    let topic = MemoryTopic::new(2);
    produce(&topic, 0, 0..2);
    topic.produce(0, "not json");
    produce(&topic, 0, 2..3);
    produce(&topic, 1, 100..101);
    // (p BIGINT METADATA FROM 'partition', v BIGINT, o BIGINT METADATA FROM 'offset')
    let declared = Arc::new(Schema::new(vec![
        Field::new("p", DataType::Int64, true),
        Field::new("v", DataType::Int64, true),
        Field::new("o", DataType::Int64, true),
    ]));
    let metadata = vec![
        MetadataColumn {
            column: 0,
            key: "partition".to_string(),
        },
        MetadataColumn {
            column: 2,
            key: "offset".to_string(),
        },
    ];
    let connector = KafkaConnector::new(Arc::new(Arc::clone(&topic)));
    let metrics = Arc::new(SourceMetrics::default());
    let read = |projection: Option<Vec<usize>>| {
        connector
            .open(SourceContext {
                projection,
                metadata: metadata.clone(),
                ..context(Arc::clone(&declared), options(&[]), &metrics, 10)
            })
            .unwrap()
    };
    let batches: Vec<RecordBatch> = read(None).stream.map(|b| b.unwrap()).collect().await;
    let mut lines: Vec<String> = pretty_format_batches(&batches)
        .unwrap()
        .to_string()
        .lines()
        .filter(|l| l.starts_with("| ") && !l.contains(" p "))
        .map(str::to_string)
        .collect();
    lines.sort();
    // The malformed message (partition 0, offset 2) is skipped; the rows after it keep their
    // own offsets.
    assert_eq!(
        lines,
        vec![
            "| 0 | 0   | 0 |",
            "| 0 | 1   | 1 |",
            "| 0 | 2   | 3 |",
            "| 1 | 100 | 0 |",
        ]
    );
    assert_eq!(
        metrics.malformed(),
        1,
        "counted once, not again by the probe"
    );

    // Only a metadata column, in another order than declared.
    let batches: Vec<RecordBatch> = read(Some(vec![2]))
        .stream
        .map(|b| b.unwrap())
        .collect()
        .await;
    let mut offsets: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    offsets.sort_unstable();
    assert_eq!(offsets, vec![0, 0, 1, 3]);
}

#[tokio::test]
async fn key_fields_come_from_the_keys_with_except_key() {
    let topic = MemoryTopic::new(1);
    topic.produce_keyed(0, r#"{"id":1}"#, r#"{"v":10}"#);
    topic.produce_keyed(0, "not json", r#"{"v":11}"#);
    topic.produce_keyed(0, r#"{"id":3}"#, "not json");
    topic.produce_keyed(0, r#"{"id":4}"#, r#"{"v":13}"#);
    // (id BIGINT, v BIGINT) with key.fields = 'id', EXCEPT_KEY.
    let declared = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("v", DataType::Int64, true),
    ]));
    let options = options(&[
        ("key.format", "json"),
        ("key.fields", "id"),
        ("value.fields-include", "EXCEPT_KEY"),
    ]);
    let connector = KafkaConnector::new(Arc::new(Arc::clone(&topic)));
    let metrics = Arc::new(SourceMetrics::default());
    let batches = read_batches(&connector, &declared, &options, &metrics).await;
    let column = |i: usize| -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| b.column(i).as_primitive::<Int64Type>().values().to_vec())
            .collect()
    };
    assert_eq!(column(0), vec![1, 4], "ids from the keys");
    assert_eq!(column(1), vec![10, 13], "values aligned with their keys");
    assert_eq!(
        metrics.malformed(),
        2,
        "a bad key and a bad value, each counted once"
    );
}

#[tokio::test]
async fn bounded_reads_stop_at_specific_or_committed_offsets() {
    let topic = MemoryTopic::new(3);
    produce(&topic, 0, 0..5);
    produce(&topic, 1, 10..15);
    produce(&topic, 2, 20..25);
    let (values, position, _) = read(
        &topic,
        options(&[
            ("scan.bounded.mode", "specific-offsets"),
            (
                "scan.bounded.specific-offsets",
                "partition:0,offset:2;partition:1,offset:5",
            ),
        ]),
        SourceSplit::WHOLE,
        None,
    )
    .await;
    assert_eq!(
        values,
        vec![0, 1, 10, 11, 12, 13, 14],
        "partition 2 is not listed: not read"
    );
    assert_eq!(
        position.as_deref(),
        Some("partition:0,offset:2;partition:1,offset:5")
    );

    topic.committed.lock().unwrap().extend([(1, 3), (2, 1)]);
    let (values, ..) = read(
        &topic,
        options(&[
            ("scan.bounded.mode", "group-offsets"),
            ("properties.group.id", "g"),
        ]),
        SourceSplit::WHOLE,
        None,
    )
    .await;
    assert_eq!(
        values,
        vec![10, 11, 12, 20],
        "partition 0 has no committed offset"
    );
}

#[tokio::test]
async fn an_upsert_source_flags_its_deletes_and_reads_key_fields_from_the_keys() {
    let topic = MemoryTopic::new(1);
    topic.produce_keyed(0, r#"{"id":1}"#, r#"{"id":99,"v":10}"#);
    topic.produce_tombstone(0, r#"{"id":1}"#);
    topic.produce_keyed(0, "not json", r#"{"v":11}"#);
    topic.produce_tombstone(0, "not json");
    topic.produce_keyed(0, r#"{"id":3}"#, "not json");
    topic.produce_keyed(0, r#"{"id":4}"#, r#"{"v":13}"#);
    // (id BIGINT NOT NULL, v BIGINT NOT NULL, PRIMARY KEY (id)): the engine sets key.fields.
    let declared = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
    ]));
    let mut options = options(&[("key.format", "json"), ("key.fields", "id")]);
    options.remove("format");
    options.insert("value.format".to_string(), "json".to_string());
    options.insert("connector".to_string(), "upsert-kafka".to_string());
    let connector = KafkaConnector::upsert(Arc::new(Arc::clone(&topic)));
    assert!(connector.upserts());
    let metrics = Arc::new(SourceMetrics::default());
    let batches = read_batches(&connector, &declared, &options, &metrics).await;
    let rows: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            (0..b.num_rows()).map(move |r| {
                let id = b.column(0).as_primitive::<Int64Type>().value(r);
                let v = b.column(1).as_primitive::<Int64Type>();
                let v = if v.is_null(r) {
                    "NULL".to_string()
                } else {
                    v.value(r).to_string()
                };
                let upsert = b.column(2).as_boolean().value(r);
                format!("{id} {v} {upsert}")
            })
        })
        .collect();
    assert_eq!(
        rows,
        ["1 10 true", "1 NULL false", "4 13 true"],
        "the key's id (not the value's), a tombstone as a delete, malformed messages skipped"
    );
    assert_eq!(batches[0].schema().field(2).name(), "__upsert");
    assert_eq!(metrics.malformed(), 3, "two bad keys and a bad value");

    // A value format that cannot leave the key fields out is refused with ALL.
    options.insert("value.format".to_string(), "csv".to_string());
    let e = connector.validate(&declared, &options).unwrap_err();
    assert!(matches!(e, ConnectorError::Unsupported(_)), "{e:?}");
    options.insert("value.format".to_string(), "json".to_string());
    options.insert("scan.startup.mode".to_string(), "latest-offset".to_string());
    let e = connector.validate(&declared, &options).unwrap_err();
    assert!(e.to_string().contains("upsert-kafka"), "{e}");
}

#[tokio::test]
async fn timestamp_startup_and_bound_read_from_and_stop_at_the_first_message_of_a_time() {
    // Partition 0's message at offset n is stamped n seconds; values are offsets + 10 * p.
    let topic = MemoryTopic::new(2);
    produce(&topic, 0, 0..6);
    produce(&topic, 1, 10..13);
    let (values, position, _) = read(
        &topic,
        options(&[
            ("scan.startup.mode", "timestamp"),
            ("scan.startup.timestamp-millis", "2500"),
            ("scan.bounded.mode", "timestamp"),
            ("scan.bounded.timestamp-millis", "5000"),
        ]),
        SourceSplit::WHOLE,
        None,
    )
    .await;
    assert_eq!(
        values,
        vec![3, 4],
        "from the first message at or after 2.5 s to the last before 5 s; partition 1 ends \
         at 3 s, before the startup time"
    );
    assert_eq!(position.as_deref(), Some("partition:0,offset:5"));

    // A restored position wins over the startup time.
    let (values, ..) = read(
        &topic,
        options(&[
            ("scan.startup.mode", "timestamp"),
            ("scan.startup.timestamp-millis", "2500"),
        ]),
        SourceSplit::WHOLE,
        Some("partition:0,offset:1".to_string()),
    )
    .await;
    assert_eq!(values, vec![1, 2, 3, 4, 5]);

    for (pairs, needle) in [
        (
            &[("scan.startup.mode", "timestamp")][..],
            "needs scan.startup.timestamp-millis",
        ),
        (
            &[("scan.startup.timestamp-millis", "1")][..],
            "needs scan.startup.mode = 'timestamp'",
        ),
        (
            &[
                ("scan.bounded.mode", "timestamp"),
                ("scan.bounded.timestamp-millis", "x"),
            ][..],
            "invalid value 'x'",
        ),
    ] {
        let e = KafkaOptions::parse(&options(pairs)).unwrap_err();
        assert!(e.to_string().contains(needle), "{e}");
    }
}

#[tokio::test]
async fn key_fields_prefix_tells_key_columns_from_value_columns_of_the_same_name() {
    let topic = MemoryTopic::new(1);
    topic.produce_keyed(0, r#"{"id":1}"#, r#"{"id":100,"v":10}"#);
    // (k_id BIGINT, id BIGINT, v BIGINT): k_id is the key's `id`, id the value's.
    let declared = Arc::new(Schema::new(vec![
        Field::new("k_id", DataType::Int64, true),
        Field::new("id", DataType::Int64, true),
        Field::new("v", DataType::Int64, true),
    ]));
    let options = options(&[
        ("key.format", "json"),
        ("key.fields", "k_id"),
        ("key.fields-prefix", "k_"),
        ("value.fields-include", "EXCEPT_KEY"),
    ]);
    let connector = KafkaConnector::new(Arc::new(Arc::clone(&topic)));
    let metrics = Arc::new(SourceMetrics::default());
    let batches = read_batches(&connector, &declared, &options, &metrics).await;
    let row: Vec<i64> = (0..3)
        .map(|c| batches[0].column(c).as_primitive::<Int64Type>().value(0))
        .collect();
    assert_eq!(row, vec![1, 100, 10]);

    let mut all = options.clone();
    all.remove("value.fields-include");
    assert!(
        KafkaOptions::parse(&all)
            .unwrap_err()
            .to_string()
            .contains("EXCEPT_KEY")
    );
    let mut unprefixed = options;
    unprefixed.insert("key.fields".to_string(), "id".to_string());
    let e = KafkaOptions::parse(&unprefixed).unwrap_err();
    assert!(e.to_string().contains("does not start with"), "{e}");
}

#[tokio::test]
async fn a_partition_started_at_the_latest_offset_publishes_it_before_its_first_message() {
    let topic = MemoryTopic::new(2);
    produce(&topic, 0, 0..3);
    produce(&topic, 1, 10..12);
    let mut options = options(&[("scan.startup.mode", "latest-offset")]);
    options.remove("scan.bounded.mode");
    let connector = KafkaConnector::new(Arc::new(Arc::clone(&topic)));
    let metrics = Arc::new(SourceMetrics::default());
    let mut reader = connector
        .open(context(schema(), options, &metrics, 10))
        .unwrap();
    let position = reader.position.take().unwrap();
    // No message comes: the reader waits, and publishes where it started.
    let waited = tokio::time::timeout(Duration::from_millis(600), reader.stream.next()).await;
    assert!(waited.is_err(), "no message to read");
    assert_eq!(
        position.get().as_deref(),
        Some("partition:0,offset:3;partition:1,offset:2"),
        "a checkpoint now restores each partition where it started"
    );
}
