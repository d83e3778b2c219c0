//! The `kafka` and `upsert-kafka` sink connectors: a query's rows as messages of one topic.
//!
//! ```sql
//! CREATE SINK big_bids AS SELECT auction, bidder, price, date_time FROM bids WHERE price > 100
//! WITH (connector = 'kafka', topic = 'big-bids', properties.bootstrap.servers = '127.0.0.1:9092',
//!       format = 'json', key.format = 'json', key.fields = 'auction',
//!       sink.delivery-guarantee = 'exactly-once');
//! ```
//!
//! Each row becomes one message: its value the row's columns ([`super::encode`]; all of them,
//! or those outside the key with `value.fields-include = 'EXCEPT_KEY'`), its key the
//! `key.fields` columns (or none). `upsert-kafka` writes an updating query's changelog as
//! keyed upserts and tombstones ([`super::upsert`]); a plain `kafka` sink refuses a changelog.
//!
//! # Partitions
//! `sink.partitioner = 'default'` leaves the choice to the client: by the key's murmur2 hash
//! (the partition Kafka's Java client, and so Flink, would choose; librdkafka's own default
//! hash differs) when keyed, spread by the client otherwise. `'fixed'`: every message of sink
//! instance `i` to partition `i % partitions` (Eddy runs one instance per sink, so partition
//! 0). `'round-robin'`: the sink's `n`-th message to partition `n % partitions`.
//!
//! # Delivery guarantees (`sink.delivery-guarantee`)
//! - `at-least-once` (the default): at each checkpoint barrier the writer waits until every
//!   message sent so far is acknowledged; a failed delivery fails the checkpoint and the job.
//!   After a crash the job resumes from its last checkpoint, so a message is never lost, and
//!   those sent after the checkpoint are sent again.
//! - `exactly-once`: Kafka transactions committed with the checkpoints
//!   ([`super::transaction`]); needs a checkpointing job.
//! - `none`: no wait at checkpoints (messages in flight at a crash may be lost).
//!
//! Whatever the guarantee, the end of input and `DROP SINK` wait for (or commit) every message,
//! and a failed delivery fails the job as soon as the writer learns of it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use eddy_engine::connector::{
    ConnectorError, ConnectorResult, SinkConnector, SinkContext, SinkMetrics, SinkWriter,
};

use super::client::{KafkaClient, KafkaProducer, ProducerRecord};
use super::encode::RowEncoder;
use super::librdkafka::RdKafkaClient;
use super::sink_options::{DeliveryGuarantee, KafkaSinkOptions, SinkPartitioner};
use super::transaction::{PreCommitRecord, Transactions};
use super::upsert::{Upsert, last_change_per_key, split_changelog};

/// The index of a sink's writer: Eddy runs one per sink.
pub(crate) const INSTANCE: usize = 0;

/// The producer's `message.timeout.ms` unless the sink's properties set it: how long a
/// message may wait for its acknowledgement before its delivery fails (librdkafka's default,
/// 300 s, would hold a checkpoint that long).
const MESSAGE_TIMEOUT_MS: u64 = 30_000;

/// How long the writer waits for the topic's metadata ('fixed' and 'round-robin').
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// The `kafka` or `upsert-kafka` sink connector.
#[derive(Clone)]
pub struct KafkaSinkConnector {
    client: Arc<dyn KafkaClient>,
    upsert: bool,
}

impl KafkaSinkConnector {
    /// `connector = 'kafka'`, producing through `client`.
    pub fn kafka(client: Arc<dyn KafkaClient>) -> Self {
        Self {
            client,
            upsert: false,
        }
    }

    /// `connector = 'upsert-kafka'`, producing through `client`.
    pub fn upsert(client: Arc<dyn KafkaClient>) -> Self {
        Self {
            client,
            upsert: true,
        }
    }

    /// Both connectors on rdkafka.
    pub fn both() -> [Self; 2] {
        let client: Arc<dyn KafkaClient> = Arc::new(RdKafkaClient);
        [Self::kafka(Arc::clone(&client)), Self::upsert(client)]
    }

