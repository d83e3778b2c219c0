//! The sink writer against an in-memory cluster behind [`KafkaClient`]: what reaches the topic
//! (keys, values, partitions, tombstones) and what a `read_committed` reader sees through
//! checkpoints, failed checkpoints, restarts and fencing.

use std::collections::BTreeMap;
use std::sync::Mutex;

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use eddy_engine::connector::ConnectorOptions;

use super::*;

/// What happened to a produced message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Produced without a transaction.
    Plain,
    /// In the open transaction of a transactional id.
    Open,
    Committed,
    Aborted,
}

#[derive(Debug, Clone)]
struct Logged {
    transactional_id: Option<String>,
    partition: Option<i32>,
    key: Option<String>,
    value: Option<String>,
    status: Status,
}

#[derive(Default)]
struct ClusterState {
    partitions: i32,
    log: Vec<Logged>,
    /// Per transactional id: the current producer epoch and the committed marker.
    epochs: BTreeMap<String, u32>,
    markers: BTreeMap<String, i64>,
    /// Every delivery fails from now on.
    failing: bool,
    calls: Vec<String>,
}

/// A cluster in memory, with Kafka's transaction rules: one open transaction per producer, a
/// new `init_transactions` of an id aborts its open transaction and fences older producers.
#[derive(Default)]
struct Cluster(Mutex<ClusterState>);

impl Cluster {
    fn new(partitions: i32) -> Arc<Self> {
        let cluster = Arc::new(Self::default());
        cluster.0.lock().unwrap().partitions = partitions;
        cluster
    }

    /// What a `read_committed` consumer reads: (partition, key, value).
    fn committed(&self) -> Vec<(Option<i32>, Option<String>, Option<String>)> {
        self.0
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|m| matches!(m.status, Status::Plain | Status::Committed))
            .map(|m| (m.partition, m.key.clone(), m.value.clone()))
            .collect()
    }

    fn values(&self) -> Vec<String> {
        self.committed()
            .into_iter()
            .filter_map(|(_, _, v)| v)
            .collect()
    }

    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap().calls)
    }
}

impl KafkaClient for Arc<Cluster> {
    fn consumer(
        &self,
        _properties: &BTreeMap<String, String>,
    ) -> ConnectorResult<Box<dyn super::super::KafkaConsumer>> {
        Err(ConnectorError::Unsupported(
            "a consumer of the test cluster".into(),
        ))
    }

    fn producer(
        &self,
        properties: &BTreeMap<String, String>,
        transactional_id: Option<&str>,
    ) -> ConnectorResult<Box<dyn KafkaProducer>> {
        self.0.lock().unwrap().calls.push(format!(
            "producer {} partitioner={}",
            transactional_id.unwrap_or("-"),
            properties.get("partitioner").map_or("-", String::as_str)
        ));
        Ok(Box::new(FakeProducer {
            cluster: Arc::clone(self),
            id: transactional_id.map(str::to_string),
            epoch: 0,
            open: false,
            marker: None,
            failed: false,
        }))
    }
}

struct FakeProducer {
    cluster: Arc<Cluster>,
    id: Option<String>,
    epoch: u32,
    open: bool,
    marker: Option<i64>,
    failed: bool,
}

impl FakeProducer {
    fn state(&self) -> std::sync::MutexGuard<'_, ClusterState> {
        self.cluster.0.lock().unwrap()
    }

    /// Fails when a newer producer of the same id took over.
    fn check_fenced(&self) -> ConnectorResult<()> {
        let current = self
            .id
            .as_ref()
            .and_then(|id| self.state().epochs.get(id).copied());
        if current.is_some_and(|c| c != self.epoch) {
            return Err(ConnectorError::Io("fenced".into()));
        }
        Ok(())
    }

    /// Ends the open transaction of `id` with `status`.
    fn end(state: &mut ClusterState, id: &str, status: Status) {
        for m in &mut state.log {
            if m.status == Status::Open && m.transactional_id.as_deref() == Some(id) {
                m.status = status;
            }
        }
    }
}

