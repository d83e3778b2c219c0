//! `--kafka-decode`: how fast the Kafka source turns JSON messages into Arrow batches, per
//! core, without a broker.
//!
//! The messages are Nexmark bids as JSON objects (Flink's JSON form, about 150 bytes each),
//! spread over 4 partitions and served by an in-memory [`KafkaClient`]: the run measures the
//! reader itself (one owned record per message, as the rdkafka client hands them over,
//! batching by partition, arrow-json decoding, positions), not a broker or the network. The
//! baseline is arrow-json's decoder over the same messages as one newline-delimited buffer, in
//! the same process: the ceiling for any JSON source built on it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::json::ReaderBuilder;
use eddy_connectors::kafka::{
    KafkaClient, KafkaConnector, KafkaConsumer, KafkaRecord, StartOffset, Watermarks,
};
use eddy_engine::connector::{
    ConnectorResult, SourceConnector, SourceContext, SourceMetrics, SourceSplit,
};
use futures::StreamExt;

use crate::BenchResult;
use crate::measure::{Meter, millions};

const PARTITIONS: usize = 4;

/// The messages of each partition.
struct Topic {
    partitions: Vec<Vec<Vec<u8>>>,
}

/// A consumer reading `Topic` from memory, round-robin over its assigned partitions.
struct MemoryConsumer {
    topic: Arc<Topic>,
    next: BTreeMap<i32, usize>,
    turn: usize,
}

/// The client of the in-memory topic.
struct MemoryClient(Arc<Topic>);

impl KafkaClient for MemoryClient {
    fn consumer(
        &self,
        _properties: &BTreeMap<String, String>,
    ) -> ConnectorResult<Box<dyn KafkaConsumer>> {
        Ok(Box::new(MemoryConsumer {
            topic: Arc::clone(&self.0),
            next: BTreeMap::new(),
            turn: 0,
        }))
    }
}

#[async_trait]
impl KafkaConsumer for MemoryConsumer {
    async fn partitions(&mut self, _topic: &str, _timeout: Duration) -> ConnectorResult<Vec<i32>> {
        Ok((0..self.topic.partitions.len() as i32).collect())
    }

    fn assign(&mut self, _topic: &str, starts: &[(i32, StartOffset)]) -> ConnectorResult<()> {
        for (partition, _) in starts {
            self.next.insert(*partition, 0);
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
        _partitions: &[i32],
        _timeout: Duration,
    ) -> ConnectorResult<BTreeMap<i32, i64>> {
        Ok(BTreeMap::new())
    }

    fn commit(&mut self, _topic: &str, _offsets: &BTreeMap<i32, i64>) -> ConnectorResult<()> {
        Ok(())
    }

    async fn next_record(&mut self, _timeout: Duration) -> ConnectorResult<Option<KafkaRecord>> {
        // Runs of up to 500 messages per partition, as a fetch delivers them.
        for _ in 0..self.next.len() {
            let partition = (self.turn / 500) % self.next.len();
            self.turn += 1;
            let next = self.next.get_mut(&(partition as i32)).expect("assigned");
            if let Some(payload) = self.topic.partitions[partition].get(*next) {
                let record = KafkaRecord {
                    partition: partition as i32,
                    offset: *next as i64,
                    payload: Some(payload.clone()),
                    key: None,
                    timestamp_ms: None,
                    timestamp_type: Default::default(),
                    headers: Vec::new(),
                };
                *next += 1;
                return Ok(Some(record));
            }
            self.turn = (self.turn / 500 + 1) * 500;
        }
        Ok(None)
    }

    fn positions(&self, _topic: &str, partitions: &[i32]) -> BTreeMap<i32, i64> {
        partitions
            .iter()
            .filter_map(|p| Some((*p, *self.next.get(p)? as i64)))
            .collect()
    }

    fn fetched_watermarks(&self, _topic: &str, partition: i32) -> Option<Watermarks> {
        Some(Watermarks {
            low: 0,
            high: self.topic.partitions[partition as usize].len() as i64,
        })
    }
}

fn bid_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, true),
        Field::new("bidder", DataType::Int64, true),
        Field::new("price", DataType::Int64, true),
        Field::new("channel", DataType::Utf8, true),
        Field::new("url", DataType::Utf8, true),
        Field::new(
            "date_time",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
        Field::new("extra", DataType::Utf8, true),
    ]))
}