    /// The options, encoders and the check that the job can do what they ask.
    fn parse(&self, ctx: &SinkContext) -> ConnectorResult<Parsed> {
        let options = KafkaSinkOptions::parse(&ctx.options, &ctx.schema, self.upsert)?;
        if options.delivery == DeliveryGuarantee::ExactlyOnce && !ctx.exactly_once {
            return Err(ConnectorError::Unsupported(format!(
                "sink.delivery-guarantee = 'exactly-once' for sink '{}' without checkpoints: \
                 Kafka transactions are committed with the job's checkpoints, and this job \
                 takes none (its checkpoint.interval is '0', or it reads a materialized view); \
                 set a checkpoint.interval, or use 'at-least-once'",
                ctx.sink_name
            )));
        }
        if ctx.changelog && !self.upsert {
            return Err(ConnectorError::Unsupported(format!(
                "a changelog into connector 'kafka', which {}",
                self.changelog_hint()
            )));
        }
        let key = options
            .key
            .as_ref()
            .map(|k| RowEncoder::new(&ctx.schema, k.columns.clone(), k.format.clone(), "key"))
            .transpose()?;
        let value = RowEncoder::new(
            &ctx.schema,
            options.value_columns.clone(),
            options.value_format.clone(),
            "value",
        )?;
        Ok(Parsed {
            options,
            key,
            value,
        })
    }
}

struct Parsed {
    options: KafkaSinkOptions,
    key: Option<RowEncoder>,
    value: RowEncoder,
}

impl SinkConnector for KafkaSinkConnector {
    fn name(&self) -> &'static str {
        if self.upsert { "upsert-kafka" } else { "kafka" }
    }

    fn accepts_changelog(&self) -> bool {
        self.upsert
    }

    fn changelog_hint(&self) -> &'static str {
        "appends messages; write the changelog as keyed upserts and tombstones with \
         connector = 'upsert-kafka' and key.fields = the GROUP BY columns, or window the \
         aggregate"
    }

    fn validate(&self, ctx: &SinkContext) -> ConnectorResult<()> {
        self.parse(ctx).map(|_| ())
    }

    fn open(&self, ctx: SinkContext) -> ConnectorResult<Box<dyn SinkWriter>> {
        let Parsed {
            options,
            key,
            value,
        } = self.parse(&ctx)?;
        let mut properties = options.properties.clone();
        properties
            .entry("message.timeout.ms".to_string())
            .or_insert_with(|| MESSAGE_TIMEOUT_MS.to_string());
        // Keys on the partitions Kafka's Java client (and so Flink) would choose.
        properties
            .entry("partitioner".to_string())
            .or_insert_with(|| "murmur2_random".to_string());
        if options.delivery != DeliveryGuarantee::None {
            // Retries neither duplicate nor reorder messages.
            properties
                .entry("enable.idempotence".to_string())
                .or_insert_with(|| "true".to_string());
        }
        let message_timeout = properties
            .get("message.timeout.ms")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(MESSAGE_TIMEOUT_MS);
        let transactions = (options.delivery == DeliveryGuarantee::ExactlyOnce).then(|| {
            Transactions::new(
                format!(
                    "{}-{}-{INSTANCE}",
                    options.transactional_id_prefix, ctx.sink_name
                ),
                options.topic.clone(),
                Arc::clone(&ctx.metrics),
            )
        });
        Ok(Box::new(KafkaSinkWriter {
            client: Arc::clone(&self.client),
            topic: options.topic,
            properties,
            flush_timeout: Duration::from_millis(message_timeout) + Duration::from_secs(10),
            key,
            value,
            changelog: ctx.changelog,
            upsert: self.upsert,
            partitioner: options.partitioner,
            partitions: None,
            sent: 0,
            delivery: options.delivery,
            transactions,
            producer: None,
            metrics: ctx.metrics,
        }))
    }
}