fn text(bytes: &Option<Vec<u8>>) -> Option<String> {
    bytes
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

impl KafkaProducer for FakeProducer {
    fn partition_count(&mut self, _topic: &str, _timeout: Duration) -> ConnectorResult<i32> {
        Ok(self.state().partitions)
    }

    fn send(&mut self, _topic: &str, record: &ProducerRecord) -> ConnectorResult<()> {
        self.check_fenced()?;
        if self.id.is_some() && !self.open {
            return Err(ConnectorError::Io("send outside a transaction".into()));
        }
        let id = self.id.clone();
        let mut state = self.state();
        if state.failing {
            drop(state);
            self.failed = true;
            return Ok(());
        }
        state.log.push(Logged {
            transactional_id: id.clone(),
            partition: record.partition,
            key: text(&record.key),
            value: text(&record.value),
            status: if id.is_some() {
                Status::Open
            } else {
                Status::Plain
            },
        });
        Ok(())
    }

    fn flush(&mut self, _timeout: Duration) -> ConnectorResult<()> {
        self.state().calls.push("flush".into());
        if std::mem::take(&mut self.failed) {
            return Err(ConnectorError::Io("a message was not delivered".into()));
        }
        Ok(())
    }

    fn init_transactions(&mut self, _timeout: Duration) -> ConnectorResult<()> {
        let id = self.id.clone().expect("a transactional producer");
        let mut state = self.state();
        Self::end(&mut state, &id, Status::Aborted);
        let epoch = state.epochs.entry(id.clone()).or_default();
        *epoch += 1;
        let epoch = *epoch;
        state.calls.push(format!("init {id}"));
        drop(state);
        self.epoch = epoch;
        Ok(())
    }

    fn begin_transaction(&mut self) -> ConnectorResult<()> {
        self.check_fenced()?;
        assert!(!self.open, "one transaction at a time");
        self.open = true;
        self.state().calls.push("begin".into());
        Ok(())
    }

    fn send_marker(
        &mut self,
        _topic: &str,
        marker: i64,
        _timeout: Duration,
    ) -> ConnectorResult<()> {
        self.check_fenced()?;
        assert!(self.open);
        self.marker = Some(marker);
        self.state().calls.push("marker".into());
        Ok(())
    }

    fn commit_transaction(&mut self, _timeout: Duration) -> ConnectorResult<()> {
        self.check_fenced()?;
        assert!(self.open);
        let id = self.id.clone().unwrap_or_default();
        let mut state = self.state();
        Self::end(&mut state, &id, Status::Committed);
        if let Some(marker) = self.marker {
            state.markers.insert(id, marker);
        }
        state.calls.push("commit".into());
        drop(state);
        self.open = false;
        self.marker = None;
        Ok(())
    }

    fn abort_transaction(&mut self, _timeout: Duration) -> ConnectorResult<()> {
        self.check_fenced()?;
        let id = self.id.clone().unwrap_or_default();
        let mut state = self.state();
        Self::end(&mut state, &id, Status::Aborted);
        state.calls.push("abort".into());
        drop(state);
        self.open = false;
        self.marker = None;
        Ok(())
    }

    fn committed_marker(
        &mut self,
        _topic: &str,
        _timeout: Duration,
    ) -> ConnectorResult<Option<i64>> {
        let id = self.id.clone().unwrap_or_default();
        Ok(self.state().markers.get(&id).copied())
    }
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
    ]))
}

fn rows(pairs: &[(&str, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from_iter_values(pairs.iter().map(|p| p.0))) as ArrayRef,
            Arc::new(Int64Array::from_iter_values(pairs.iter().map(|p| p.1))),
        ],
    )
    .unwrap()
}

/// A changelog batch: `op` then the rows.
fn changes(changes: &[(&str, &str, i64)]) -> RecordBatch {
    RecordBatch::try_from_iter([
        (
            "__op",
            Arc::new(StringArray::from_iter_values(changes.iter().map(|c| c.0))) as ArrayRef,
        ),
        (
            "k",
            Arc::new(StringArray::from_iter_values(changes.iter().map(|c| c.1))),
        ),
        (
            "n",
            Arc::new(Int64Array::from_iter_values(changes.iter().map(|c| c.2))),
        ),
    ])
    .unwrap()
}

