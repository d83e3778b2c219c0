//! The reader against an in-memory [`KafkaClient`]: assignment, bounded ends and positions.

use std::sync::Mutex;

use async_trait::async_trait;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use eddy_engine::connector::{SourceMetrics, SourceSplit};
use futures::StreamExt;

use super::*;

/// A topic in memory: the values of each partition, by offset.
#[derive(Default)]
struct MemoryTopic {
    partitions: Mutex<Vec<Vec<String>>>,
}

impl MemoryTopic {
    fn new(partitions: usize) -> Arc<Self> {
        Arc::new(Self {
            partitions: Mutex::new(vec![Vec::new(); partitions]),
        })
    }

    fn produce(&self, partition: usize, value: &str) {
        self.partitions.lock().unwrap()[partition].push(value.to_string());
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

    async fn next_record(&mut self, timeout: Duration) -> ConnectorResult<Option<KafkaRecord>> {
        let record = {
            let partitions = self.topic.partitions.lock().unwrap();
            let mut found = None;
            for (partition, next) in self.next.iter_mut() {
                let values = &partitions[*partition as usize];
                self.fetched.insert(*partition, values.len() as i64);
                if let Some(value) = values.get(*next as usize) {
                    found = Some(KafkaRecord {
                        partition: *partition,
                        offset: *next,
                        payload: Some(value.clone().into_bytes()),
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
            source_name: "s".to_string(),
            schema: schema(),
            projection: None,
            options,
            metrics: Arc::clone(&metrics),
            batch_size: 2,
            split,
            start_row: 0,
            start_position,
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
    assert_eq!(position, None, "nothing read, no explicit start");
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
