//! Exactly-once delivery: Kafka transactions committed with the job's checkpoints, and the
//! record of them a checkpoint keeps.
//!
//! One transactional producer per sink instance, transactional id
//! `<sink.transactional-id-prefix>-<sink name>-<instance>`, with at most one open transaction:
//! - Rows go into the open transaction (begun by the first row after a commit).
//! - `pre_commit(e)` (the checkpoint barrier) flushes it, so every message is on the brokers,
//!   and adds a *marker* to it (a number unique to this pre-commit, committed with the
//!   transaction or not at all, [`KafkaProducer::send_marker`]); it returns the record the
//!   checkpoint stores: the transactional id, the epoch, the marker and every message of the
//!   transaction. The transaction stays open: consumers reading `read_committed` see none of
//!   its messages.
//! - Rows that arrive before the commit belong to the next checkpoint: they are held in memory
//!   (the transaction cannot take them, and a producer has one transaction at a time).
//! - `commit(e)` (the checkpoint is complete) commits the transaction, then begins the next
//!   with the held rows. When a checkpoint fails, no commit comes: the next `pre_commit` sends
//!   the held rows into the still open transaction, which then stands for that checkpoint.
//! - `finish` (the input ended) and `close` (DROP SINK) commit everything written; `abort`
//!   aborts the open transaction.
//!
//! # Recovery
//! A producer's first use of the transactional id (`init_transactions`) fences the previous
//! run's producer and makes the brokers abort its open transaction: at the first row, or in
//! `recover(record)`, which runs after a restart before any row, when the restored
//! checkpoint's record holds a transaction. The previous run may have died after the checkpoint completed but before its
//! transaction committed: then the rows of that transaction would be lost, since the restored
//! job reads its sources from *after* the checkpoint and never produces them again, and
//! librdkafka cannot resume and commit another producer's prepared transaction (Flink's Java
//! sink does that through reflection). So the record keeps the transaction's messages, and
//! the recovery reads the transactional id's committed marker: if it is the record's, the
//! transaction had committed and nothing is done; otherwise it was aborted, and its messages
//! are produced again, in a new transaction with the same marker, committed before the job
//! goes on. Each row of a completed checkpoint is thus committed exactly once. The price is
//! memory and checkpoint size: the messages of the open transaction are kept until it commits
//! (counted in the sink's buffered bytes) and written into each checkpoint.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use eddy_engine::connector::{ConnectorError, ConnectorResult, SinkMetrics};
use serde::{Deserialize, Serialize};

use super::client::{KafkaProducer, ProducerRecord};

/// How long a transactional call (init, marker, commit) may wait for the cluster.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an abort may take when the job gives up (the next run's fencing aborts it anyway).
const ABORT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a Kafka sink's checkpoint stores: the first phase of its commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "delivery", rename_all = "kebab-case")]
pub(crate) enum PreCommitRecord {
    /// `none` and `at-least-once`: nothing to commit or recover.
    #[serde(rename = "none")]
    NoGuarantee,
    AtLeastOnce,
    ExactlyOnce {
        transactional_id: String,
        epoch: u64,
        /// The marker of the pre-committed transaction; `None` when it had no message (no
        /// transaction was open).
        marker: Option<i64>,
        /// Its messages, to produce again if it did not commit.
        messages: Vec<StoredMessage>,
    },
}

impl PreCommitRecord {
    pub(crate) fn to_json(&self) -> ConnectorResult<String> {
        serde_json::to_string(self)
            .map_err(|e| ConnectorError::Io(format!("encoding the kafka sink's commit: {e}")))
    }

    pub(crate) fn from_json(text: &str) -> ConnectorResult<Self> {
        serde_json::from_str(text).map_err(|e| {
            ConnectorError::Io(format!(
                "the checkpoint's kafka sink commit is unreadable: {e}"
            ))
        })
    }
}

/// A message in a checkpoint: key and value in base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partition: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
}

impl StoredMessage {
    fn of(record: &ProducerRecord) -> Self {
        Self {
            partition: record.partition,
            key: record.key.as_ref().map(|k| STANDARD.encode(k)),
            value: record.value.as_ref().map(|v| STANDARD.encode(v)),
        }
    }