/// The producer, if made.
fn producer_of(producer: &mut Option<Box<dyn KafkaProducer>>) -> Option<&mut dyn KafkaProducer> {
    producer
        .as_mut()
        .map(|p| p.as_mut() as &mut dyn KafkaProducer)
}

/// Writes one sink's rows to its topic.
pub(crate) struct KafkaSinkWriter {
    client: Arc<dyn KafkaClient>,
    topic: String,
    /// The producer's configuration.
    properties: BTreeMap<String, String>,
    /// How long a flush may wait: a message fails after `message.timeout.ms`.
    flush_timeout: Duration,
    key: Option<RowEncoder>,
    value: RowEncoder,
    changelog: bool,
    upsert: bool,
    partitioner: SinkPartitioner,
    /// The topic's partition count, once needed ('fixed', 'round-robin').
    partitions: Option<i32>,
    /// Messages given a partition by 'round-robin'.
    sent: u64,
    delivery: DeliveryGuarantee,
    /// With `exactly-once`.
    transactions: Option<Transactions>,
    /// Made on first use, so that a sink that writes nothing never connects.
    producer: Option<Box<dyn KafkaProducer>>,
    metrics: Arc<SinkMetrics>,
}

impl KafkaSinkWriter {
    fn producer(&mut self) -> ConnectorResult<&mut dyn KafkaProducer> {
        if self.producer.is_none() {
            let id = self.transactions.as_ref().map(Transactions::id);
            self.producer = Some(self.client.producer(&self.properties, id)?);
        }
        producer_of(&mut self.producer)
            .ok_or_else(|| ConnectorError::Io("kafka sink: no producer".to_string()))
    }

    /// The partition of the next message.
    fn partition(&mut self) -> ConnectorResult<Option<i32>> {
        if self.partitioner == SinkPartitioner::Default {
            return Ok(None);
        }
        let count = match self.partitions {
            Some(count) => count,
            None => {
                let topic = self.topic.clone();
                let count = self.producer()?.partition_count(&topic, METADATA_TIMEOUT)?;
                self.partitions = Some(count);
                count
            }
        }
        .max(1);
        Ok(Some(match self.partitioner {
            SinkPartitioner::Fixed => (INSTANCE % count as usize) as i32,
            _ => {
                let partition = (self.sent % count as u64) as i32;
                self.sent += 1;
                partition
            }
        }))
    }

    /// The messages of a batch, in order.
    fn records(&mut self, batch: &RecordBatch) -> ConnectorResult<Vec<ProducerRecord>> {
        let (inserts, rows) = if self.changelog {
            split_changelog(batch)?
        } else {
            (vec![true; batch.num_rows()], batch.clone())
        };
        let mut values = self.value.encode(&rows)?;
        let mut keys = match &self.key {
            Some(key) => key.encode(&rows)?,
            None => vec![None; rows.num_rows()],
        };
        let chosen: Vec<(usize, bool)> = if self.upsert {
            if keys.iter().any(Option::is_none) {
                return Err(ConnectorError::Io(
                    "upsert-kafka: a row whose key is NULL (format 'raw') cannot be written as \
                     an upsert"
                        .to_string(),
                ));
            }
            let keys: Vec<&[u8]> = keys
                .iter()
                .map(|k| k.as_deref().unwrap_or_default())
                .collect();
            last_change_per_key(&keys, &inserts)
                .into_iter()
                .map(|u| match u {
                    Upsert::Value(row) => (row, true),
                    Upsert::Delete(row) => (row, false),
                })
                .collect()
        } else {
            (0..rows.num_rows()).map(|row| (row, true)).collect()
        };
        let mut records = Vec::with_capacity(chosen.len());
        for (row, with_value) in chosen {
            records.push(ProducerRecord {
                partition: self.partition()?,
                key: keys[row].take(),
                value: if with_value { values[row].take() } else { None },
            });
        }
        Ok(records)
    }

