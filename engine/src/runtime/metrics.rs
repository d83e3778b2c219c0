//! Counters of a running query, per plan node and per parallel instance.
//!
//! Each operator and source task owns one [`OperatorMetrics`] and updates it with relaxed
//! atomic stores after each hook: no lock is taken per batch, and readers (`EXPLAIN ANALYZE`,
//! `SHOW JOBS`) see figures that are each up to date but not a consistent snapshot of the
//! whole dataflow. State figures are refreshed less often than row counters, because asking an
//! operator for its state tables walks its state (see `driver::run_operator`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::connector::SourceMetrics;
use crate::runtime::message::EventTime;

/// The watermark slot's value before the first watermark.
const NO_WATERMARK: i64 = i64::MIN;

/// Counters of one parallel instance of an operator (or one reader of a source).
#[derive(Debug)]
pub struct OperatorMetrics {
    /// Rows received on every input.
    pub rows_in: AtomicU64,
    /// Rows emitted.
    pub rows_out: AtomicU64,
    /// Rows held in the state tables, as of the last refresh.
    pub state_rows: AtomicU64,
    /// Approximate bytes held in the state tables, as of the last refresh.
    pub state_bytes: AtomicU64,
    /// The last watermark emitted, in nanoseconds since the epoch; `i64::MIN` before the
    /// first, `i64::MAX` once the input is exhausted.
    pub watermark: AtomicI64,
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        Self {
            rows_in: AtomicU64::new(0),
            rows_out: AtomicU64::new(0),
            state_rows: AtomicU64::new(0),
            state_bytes: AtomicU64::new(0),
            watermark: AtomicI64::new(NO_WATERMARK),
        }
    }
}

impl OperatorMetrics {
    pub(crate) fn add_in(&self, rows: usize) {
        self.rows_in.fetch_add(rows as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_out(&self, rows: usize) {
        self.rows_out.fetch_add(rows as u64, Ordering::Relaxed);
    }

    pub(crate) fn set_watermark(&self, watermark: EventTime) {
        self.watermark.store(watermark, Ordering::Relaxed);
    }

    pub(crate) fn set_state(&self, rows: usize, bytes: usize) {
        self.state_rows.store(rows as u64, Ordering::Relaxed);
        self.state_bytes.store(bytes as u64, Ordering::Relaxed);
    }

    /// The last watermark emitted, if any.
    pub fn watermark(&self) -> Option<EventTime> {
        let w = self.watermark.load(Ordering::Relaxed);
        (w != NO_WATERMARK).then_some(w)
    }
}

/// The instances of one plan node.
#[derive(Debug)]
pub struct NodeMetrics {
    /// The node's position in a pre-order walk of the plan, counting every node (see
    /// `StreamPlan::output_node`): how `EXPLAIN ANALYZE` matches figures to plan lines.
    pub id: usize,
    /// The operator's name (`WindowAggregate`, `Source bids`).
    pub name: String,
    /// True for a source's readers, whose rows out are the rows the query read.
    pub source: bool,
    pub instances: Vec<Arc<OperatorMetrics>>,
}

/// What a node's instances add up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeTotals {
    pub instances: usize,
    pub rows_in: u64,
    pub rows_out: u64,
    pub state_rows: u64,
    pub state_bytes: u64,
    /// The minimum over the instances (what a consumer of all of them has seen), `None` until
    /// every instance emitted one.
    pub watermark: Option<EventTime>,
}

impl NodeMetrics {
    pub(crate) fn new(id: usize, name: String, source: bool, instances: usize) -> Self {
        Self {
            id,
            name,
            source,
            instances: (0..instances)
                .map(|_| Arc::new(OperatorMetrics::default()))
                .collect(),
        }
    }