/// Bid `i` as a JSON message.
fn bid(i: u64) -> Vec<u8> {
    let ms = i * 10;
    format!(
        r#"{{"auction":{},"bidder":{},"price":{},"channel":"channel-{}","url":"https://www.nexmark.com/item.htm?query=1&channel_id={}","date_time":"2024-01-01 00:{:02}:{:02}.{:03}","extra":""}}"#,
        1000 + i % 997,
        2000 + i % 3571,
        100 + (i * 7919) % 100_000,
        i % 5,
        i % 10_000,
        (ms / 60_000) % 60,
        (ms / 1000) % 60,
        ms % 1000
    )
    .into_bytes()
}

/// Decodes `events` bid messages through the Kafka source, then the same bytes with
/// arrow-json alone, and prints both rates.
pub async fn run(events: u64) -> BenchResult<()> {
    let mut partitions = vec![Vec::new(); PARTITIONS];
    let mut bytes = 0usize;
    for i in 0..events {
        let message = bid(i);
        bytes += message.len();
        partitions[i as usize % PARTITIONS].push(message);
    }
    let topic = Arc::new(Topic { partitions });
    let schema = bid_schema();
    let options = [
        ("topic", "bids"),
        ("properties.bootstrap.servers", "127.0.0.1:9"),
        ("format", "json"),
        ("scan.bounded.mode", "latest-offset"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let connector = KafkaConnector::new(Arc::new(MemoryClient(Arc::clone(&topic))));
    let metrics = Arc::new(SourceMetrics::default());
    let meter = Meter::start();
    let reader = connector.open(SourceContext {
        source_name: "bids".to_string(),
        schema: Arc::clone(&schema),
        projection: None,
        options,
        metrics: Arc::clone(&metrics),
        batch_size: 8192,
        split: SourceSplit::WHOLE,
        parallelism: 1,
        start_row: 0,
        start_position: None,
        metadata: Vec::new(),
    })?;
    let mut rows = 0u64;
    let mut stream = reader.stream;
    while let Some(batch) = stream.next().await {
        rows += batch?.num_rows() as u64;
    }
    let source = meter.stop();
    if rows != events || metrics.malformed() != 0 {
        return Err(format!(
            "the source decoded {rows} rows of {events} ({} malformed)",
            metrics.malformed()
        )
        .into());
    }

    // The ceiling: arrow-json over one newline-delimited buffer of the same messages.
    let mut buffer = Vec::with_capacity(bytes + events as usize);
    for partition in &topic.partitions {
        for message in partition {
            buffer.extend_from_slice(message);
            buffer.push(b'\n');
        }
    }
    let meter = Meter::start();
    let mut decoder = ReaderBuilder::new(Arc::clone(&schema))
        .with_batch_size(8192)
        .build_decoder()?;
    let mut rest = &buffer[..];
    let mut baseline_rows = 0u64;
    while !rest.is_empty() {
        let read = decoder.decode(rest)?;
        rest = &rest[read..];
        if let Some(batch) = decoder.flush()? {
            baseline_rows += batch.num_rows() as u64;
        }
    }
    if let Some(batch) = decoder.flush()? {
        baseline_rows += batch.num_rows() as u64;
    }
    let baseline = meter.stop();
    if baseline_rows != events {
        return Err(format!("arrow-json decoded {baseline_rows} rows of {events}").into());
    }

    println!(
        "| path | messages | MB | M messages/s (wall) | M messages/CPU-s | MB/s (wall) |\n|---|---|---|---|---|---|"
    );
    for (name, cost) in [
        ("kafka source (in-memory client, 1 reader)", source),
        ("arrow-json alone, one buffer", baseline),
    ] {
        println!(
            "| {name} | {events} | {:.0} | {} | {} | {:.0} |",
            bytes as f64 / 1e6,
            millions(Some(cost.per_second(events))),
            millions(cost.per_cpu_second(events)),
            bytes as f64 / 1e6 / cost.wall.as_secs_f64().max(1e-9)
        );
    }
    Ok(())
}