    /// Waits for every message sent (at-least-once and none).
    fn flush(&mut self) -> ConnectorResult<()> {
        let timeout = self.flush_timeout;
        match producer_of(&mut self.producer) {
            Some(producer) => producer.flush(timeout),
            None => Ok(()),
        }
    }

    /// Makes the producer if the transactions have something pending and there is none.
    fn producer_if_pending(&mut self) -> ConnectorResult<()> {
        if self
            .transactions
            .as_ref()
            .is_some_and(Transactions::pending)
        {
            self.producer()?;
        }
        Ok(())
    }

    /// Commits or flushes everything written (end of input, DROP SINK).
    fn finish_all(&mut self) -> ConnectorResult<()> {
        if self.transactions.is_none() {
            return self.flush();
        }
        self.producer_if_pending()?;
        match (&mut self.transactions, producer_of(&mut self.producer)) {
            (Some(t), Some(producer)) => t.finish(producer),
            _ => Ok(()),
        }
    }
}

impl SinkWriter for KafkaSinkWriter {
    fn write(&mut self, batch: &RecordBatch) -> ConnectorResult<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let records = self.records(batch)?;
        if records.is_empty() {
            return Ok(());
        }
        SinkMetrics::add(&self.metrics.rows, records.len() as u64);
        self.producer()?;
        let topic = self.topic.clone();
        let (Some(producer), transactions) =
            (producer_of(&mut self.producer), &mut self.transactions)
        else {
            return Err(ConnectorError::Io("kafka sink: no producer".to_string()));
        };
        match transactions {
            Some(t) => t.write(producer, records),
            None => records.iter().try_for_each(|r| producer.send(&topic, r)),
        }
    }

    fn watermark(&mut self, _watermark: i64) -> ConnectorResult<()> {
        Ok(())
    }

    fn tick(&mut self) -> ConnectorResult<()> {
        Ok(())
    }

    fn finish(&mut self) -> ConnectorResult<()> {
        self.finish_all()
    }

    fn close(&mut self) -> ConnectorResult<()> {
        self.finish_all()
    }

    fn abort(&mut self) {
        if let Some(t) = &mut self.transactions {
            t.abort(producer_of(&mut self.producer));
        }
        // Dropping the producer discards what it still queues.
        self.producer = None;
    }

    fn pre_commit(&mut self, epoch: u64) -> ConnectorResult<String> {
        let record = match self.delivery {
            DeliveryGuarantee::None => PreCommitRecord::NoGuarantee,
            DeliveryGuarantee::AtLeastOnce => {
                self.flush()?;
                PreCommitRecord::AtLeastOnce
            }
            DeliveryGuarantee::ExactlyOnce => {
                self.producer_if_pending()?;
                match &mut self.transactions {
                    Some(t) => t.pre_commit(producer_of(&mut self.producer), epoch)?,
                    None => PreCommitRecord::NoGuarantee,
                }
            }
        };
        record.to_json()
    }

    fn commit(&mut self, epoch: u64) -> ConnectorResult<()> {
        if self.transactions.is_none() {
            return Ok(());
        }
        self.producer_if_pending()?;
        match &mut self.transactions {
            Some(t) => t.commit(producer_of(&mut self.producer), epoch),
            None => Ok(()),
        }
    }

    fn recover(&mut self, pre_committed: Option<&str>) -> ConnectorResult<()> {
        if self.transactions.is_none() {
            return Ok(());
        }
        let record = pre_committed.map(PreCommitRecord::from_json).transpose()?;
        if !Transactions::recovers(record.as_ref()) {
            return Ok(());
        }
        self.producer()?;
        let (Some(t), Some(producer)) = (&mut self.transactions, producer_of(&mut self.producer))
        else {
            return Ok(());
        };
        let produced = t.recover(producer, record.as_ref())?;
        SinkMetrics::add(&self.metrics.rows, produced as u64);
        Ok(())
    }
}

#[cfg(test)]
#[path = "sink_tests.rs"]
mod tests;