    pub fn totals(&self) -> NodeTotals {
        let sum = |f: fn(&OperatorMetrics) -> &AtomicU64| {
            self.instances
                .iter()
                .map(|m| f(m).load(Ordering::Relaxed))
                .sum()
        };
        NodeTotals {
            instances: self.instances.len(),
            rows_in: sum(|m| &m.rows_in),
            rows_out: sum(|m| &m.rows_out),
            state_rows: sum(|m| &m.state_rows),
            state_bytes: sum(|m| &m.state_bytes),
            watermark: self.instances.iter().map(|m| m.watermark()).min().flatten(),
        }
    }
}

/// Counters of one running query.
#[derive(Debug, Default)]
pub struct QueryMetrics {
    /// Rows dropped because they arrived after their window or state was emitted.
    pub late_rows: Arc<AtomicU64>,
    /// Per source: its name and its row counters.
    pub sources: Vec<(String, Arc<SourceMetrics>)>,
    /// Per plan node, upstream first: its name (`Source bids`, `WindowAggregate`) and how many
    /// parallel instances (readers, for a source) run it.
    pub instances: Vec<(String, usize)>,
    /// Per plan node that runs tasks (sources and operators; not aliases), by
    /// [`NodeMetrics::id`].
    pub operators: Vec<NodeMetrics>,
    /// The id of the node whose rows the query returns.
    pub output_node: usize,
    /// The parallelism the query was launched with.
    pub parallelism: usize,
}

impl QueryMetrics {
    pub fn late_rows(&self) -> u64 {
        self.late_rows.load(Ordering::Relaxed)
    }

    /// The figures of plan node `id`, if it runs tasks.
    pub fn node(&self, id: usize) -> Option<&NodeMetrics> {
        self.operators.iter().find(|n| n.id == id)
    }

    /// Malformed rows (messages, lines) the query's sources skipped.
    pub fn malformed_rows(&self) -> u64 {
        self.sources.iter().map(|(_, s)| s.malformed()).sum()
    }

    /// Malformed rows the query's sources appended to `eddy_dead_letters`.
    pub fn dead_letters(&self) -> u64 {
        self.sources.iter().map(|(_, s)| s.dead_letters()).sum()
    }

    /// Rows every source of the query read.
    pub fn rows_in(&self) -> u64 {
        self.operators
            .iter()
            .filter(|n| n.source)
            .map(|n| n.totals().rows_out)
            .sum()
    }

    /// Rows the query's final node emitted (the rows its consumer received or will receive).
    pub fn rows_out(&self) -> u64 {
        self.node(self.output_node)
            .map_or(0, |n| n.totals().rows_out)
    }

    /// Approximate bytes of state held by every operator instance.
    pub fn state_bytes(&self) -> u64 {
        self.operators.iter().map(|n| n.totals().state_bytes).sum()
    }

    /// The watermark of the query's output (nanoseconds since the epoch; `i64::MAX` once the
    /// input is exhausted), `None` before the first.
    pub fn output_watermark(&self) -> Option<i64> {
        self.node(self.output_node)
            .and_then(|n| n.totals().watermark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_sums_its_instances_and_has_the_watermark_of_the_slowest() {
        let node = NodeMetrics::new(3, "WindowAggregate".to_string(), false, 2);
        let (a, b) = (&node.instances[0], &node.instances[1]);
        a.add_in(10);
        b.add_in(5);
        a.add_out(2);
        a.set_state(4, 400);
        b.set_state(1, 100);
        a.set_watermark(20);
        assert_eq!(
            node.totals().watermark,
            None,
            "a consumer of both has no watermark until both sent one"
        );
        b.set_watermark(15);
        assert_eq!(
            node.totals(),
            NodeTotals {
                instances: 2,
                rows_in: 15,
                rows_out: 2,
                state_rows: 5,
                state_bytes: 500,
                watermark: Some(15),
            }
        );
    }

    #[test]
    fn query_totals_read_the_sources_and_the_output_node() {
        let source = NodeMetrics::new(2, "Source bids".to_string(), true, 2);
        source.instances[0].add_out(7);
        source.instances[1].add_out(3);
        let aggregate = NodeMetrics::new(1, "WindowAggregate".to_string(), false, 1);
        aggregate.instances[0].add_in(10);
        aggregate.instances[0].add_out(4);
        aggregate.instances[0].set_state(2, 64);
        let project = NodeMetrics::new(0, "Project".to_string(), false, 1);
        project.instances[0].add_in(4);
        project.instances[0].add_out(4);
        project.instances[0].set_watermark(i64::MAX);
        let metrics = QueryMetrics {
            operators: vec![project, aggregate, source],
            output_node: 0,
            ..QueryMetrics::default()
        };
        assert_eq!(metrics.rows_in(), 10);
        assert_eq!(metrics.rows_out(), 4);
        assert_eq!(metrics.state_bytes(), 64);
        assert_eq!(metrics.output_watermark(), Some(i64::MAX));
    }
}