    fn record(&self) -> ConnectorResult<ProducerRecord> {
        let decode = |text: &Option<String>| {
            text.as_ref()
                .map(|t| STANDARD.decode(t))
                .transpose()
                .map_err(|e| {
                    ConnectorError::Io(format!(
                        "the checkpoint's kafka sink commit is unreadable: {e}"
                    ))
                })
        };
        Ok(ProducerRecord {
            partition: self.partition,
            key: decode(&self.key)?,
            value: decode(&self.value)?,
        })
    }
}

/// The transactions of one exactly-once sink writer.
pub(crate) struct Transactions {
    id: String,
    topic: String,
    metrics: Arc<SinkMetrics>,
    initialised: bool,
    open: bool,
    /// The messages of the open transaction.
    sent: Vec<ProducerRecord>,
    /// The epoch pre-committed and not committed yet.
    prepared: Option<u64>,
    /// Messages that came after the pre-commit, for the next transaction.
    held: Vec<ProducerRecord>,
    /// Bytes in `sent` and `held`.
    bytes: usize,
}

impl Transactions {
    pub(crate) fn new(id: String, topic: String, metrics: Arc<SinkMetrics>) -> Self {
        Self {
            id,
            topic,
            metrics,
            initialised: false,
            open: false,
            sent: Vec::new(),
            prepared: None,
            held: Vec::new(),
            bytes: 0,
        }
    }