fn context(options: &[(&str, &str)], checkpoints: bool, changelog: bool) -> SinkContext {
    let mut all: ConnectorOptions = [
        ("topic", "out"),
        ("properties.bootstrap.servers", "127.0.0.1:9092"),
        ("format", "json"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in options {
        all.insert(k.to_string(), v.to_string());
    }
    SinkContext {
        sink_name: "s".to_string(),
        schema: schema(),
        changelog,
        options: all,
        time_columns: Vec::new(),
        metrics: Arc::new(SinkMetrics::default()),
        exactly_once: checkpoints,
    }
}

fn open(cluster: &Arc<Cluster>, options: &[(&str, &str)]) -> Box<dyn SinkWriter> {
    KafkaSinkConnector::kafka(Arc::new(Arc::clone(cluster)))
        .open(context(options, true, false))
        .unwrap()
}

fn exactly_once(cluster: &Arc<Cluster>) -> Box<dyn SinkWriter> {
    open(cluster, &[("sink.delivery-guarantee", "exactly-once")])
}

fn s(text: &str) -> Option<String> {
    Some(text.to_string())
}

#[test]
fn rows_become_messages_keyed_by_the_key_fields() {
    let cluster = Cluster::new(3);
    let mut writer = open(&cluster, &[("key.format", "raw"), ("key.fields", "k")]);
    writer.write(&rows(&[("a", 1), ("b", 2)])).unwrap();
    writer.finish().unwrap();
    assert_eq!(
        cluster.committed(),
        vec![
            (None, s("a"), s(r#"{"k":"a","n":1}"#)),
            (None, s("b"), s(r#"{"k":"b","n":2}"#)),
        ]
    );
    // The client's partitioner, set to Kafka's Java hash, places keyed messages.
    assert!(
        cluster.calls()[0].contains("partitioner=murmur2_random"),
        "{:?}",
        cluster.calls()
    );

    let cluster = Cluster::new(3);
    let mut writer = open(
        &cluster,
        &[
            ("format", "csv"),
            ("key.format", "json"),
            ("key.fields", "n"),
            ("value.fields-include", "EXCEPT_KEY"),
        ],
    );
    writer.write(&rows(&[("a,b", 7)])).unwrap();
    writer.close().unwrap();
    assert_eq!(
        cluster.committed(),
        vec![(None, s(r#"{"n":7}"#), s(r#""a,b""#))]
    );
}

#[test]
fn fixed_and_round_robin_partitioners_choose_the_partition() {
    let partitions = |partitioner: &str| {
        let cluster = Cluster::new(3);
        let mut writer = open(&cluster, &[("sink.partitioner", partitioner)]);
        writer
            .write(&rows(&[("a", 1), ("a", 2), ("a", 3), ("a", 4)]))
            .unwrap();
        writer.write(&rows(&[("b", 5)])).unwrap();
        writer.finish().unwrap();
        cluster
            .committed()
            .into_iter()
            .map(|(p, _, _)| p)
            .collect::<Vec<_>>()
    };
    // One sink instance (0): partition 0 % 3.
    assert_eq!(partitions("fixed"), vec![Some(0); 5]);
    assert_eq!(
        partitions("round-robin"),
        vec![Some(0), Some(1), Some(2), Some(0), Some(1)]
    );
    assert_eq!(partitions("default"), vec![None; 5]);
}

#[test]
fn upsert_kafka_writes_the_last_change_of_each_key_and_tombstones() {
    let cluster = Cluster::new(1);
    let connector = KafkaSinkConnector::upsert(Arc::new(Arc::clone(&cluster)));
    let options = [("key.format", "raw"), ("key.fields", "k")];
    let mut writer = connector.open(context(&options, true, true)).unwrap();
    writer
        .write(&changes(&[("+", "a", 1), ("+", "b", 1), ("+", "c", 1)]))
        .unwrap();
    // a is updated, b deleted; c updated twice in one batch.
    writer
        .write(&changes(&[
            ("-", "a", 1),
            ("+", "a", 2),
            ("-", "b", 1),
            ("-", "c", 1),
            ("+", "c", 2),
            ("-", "c", 2),
            ("+", "c", 3),
        ]))
        .unwrap();
    writer.finish().unwrap();
    let committed: Vec<_> = cluster
        .committed()
        .into_iter()
        .map(|(_, k, v)| (k, v))
        .collect();
    assert_eq!(
        committed,
        vec![
            (s("a"), s(r#"{"k":"a","n":1}"#)),
            (s("b"), s(r#"{"k":"b","n":1}"#)),
            (s("c"), s(r#"{"k":"c","n":1}"#)),
            (s("a"), s(r#"{"k":"a","n":2}"#)),
            (s("b"), None),
            (s("c"), s(r#"{"k":"c","n":3}"#)),
        ]
    );

    // Append-only rows into upsert-kafka: each row an upsert.
    let cluster = Cluster::new(1);
    let connector = KafkaSinkConnector::upsert(Arc::new(Arc::clone(&cluster)));
    let mut writer = connector.open(context(&options, true, false)).unwrap();
    writer.write(&rows(&[("x", 1), ("y", 2)])).unwrap();
    writer.finish().unwrap();
    assert_eq!(cluster.committed().len(), 2);
}

#[test]
fn a_plain_kafka_sink_refuses_a_changelog_and_exactly_once_needs_checkpoints() {
    let connector = KafkaSinkConnector::kafka(Arc::new(Cluster::new(1)));
    assert!(!connector.accepts_changelog());
    assert!(connector.changelog_hint().contains("upsert-kafka"));
    assert!(matches!(
        connector.validate(&context(&[], true, true)),
        Err(ConnectorError::Unsupported(m)) if m.contains("upsert-kafka")
    ));
    assert!(KafkaSinkConnector::upsert(Arc::new(Cluster::new(1))).accepts_changelog());
    let refused = connector.validate(&context(
        &[("sink.delivery-guarantee", "exactly-once")],
        false,
        false,
    ));
    assert!(
        matches!(&refused, Err(ConnectorError::Unsupported(m)) if m.contains("without checkpoints")),
        "{refused:?}"
    );
    assert!(
        connector
            .validate(&context(
                &[("sink.delivery-guarantee", "at-least-once")],
                false,
                false
            ))
            .is_ok()
    );
}

#[test]
fn at_least_once_waits_for_every_delivery_at_a_barrier_and_fails_on_a_lost_one() {
    let cluster = Cluster::new(1);
    let mut writer = open(&cluster, &[]);
    // Nothing written: a barrier needs no producer.
    writer.pre_commit(1).unwrap();
    assert!(cluster.calls().is_empty());
    writer.write(&rows(&[("a", 1)])).unwrap();
    writer.pre_commit(2).unwrap();
    assert_eq!(cluster.calls().last().map(String::as_str), Some("flush"));
    assert_eq!(cluster.values().len(), 1);

    cluster.0.lock().unwrap().failing = true;
    writer.write(&rows(&[("b", 2)])).unwrap();
    let error = writer.pre_commit(3).unwrap_err();
    assert!(error.to_string().contains("not delivered"), "{error}");

    // `none` does not wait at a barrier.
    let cluster = Cluster::new(1);
    let mut writer = open(&cluster, &[("sink.delivery-guarantee", "none")]);
    writer.write(&rows(&[("a", 1)])).unwrap();
    writer.pre_commit(1).unwrap();
    assert!(!cluster.calls().contains(&"flush".to_string()));
}

#[test]
fn exactly_once_commits_each_checkpoints_rows_when_it_completes() {
    let cluster = Cluster::new(1);
    let mut writer = exactly_once(&cluster);
    writer.write(&rows(&[("a", 1), ("b", 2)])).unwrap();
    let record = writer.pre_commit(1).unwrap();
    assert!(
        record.contains("\"transactional_id\":\"eddy-s-0\""),
        "{record}"
    );
    // Flushed and marked, not committed.
    assert!(cluster.values().is_empty());
    // Rows after the barrier wait for the commit, outside the transaction.
    writer.write(&rows(&[("c", 3)])).unwrap();
    assert_eq!(cluster.0.lock().unwrap().log.len(), 2);
    writer.commit(1).unwrap();
    assert_eq!(cluster.values().len(), 2);
    // A later commit of the same epoch changes nothing.
    writer.commit(1).unwrap();
    assert_eq!(cluster.values().len(), 2);
    assert_eq!(
        cluster.calls(),
        vec![
            "producer eddy-s-0 partitioner=murmur2_random",
            "init eddy-s-0",
            "begin",
            "flush",
            "marker",
            "commit",
            "begin"
        ]
    );

    // A checkpoint that fails gets no commit: the next one takes its rows too.
    writer.pre_commit(2).unwrap();
    writer.write(&rows(&[("d", 4)])).unwrap();
    let record = writer.pre_commit(3).unwrap();
    assert!(cluster.values().len() == 2, "{:?}", cluster.values());
    let PreCommitRecord::ExactlyOnce { messages, .. } =
        PreCommitRecord::from_json(&record).unwrap()
    else {
        panic!("{record}")
    };
    assert_eq!(messages.len(), 2, "c and d");
    writer.commit(3).unwrap();
    writer.write(&rows(&[("e", 5)])).unwrap();
    writer.finish().unwrap();
    assert_eq!(
        cluster.values(),
        ["a", "b", "c", "d", "e"]
            .iter()
            .zip(1..)
            .map(|(k, n)| format!(r#"{{"k":"{k}","n":{n}}}"#))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_restart_between_a_checkpoint_and_its_commit_commits_the_checkpoints_rows_once() {
    let cluster = Cluster::new(1);
    let mut before = exactly_once(&cluster);
    before.write(&rows(&[("a", 1), ("b", 2)])).unwrap();
    let record = before.pre_commit(1).unwrap();
    before.write(&rows(&[("c", 3)])).unwrap();
    // The server dies here: checkpoint 1 is complete, its transaction not committed.

    let mut after = exactly_once(&cluster);
    after.recover(Some(&record)).unwrap();
    // The old transaction was aborted by the fencing, and its rows produced again.
    assert_eq!(
        cluster.values(),
        vec![r#"{"k":"a","n":1}"#, r#"{"k":"b","n":2}"#]
    );
    // The fenced producer of the previous run cannot commit any more.
    assert!(before.commit(1).is_err());
    // The restored job produces the rows after the checkpoint again.
    after.write(&rows(&[("c", 3)])).unwrap();
    after.finish().unwrap();
    assert_eq!(cluster.values().len(), 3);

    // A second restart from the same checkpoint finds its transaction committed.
    let mut again = exactly_once(&cluster);
    again.recover(Some(&record)).unwrap();
    assert_eq!(cluster.values().len(), 3);
}

#[test]
fn a_restart_after_the_commit_does_not_produce_the_checkpoint_again() {
    let cluster = Cluster::new(1);
    let mut before = exactly_once(&cluster);
    before.write(&rows(&[("a", 1)])).unwrap();
    let record = before.pre_commit(1).unwrap();
    before.commit(1).unwrap();
    before.write(&rows(&[("b", 2)])).unwrap();
    // The server dies with b in an open transaction.

    let mut after = exactly_once(&cluster);
    after.recover(Some(&record)).unwrap();
    assert_eq!(cluster.values(), vec![r#"{"k":"a","n":1}"#]);
    assert!(
        cluster.0.lock().unwrap().log.iter().any(
            |m| m.status == Status::Aborted && m.value.as_deref() == Some(r#"{"k":"b","n":2}"#)
        ),
        "b's transaction is aborted"
    );
    // Without a transaction to recover, recovery needs no broker: the first row fences.
    let mut fresh = exactly_once(&cluster);
    cluster.calls();
    fresh.recover(None).unwrap();
    assert!(cluster.calls().is_empty());
    fresh.write(&rows(&[("c", 3)])).unwrap();
    assert!(
        after.write(&rows(&[("x", 9)])).is_err(),
        "the previous producer is fenced by the first row"
    );
    fresh.finish().unwrap();
    assert_eq!(cluster.values().len(), 2);
}

#[test]
fn abort_aborts_the_open_transaction() {
    let cluster = Cluster::new(1);
    let mut writer = exactly_once(&cluster);
    writer.write(&rows(&[("a", 1)])).unwrap();
    writer.abort();
    assert!(cluster.values().is_empty());
    assert!(cluster.calls().contains(&"abort".to_string()));
}