    /// The producer's transactional id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    fn init(&mut self, producer: &mut dyn KafkaProducer) -> ConnectorResult<()> {
        if !self.initialised {
            producer.init_transactions(TRANSACTION_TIMEOUT)?;
            self.initialised = true;
        }
        Ok(())
    }

    fn account(&mut self, delta: isize) {
        self.bytes = self.bytes.saturating_add_signed(delta);
        SinkMetrics::set(&self.metrics.buffered_bytes, self.bytes as u64);
    }

    /// Sends `records` into the open transaction (begun if none is).
    fn send(
        &mut self,
        producer: &mut dyn KafkaProducer,
        records: Vec<ProducerRecord>,
    ) -> ConnectorResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.init(producer)?;
        if !self.open {
            producer.begin_transaction()?;
            self.open = true;
        }
        for record in &records {
            producer.send(&self.topic, record)?;
        }
        self.sent.extend(records);
        Ok(())
    }

    /// Whether a producer is needed for what is pending (there is something to commit).
    pub(crate) fn pending(&self) -> bool {
        self.open || !self.held.is_empty()
    }

    /// New rows: into the open transaction, or held while one waits for its commit.
    pub(crate) fn write(
        &mut self,
        producer: &mut dyn KafkaProducer,
        records: Vec<ProducerRecord>,
    ) -> ConnectorResult<()> {
        let size: usize = records.iter().map(ProducerRecord::size).sum();
        self.account(size as isize);
        if self.prepared.is_some() {
            self.held.extend(records);
            return Ok(());
        }
        self.send(producer, records)
    }

    /// The checkpoint barrier of `epoch`: flushes the open transaction, marks it and returns
    /// the record of it. `producer` is `None` when nothing is pending (no producer made yet).
    pub(crate) fn pre_commit(
        &mut self,
        producer: Option<&mut dyn KafkaProducer>,
        epoch: u64,
    ) -> ConnectorResult<PreCommitRecord> {
        let marker = match producer {
            Some(producer) => {
                // A pre-commit whose checkpoint did not complete: its transaction stays open
                // and takes the rows held since, for this checkpoint.
                if self.prepared.take().is_some() {
                    let held = std::mem::take(&mut self.held);
                    self.send(producer, held)?;
                }
                if self.open {
                    producer.flush(TRANSACTION_TIMEOUT)?;
                    let marker = new_marker(epoch);
                    producer.send_marker(&self.topic, marker, TRANSACTION_TIMEOUT)?;
                    Some(marker)
                } else {
                    None
                }
            }
            None => None,
        };
        self.prepared = Some(epoch);
        Ok(PreCommitRecord::ExactlyOnce {
            transactional_id: self.id.clone(),
            epoch,
            marker,
            messages: if marker.is_some() {
                self.sent.iter().map(StoredMessage::of).collect()
            } else {
                Vec::new()
            },
        })
    }

    /// The checkpoint of `epoch` is complete: commits the transaction pre-committed at `epoch`
    /// or before, and begins the next with the rows held since.
    pub(crate) fn commit(
        &mut self,
        producer: Option<&mut dyn KafkaProducer>,
        epoch: u64,
    ) -> ConnectorResult<()> {
        if self.prepared.is_none_or(|p| p > epoch) {
            return Ok(());
        }
        self.prepared = None;
        let Some(producer) = producer else {
            return if self.pending() {
                Err(ConnectorError::Io(
                    "kafka sink: a commit with rows pending and no producer".to_string(),
                ))
            } else {
                Ok(())
            };
        };
        self.commit_open(producer)?;
        let held = std::mem::take(&mut self.held);
        self.send(producer, held)
    }

    fn commit_open(&mut self, producer: &mut dyn KafkaProducer) -> ConnectorResult<()> {
        if self.open {
            producer.commit_transaction(TRANSACTION_TIMEOUT)?;
            self.open = false;
            let bytes: usize = self.sent.iter().map(ProducerRecord::size).sum();
            self.sent.clear();
            self.account(-(bytes as isize));
        }
        Ok(())
    }

    /// The input ended, or the sink is dropped: commits everything written.
    pub(crate) fn finish(&mut self, producer: &mut dyn KafkaProducer) -> ConnectorResult<()> {
        self.prepared = None;
        let held = std::mem::take(&mut self.held);
        self.send(producer, held)?;
        if self.open {
            producer.flush(TRANSACTION_TIMEOUT)?;
        }
        self.commit_open(producer)
    }

    /// The job failed or the server stops: the open transaction is aborted (its rows come
    /// after the last complete checkpoint and are written again after a restart).
    pub(crate) fn abort(&mut self, producer: Option<&mut dyn KafkaProducer>) {
        if let (Some(producer), true) = (producer, self.open)
            && let Err(e) = producer.abort_transaction(ABORT_TIMEOUT)
        {
            tracing::warn!(
                transactional_id = %self.id,
                error = %e,
                "could not abort the kafka sink's transaction; the next run aborts it"
            );
        }
        self.open = false;
        self.prepared = None;
        self.sent.clear();
        self.held.clear();
        self.account(-(self.bytes as isize));
    }

    /// Whether [`Transactions::recover`] has work (and needs a producer) for `record`: the
    /// restored checkpoint holds a transaction. Otherwise the first row fences the previous
    /// run, so a sink restored while the brokers are away fails only once it writes.
    pub(crate) fn recovers(record: Option<&PreCommitRecord>) -> bool {
        matches!(
            record,
            Some(PreCommitRecord::ExactlyOnce {
                marker: Some(_),
                ..
            })
        )
    }

    /// After a restart, before any row: fences the previous run and makes sure the
    /// transaction of the restored checkpoint (`record`) is committed, producing its messages
    /// again if the previous run died before committing it. Returns how many it produced.
    pub(crate) fn recover(
        &mut self,
        producer: &mut dyn KafkaProducer,
        record: Option<&PreCommitRecord>,
    ) -> ConnectorResult<usize> {
        let Some(PreCommitRecord::ExactlyOnce {
            transactional_id,
            epoch,
            marker: Some(marker),
            messages,
        }) = record
        else {
            return Ok(0);
        };
        self.init(producer)?;
        if *transactional_id != self.id {
            return Err(ConnectorError::Io(format!(
                "the checkpoint's kafka sink transaction has transactional id \
                 '{transactional_id}', the sink now uses '{}'",
                self.id
            )));
        }
        if producer.committed_marker(&self.topic, TRANSACTION_TIMEOUT)? == Some(*marker) {
            tracing::info!(
                transactional_id = %self.id,
                epoch,
                "the kafka sink's transaction of the restored checkpoint had committed"
            );
            return Ok(0);
        }
        let records = messages
            .iter()
            .map(StoredMessage::record)
            .collect::<ConnectorResult<Vec<_>>>()?;
        producer.begin_transaction()?;
        for record in &records {
            producer.send(&self.topic, record)?;
        }
        producer.flush(TRANSACTION_TIMEOUT)?;
        producer.send_marker(&self.topic, *marker, TRANSACTION_TIMEOUT)?;
        producer.commit_transaction(TRANSACTION_TIMEOUT)?;
        tracing::warn!(
            transactional_id = %self.id,
            epoch,
            messages = records.len(),
            "the server stopped between a checkpoint and its kafka transaction's commit: the \
             transaction was aborted, and its messages were produced again and committed"
        );
        Ok(records.len())
    }
}

/// A marker no other pre-commit uses: random, positive.
fn new_marker(epoch: u64) -> i64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(epoch);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    (hasher.finish() >> 1) as i64
}
