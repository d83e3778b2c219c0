//! `UpdatingAggregateOperator`: `GROUP BY keys` without window columns over an append-only
//! stream, emitting a changelog of each group's values.
//!
//! Emission: updating. After each input batch, every group the batch touched whose values
//! changed emits `-` with the values it last emitted (unless it is new) and then `+` with its
//! new values; a group whose values did not change emits nothing (as Flink does). Rows come out
//! in the order of each group's first row in the batch, so the changelog is deterministic for
//! a given input order. A global aggregate (no GROUP BY) is one group; over an input that ends
//! without a row it emits its empty-input row (`count(*) = 0`) at the end, as a batch query
//! over the same input returns it. Nothing else is emitted at the end: every change was
//! emitted with the batch that made it. No row is ever late (there is no window to close), and
//! watermarks are forwarded unchanged.
//!
//! State: one entry per distinct group: its key, one DataFusion [`Accumulator`] per aggregate
//! and the values last emitted. Never freed without a TTL (`state=unbounded` in EXPLAIN). With
//! one (`SET state.ttl`, a view's `state.ttl`; module `ttl`), a group expires that long after
//! a row last changed it, in processing time, without emitting anything (Flink's
//! `table.exec.state.ttl`): a later row of its key starts a new group, whose first values are
//! emitted as `+` with no `-` before them, and a retraction of an expired group is ignored.
//! Expired groups give their accumulators back at once; their keys leave DataFusion's
//! interner when at least half of the groups have expired (the live ones are interned
//! afresh). Per-group
//! `Accumulator`s rather than a `GroupsAccumulator`: the current values of the touched groups
//! must be read after every batch without losing state, and `GroupsAccumulator::evaluate`
//! drains the groups it emits, while `Accumulator::evaluate` must leave its state intact (its
//! contract: window functions call it after every row of a growing frame). That holds for
//! every DataFusion aggregate, including `count(DISTINCT ...)` and ordered ones, so none is
//! re-implemented here.
//!
//! Snapshot: per group, its key, each accumulator's intermediate state (`Accumulator::state`,
//! merged into fresh accumulators on restore; the original continues with accumulators
//! rebuilt the same way, since `state()` need not leave one as it was) and the values it last
//! emitted, so a restored operator suppresses and retracts exactly as the original would;
//! with a TTL, also when each group was last written.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{Field, FieldRef, Int64Type, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Accumulator, EmitTo};
use datafusion::physical_plan::aggregates::group_values::GroupValues;

use super::accumulators::{AggregateArguments, AggregateExprs};
use super::retractable_extreme::RetractableExtreme;
use super::ttl::StateTtl;
use super::{Operator, OperatorContext, OperatorInfo};
use crate::error::{EngineError, EngineResult};
use crate::runtime::message::{Epoch, EventTime};
use crate::state::{Freed, StateSnapshot, StateTable, StateUsage, corrupt};

/// The snapshot's table.
const GROUPS: &str = "groups";
/// Over a changelog, the snapshot column after the emitted values: each group's row count.
const ROWS: &str = "rows";
/// With a TTL, the last snapshot column: when each group was last written (ms).
const WRITTEN_AT: &str = "written_at";

/// The state table of an updating aggregate grouping by `keys` (as the plan names them),
/// freed by the watermark over SESSION windows (`expiring`), else by a TTL when it has one.
pub fn state_tables(keys: &[String], ttl: bool, expiring: bool) -> Vec<StateTable> {
    vec![StateTable::new(
        GROUPS,
        keys.to_vec(),
        "one entry per distinct group",
        if expiring {
            Freed::Watermark
        } else if ttl {
            Freed::Ttl
        } else {
            Freed::Never("")
        },
    )]
}

/// When the groups of an aggregate over SESSION windows' changelog expire: once the
/// watermark reaches the timestamp of key `key` (the window end, or window time) plus `after`
/// nanoseconds (the allowed lateness, plus 1 ms for window time). The SESSION upstream has
/// then forgotten the session, so no row will change the group again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowExpiry {
    pub key: usize,
    pub after: i64,
    /// The keys that are window columns: the groups are spread over instances by the others
    /// (as a window aggregate's are), so a key's sessions stay on one instance.
    pub window_keys: Vec<usize>,
}

/// A timestamp key's value in nanoseconds.
fn timestamp_ns(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(*v),
        _ => None,
    }
}

/// One group: its key, its aggregates' state and what it last emitted.
struct Group {
    /// The interned key values, in output order (none for a global aggregate).
    key: Vec<ScalarValue>,
    accumulators: Vec<Box<dyn Accumulator>>,
    /// The aggregate values of the group's last `+` row; `None` until it emitted one.
    emitted: Option<Vec<ScalarValue>>,
    /// The number of the last batch that touched the group.
    touched_by: u64,
    /// Over a changelog: the group's rows added and not retracted. A keyed group whose rows
    /// are all retracted is deleted (`-` of its last row) and starts afresh.
    rows: i64,
    /// With a TTL: when a row last changed the group (processing time, ms).
    written_at: i64,
    /// Expired by the TTL: no accumulators, nothing emitted; its key is still interned.
    expired: bool,
    /// Its size in bytes when last measured (after the last batch that touched it).
    bytes: usize,
}

impl Group {
    fn new(key: Vec<ScalarValue>, accumulators: Vec<Box<dyn Accumulator>>) -> Self {
        Self {
            key,
            accumulators,
            emitted: None,
            touched_by: 0,
            rows: 0,
            written_at: 0,
            expired: false,
            bytes: 0,
        }
    }

    /// Approximately how many bytes it holds: key, accumulators and last emitted values.
    fn size(&self) -> usize {
        self.accumulators.iter().map(|a| a.size()).sum::<usize>()
            + self.key.iter().map(ScalarValue::size).sum::<usize>()
            + self
                .emitted
                .iter()
                .flatten()
                .map(ScalarValue::size)
                .sum::<usize>()
    }
}

pub struct UpdatingAggregateOperator {
    info: OperatorInfo,
    exprs: AggregateExprs,
    /// Interns group keys to indices into `groups`.
    interner: Box<dyn GroupValues>,
    groups: Vec<Group>,
    /// Input batches so far: marks the groups each batch touches.
    batches: u64,
    /// The input is a changelog led by `__op`: `-` rows are retracted from the accumulators
    /// (sliding ones, which support `retract_batch`).
    retracting: bool,
    ttl: Option<StateTtl>,
    /// Groups expired and still interned.
    expired: usize,
    /// The sum of the groups' `bytes`, kept as batches touch them, so that measuring the
    /// state does not walk every group.
    group_bytes: usize,
    /// Over SESSION windows: when groups expire, and the live groups by the watermark that
    /// expires them (a group revived after a deletion may be listed twice).
    expiry: Option<WindowExpiry>,
    expiring: BinaryHeap<Reverse<(i64, usize)>>,
}

/// What a row of a changelog does to its group's aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowOp {
    Add,
    Retract,
    /// A retraction of a group that holds no rows (its state expired): Flink drops it too.
    Ignore,
}

/// The changelog rows of one batch, column by column.
#[derive(Default)]
struct Changes {
    ops: Vec<&'static str>,
    keys: Vec<Vec<ScalarValue>>,
    values: Vec<Vec<ScalarValue>>,
}

impl Changes {
    fn push(&mut self, op: &'static str, key: &[ScalarValue], values: &[ScalarValue]) {
        self.ops.push(op);
        for (column, v) in self.keys.iter_mut().zip(key) {
            column.push(v.clone());
        }
        for (column, v) in self.values.iter_mut().zip(values) {
            column.push(v.clone());
        }
    }
}

impl UpdatingAggregateOperator {
    /// An aggregate of an append-only input.
    pub fn try_new(info: OperatorInfo, exprs: AggregateExprs) -> EngineResult<Self> {
        Self::try_new_over(info, exprs, false)
    }

    /// An aggregate of an input that is a changelog (`retracting`) or append-only. Over a
    /// changelog every aggregate must support retraction in any order: the planner admits
    /// only those whose sliding accumulator allows it, and `min`/`max`
    /// ([`RetractableExtreme`]).
    pub fn try_new_over(
        info: OperatorInfo,
        exprs: AggregateExprs,
        retracting: bool,
    ) -> EngineResult<Self> {
        let interner = exprs.new_group_values()?;
        let op = Self {
            info,
            exprs,
            interner,
            groups: Vec::new(),
            batches: 0,
            retracting,
            ttl: None,
            expired: 0,
            group_bytes: 0,
            expiry: None,
            expiring: BinaryHeap::new(),
        };
        if retracting {
            for a in op.new_accumulators()? {
                if !a.supports_retract_batch() {
                    return Err(EngineError::Internal(
                        "an aggregate over a changelog without retraction".to_string(),
                    ));
                }
            }
        }
        Ok(op)
    }

    /// Groups expire `ttl` after they were last written.
    pub fn with_ttl(mut self, ttl: Option<StateTtl>) -> Self {
        self.ttl = ttl;
        self
    }

    /// Groups expire as the watermark passes their window (over SESSION windows).
    pub fn with_expiry(mut self, expiry: Option<WindowExpiry>) -> Self {
        self.expiry = expiry;
        self
    }

    /// Lists live group `g` to expire by the watermark, when groups do.
    fn list_expiring(&mut self, g: usize) {
        let Some(expiry) = &self.expiry else {
            return;
        };
        // A key that is no timestamp (NULL) never expires; the planner makes it the window's.
        if let Some(at) = self.groups[g]
            .key
            .get(expiry.key)
            .and_then(timestamp_ns)
            .map(|ns| ns.saturating_add(expiry.after))
        {
            self.expiring.push(Reverse((at, g)));
        }
    }

    /// Forgets (without emitting) the groups whose window the watermark has passed.
    fn expire_windows(&mut self, watermark: EventTime) -> EngineResult<()> {
        while let Some(Reverse((at, g))) = self.expiring.peek().copied() {
            if at > watermark {
                break;
            }
            self.expiring.pop();
            self.forget(g);
        }
        self.compact_when_due()
    }

    /// Marks group `g` expired: it gives back its accumulators and emits nothing more.
    fn forget(&mut self, g: usize) {
        let group = &mut self.groups[g];
        if group.expired {
            return;
        }
        group.expired = true;
        group.accumulators = Vec::new();
        group.emitted = None;
        group.rows = 0;
        self.expired += 1;
        self.remeasure(g);
    }

    /// Measures group `g` again, after something changed it.
    fn remeasure(&mut self, g: usize) {
        let group = &mut self.groups[g];
        let bytes = group.size();
        self.group_bytes = self.group_bytes - group.bytes + bytes;
        group.bytes = bytes;
    }

    /// Expires the groups the TTL has passed, when a scan is due; interns the live groups
    /// afresh once at least half of them have expired.
    fn expire(&mut self) -> EngineResult<()> {
        let Some(cutoff) = self.ttl.as_mut().and_then(StateTtl::due) else {
            return Ok(());
        };
        for g in 0..self.groups.len() {
            if self.groups[g].written_at <= cutoff {
                self.forget(g);
            }
        }
        self.compact_when_due()
    }

    /// Compacts once at least half of the groups have expired.
    fn compact_when_due(&mut self) -> EngineResult<()> {
        if self.expired > 0 && self.expired * 2 >= self.groups.len() {
            self.compact()?;
        }
        Ok(())
    }

    /// Drops the expired groups: the live groups' keys go into a fresh interner, in order.
    fn compact(&mut self) -> EngineResult<()> {
        let keys = self.interner.emit(EmitTo::All)?;
        let live = UInt32Array::from_iter_values(
            (0..self.groups.len() as u32).filter(|&g| !self.groups[g as usize].expired),
        );
        let keys = keys
            .iter()
            .map(|k| take(k.as_ref(), &live, None))
            .collect::<Result<Vec<_>, _>>()?;
        self.interner = self.exprs.new_group_values()?;
        let mut ids = Vec::with_capacity(live.len());
        self.interner.intern(&keys, &mut ids)?;
        if ids.iter().enumerate().any(|(i, &g)| i != g) {
            return Err(EngineError::Internal(
                "live groups interned out of order".to_string(),
            ));
        }
        let dropped: usize = self
            .groups
            .iter()
            .filter(|g| g.expired)
            .map(|g| g.bytes)
            .sum();
        self.group_bytes -= dropped;
        self.groups.retain(|g| !g.expired);
        self.groups.shrink_to_fit();
        self.expired = 0;
        self.expiring.clear();
        for g in 0..self.groups.len() {
            self.list_expiring(g);
        }
        Ok(())
    }

    fn new_accumulators(&self) -> EngineResult<Vec<Box<dyn Accumulator>>> {
        Ok(self
            .exprs
            .aggregates
            .iter()
            .map(|a| {
                if !self.retracting {
                    return a.create_accumulator();
                }
                match a.fun().name() {
                    // DataFusion's sliding min/max expect rows to leave in arrival order.
                    name @ ("min" | "max") => Ok(Box::new(RetractableExtreme::try_new(
                        a.field().data_type(),
                        name == "max",
                    )?) as Box<dyn Accumulator>),
                    _ => a.create_sliding_accumulator(),
                }
            })
            .collect::<Result<_, _>>()?)
    }

    /// Fresh accumulators for `groups` groups.
    fn new_accumulators_for(&self, groups: usize) -> EngineResult<Vec<Vec<Box<dyn Accumulator>>>> {
        (0..groups).map(|_| self.new_accumulators()).collect()
    }

    /// The number of state columns of each aggregate.
    fn state_columns(&self) -> EngineResult<Vec<usize>> {
        if self.retracting {
            // Sliding accumulators keep more than the plain ones (a sum its count too).
            return Ok(self
                .new_accumulators()?
                .iter_mut()
                .map(|a| a.state().map(|s| s.len()))
                .collect::<Result<_, _>>()?);
        }
        self.exprs
            .aggregates
            .iter()
            .map(|a| Ok(a.state_fields()?.len()))
            .collect()
    }

    /// The snapshot's key and state columns: the plain accumulators' state fields; over a
    /// changelog, the sliding accumulators' (typed by an empty one's state).
    fn state_fields(&self) -> EngineResult<Vec<FieldRef>> {
        let fields = self.exprs.state_fields()?;
        if !self.retracting {
            return Ok(fields);
        }
        let plain: usize = self
            .exprs
            .aggregates
            .iter()
            .map(|a| Ok(a.state_fields()?.len()))
            .collect::<EngineResult<Vec<_>>>()?
            .iter()
            .sum();
        let mut out: Vec<FieldRef> = fields[..fields.len() - plain].to_vec();
        for (a, mut accumulator) in self.exprs.aggregates.iter().zip(self.new_accumulators()?) {
            for (i, v) in accumulator.state()?.iter().enumerate() {
                out.push(Arc::new(Field::new(
                    format!("{}[{i}]", a.name()),
                    v.data_type(),
                    true,
                )));
            }
        }
        Ok(out)
    }

    /// Adds the rows of `batch` whose interned groups are `group_ids` to their groups' state;
    /// over a changelog, `ops` says what each row does.
    fn update(
        &mut self,
        inputs: &AggregateArguments,
        group_ids: &[usize],
        ops: Option<&[RowOp]>,
    ) -> EngineResult<()> {
        match ops {
            None => self.apply(inputs, group_ids, None),
            Some(ops) => {
                self.apply(inputs, group_ids, Some((ops, RowOp::Add)))?;
                self.apply(inputs, group_ids, Some((ops, RowOp::Retract)))
            }
        }
    }

    /// Applies the rows whose op is `op` (all rows without `ops`): updates or retracts.
    fn apply(
        &mut self,
        inputs: &AggregateArguments,
        group_ids: &[usize],
        ops: Option<(&[RowOp], RowOp)>,
    ) -> EngineResult<()> {
        // The rows by group, each group's rows in input order (order-sensitive aggregates
        // such as first_value see them as they came).
        let mut order: Vec<u32> = (0..group_ids.len() as u32).collect();
        order.sort_by_key(|&r| group_ids[r as usize]);
        for (a, (arguments, filter)) in inputs.arguments.iter().zip(&inputs.filters).enumerate() {
            let with_op = |r: u32| ops.is_none_or(|(ops, op)| ops[r as usize] == op);
            let indices = UInt32Array::from(match filter {
                Some(mask) => order
                    .iter()
                    .copied()
                    .filter(|&r| mask.is_valid(r as usize) && mask.value(r as usize))
                    .filter(|&r| with_op(r))
                    .collect::<Vec<u32>>(),
                None => order.iter().copied().filter(|&r| with_op(r)).collect(),
            });
            let rows = indices.values();
            if rows.is_empty() {
                continue;
            }
            let columns = arguments
                .iter()
                .map(|c| take(c.as_ref(), &indices, None))
                .collect::<Result<Vec<ArrayRef>, _>>()?;
            let mut start = 0;
            while start < rows.len() {
                let group = group_ids[rows[start] as usize];
                let mut end = start + 1;
                while end < rows.len() && group_ids[rows[end] as usize] == group {
                    end += 1;
                }
                let slice: Vec<ArrayRef> = columns
                    .iter()
                    .map(|c| c.slice(start, end - start))
                    .collect();
                let accumulator = &mut self.groups[group].accumulators[a];
                if ops.is_some_and(|(_, op)| op == RowOp::Retract) {
                    accumulator.retract_batch(&slice)?;
                } else {
                    accumulator.update_batch(&slice)?;
                }
                start = end;
            }
        }
        Ok(())
    }

    /// Emits the changes of `touched` groups, in that order.
    fn emit(&mut self, touched: &[usize], out: &mut OperatorContext) -> EngineResult<()> {
        let key_columns = self.groups.first().map_or(0, |g| g.key.len());
        let mut changes = Changes {
            keys: vec![Vec::new(); key_columns],
            values: vec![Vec::new(); self.exprs.aggregates.len()],
            ..Changes::default()
        };
        let keyed = self.exprs.has_keys() || self.exprs.has_grouping_sets();
        for &g in touched {
            if self.retracting && keyed && self.groups[g].rows <= 0 {
                // Every row of the group was retracted: the group is deleted (and its memory
                // given back: a later row of its key starts it afresh).
                let group = &mut self.groups[g];
                if let Some(old) = group.emitted.take() {
                    changes.push("-", &group.key, &old);
                }
                self.forget(g);
                continue;
            }
            let group = &mut self.groups[g];
            let values = group
                .accumulators
                .iter_mut()
                .map(|a| a.evaluate())
                .collect::<Result<Vec<_>, _>>()?;
            if group.emitted.as_ref() == Some(&values) {
                continue;
            }
            if let Some(old) = &group.emitted {
                changes.push("-", &group.key, old);
            }
            changes.push("+", &group.key, &values);
            group.emitted = Some(values);
        }
        for &g in touched {
            self.remeasure(g);
        }
        self.output(changes, out)
    }

    fn output(&self, changes: Changes, out: &mut OperatorContext) -> EngineResult<()> {
        if changes.ops.is_empty() {
            return Ok(());
        }
        let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(changes.ops))];
        for column in changes.keys.into_iter().chain(changes.values) {
            columns.push(ScalarValue::iter_to_array(column)?);
        }
        out.batch(super::conform_batch(&self.info.schema, columns)?);
        Ok(())
    }
}

impl Operator for UpdatingAggregateOperator {
    fn info(&self) -> &OperatorInfo {
        &self.info
    }

    fn on_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let inputs = self.exprs.evaluate_arguments(&batch)?;
        let adds = if self.retracting {
            Some(super::changelog_inserts(&batch)?)
        } else {
            None
        };
        self.expire()?;
        let now = self.ttl.as_ref().map_or(0, StateTtl::now);
        let has_keys = self.exprs.has_keys();
        self.batches += 1;
        let mut touched = Vec::new();
        let mut group_ids = Vec::with_capacity(batch.num_rows());
        let mut ops = Vec::new();
        // One pass per grouping set (one without GROUPING SETS).
        for keys in self.exprs.evaluate_keys(&batch)? {
            group_ids.clear();
            ops.clear();
            self.interner.intern(&keys, &mut group_ids)?;
            for (row, &g) in group_ids.iter().enumerate() {
                if g == self.groups.len() {
                    let key = if has_keys {
                        keys.iter()
                            .map(|k| ScalarValue::try_from_array(k, row))
                            .collect::<Result<Vec<_>, _>>()?
                    } else {
                        Vec::new()
                    };
                    let accumulators = self.new_accumulators()?;
                    self.groups.push(Group::new(key, accumulators));
                    self.list_expiring(g);
                } else if g > self.groups.len() {
                    return Err(EngineError::Internal(format!(
                        "group {g} interned before group {}",
                        self.groups.len()
                    )));
                } else if self.groups[g].expired {
                    // Its key comes again after the TTL: a new group.
                    let accumulators = self.new_accumulators()?;
                    let group = &mut self.groups[g];
                    group.expired = false;
                    group.accumulators = accumulators;
                    self.expired -= 1;
                    self.list_expiring(g);
                }
                if self.groups[g].touched_by != self.batches {
                    self.groups[g].touched_by = self.batches;
                    self.groups[g].written_at = now;
                    touched.push(g);
                }
                if let Some(adds) = &adds {
                    let group = &mut self.groups[g];
                    ops.push(if adds[row] {
                        group.rows += 1;
                        RowOp::Add
                    } else if group.rows > 0 {
                        group.rows -= 1;
                        RowOp::Retract
                    } else {
                        RowOp::Ignore
                    });
                }
            }
            self.update(&inputs, &group_ids, adds.as_ref().map(|_| ops.as_slice()))?;
        }
        self.emit(&touched, out)?;
        // Groups deleted by retractions give their keys back too.
        self.compact_when_due()
    }

    fn on_watermark(
        &mut self,
        watermark: EventTime,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        self.expire()?;
        self.expire_windows(watermark)?;
        out.watermark(watermark);
        Ok(())
    }

    fn on_end(&mut self, out: &mut OperatorContext) -> EngineResult<()> {
        // A global aggregate has its one row even over no input, as in a batch query.
        if self.exprs.has_keys() || self.exprs.has_grouping_sets() || !self.groups.is_empty() {
            return Ok(());
        }
        let values = self
            .new_accumulators()?
            .iter_mut()
            .map(|a| a.evaluate())
            .collect::<Result<Vec<_>, _>>()?;
        let mut changes = Changes {
            values: vec![Vec::new(); values.len()],
            ..Changes::default()
        };
        changes.push("+", &[], &values);
        self.output(changes, out)
    }

    /// One table, `groups`: a row per group in interning order, with its key columns, each
    /// aggregate's state columns (`Accumulator::state`) and the values it last emitted
    /// (`emitted{i}`); no batch without groups.
    fn snapshot(&mut self, _epoch: Epoch) -> EngineResult<StateSnapshot> {
        let mut snapshot = StateSnapshot::new();
        if self.groups.is_empty() {
            return Ok(snapshot);
        }
        let fields = self.state_fields()?;
        let aggregates = self.exprs.aggregates.len();
        let mut columns: Vec<Vec<ScalarValue>> = vec![Vec::new(); fields.len() + aggregates];
        let key_columns = fields.len() - self.state_columns()?.iter().sum::<usize>();
        let has_keys = self.exprs.has_keys();
        let fresh = self.new_accumulators_for(self.groups.len())?;
        let mut rows = Vec::new();
        let mut written_at = Vec::new();
        for (group, fresh) in self.groups.iter_mut().zip(fresh) {
            if group.expired || (group.emitted.is_none() && self.retracting) {
                // Expired, or deleted (every row retracted): as if it never was.
                continue;
            }
            rows.push(group.rows);
            written_at.push(group.written_at);
            if has_keys {
                for (column, v) in columns.iter_mut().zip(&group.key) {
                    column.push(v.clone());
                }
            } else {
                columns[0].push(ScalarValue::Boolean(Some(true)));
            }
            // The state is read, and the group continues with accumulators rebuilt from it
            // (as a restore rebuilds them): `state()` may leave an accumulator changed.
            let mut column = key_columns;
            for (a, mut rebuilt) in group.accumulators.iter_mut().zip(fresh) {
                let state = a.state()?;
                let arrays = state
                    .iter()
                    .map(|v| v.to_array())
                    .collect::<Result<Vec<_>, _>>()?;
                rebuilt.merge_batch(&arrays)?;
                *a = rebuilt;
                for v in state {
                    columns[column].push(v);
                    column += 1;
                }
            }
            let emitted = group.emitted.as_ref().ok_or_else(|| {
                EngineError::Internal("a group without its emitted row".to_string())
            })?;
            for (column, v) in columns[fields.len()..].iter_mut().zip(emitted) {
                column.push(v.clone());
            }
        }
        if rows.is_empty() {
            return Ok(snapshot);
        }
        let mut names: Vec<String> = fields
            .iter()
            .map(|f| f.name().clone())
            .chain((0..aggregates).map(|i| format!("emitted{i}")))
            .collect();
        let mut arrays = columns
            .into_iter()
            .map(ScalarValue::iter_to_array)
            .collect::<Result<Vec<_>, _>>()?;
        if self.retracting {
            names.push(ROWS.to_string());
            arrays.push(Arc::new(Int64Array::from(rows)));
        }
        if self.ttl.is_some() {
            names.push(WRITTEN_AT.to_string());
            arrays.push(Arc::new(Int64Array::from(written_at)));
        }
        let schema = Schema::new(
            names
                .iter()
                .zip(&arrays)
                .map(|(name, a)| Field::new(name, a.data_type().clone(), true))
                .collect::<Vec<_>>(),
        );
        snapshot.add(GROUPS, RecordBatch::try_new(Arc::new(schema), arrays)?)?;
        Ok(snapshot)
    }

    fn restore(&mut self, snapshot: StateSnapshot) -> EngineResult<()> {
        let fields = self.state_fields()?;
        let state_columns = self.state_columns()?;
        let key_columns = fields.len() - state_columns.iter().sum::<usize>();
        let aggregates = self.exprs.aggregates.len();
        let width = fields.len()
            + aggregates
            + usize::from(self.retracting)
            + usize::from(self.ttl.is_some());
        for batch in snapshot.table(GROUPS) {
            if batch.num_columns() != width {
                return Err(corrupt(format!(
                    "updating aggregate groups of {} columns, expected {width}",
                    batch.num_columns(),
                )));
            }
            let int64_column = |i: usize, what: &str| {
                batch
                    .column(i)
                    .as_primitive_opt::<Int64Type>()
                    .ok_or_else(|| corrupt(format!("updating aggregate {what} are not BIGINT")))
            };
            let rows = if self.retracting {
                Some(int64_column(fields.len() + aggregates, "row counts")?)
            } else {
                None
            };
            let written_at = if self.ttl.is_some() {
                Some(int64_column(width - 1, "write times")?)
            } else {
                None
            };
            let expected = fields.iter().map(|f| f.data_type().clone()).chain(
                self.exprs
                    .aggregates
                    .iter()
                    .map(|a| a.field().data_type().clone()),
            );
            for (column, data_type) in batch.columns().iter().zip(expected) {
                if !column.data_type().equals_datatype(&data_type) {
                    return Err(corrupt(format!(
                        "updating aggregate column of type {}, expected {data_type}",
                        column.data_type()
                    )));
                }
            }
            let keys = &batch.columns()[..key_columns];
            let mut group_ids = Vec::with_capacity(batch.num_rows());
            self.interner.intern(keys, &mut group_ids)?;
            let accumulators = self.new_accumulators_for(batch.num_rows())?;
            for (row, mut accumulators) in accumulators.into_iter().enumerate() {
                if group_ids[row] != self.groups.len() {
                    return Err(corrupt("an updating aggregate group twice"));
                }
                let key = if self.exprs.has_keys() {
                    keys.iter()
                        .map(|k| ScalarValue::try_from_array(k, row))
                        .collect::<Result<Vec<_>, _>>()?
                } else {
                    Vec::new()
                };
                let mut column = key_columns;
                for (a, n) in accumulators.iter_mut().zip(&state_columns) {
                    let state: Vec<ArrayRef> = batch.columns()[column..column + n]
                        .iter()
                        .map(|c| c.slice(row, 1))
                        .collect();
                    a.merge_batch(&state)?;
                    column += n;
                }
                let emitted = batch.columns()[fields.len()..fields.len() + aggregates]
                    .iter()
                    .map(|c| ScalarValue::try_from_array(c, row))
                    .collect::<Result<Vec<_>, _>>()?;
                self.groups.push(Group {
                    emitted: Some(emitted),
                    rows: rows.map_or(0, |r| r.value(row)),
                    written_at: written_at.map_or(0, |w| w.value(row)),
                    ..Group::new(key, accumulators)
                });
            }
        }
        for g in 0..self.groups.len() {
            self.remeasure(g);
            self.list_expiring(g);
        }
        Ok(())
    }

    /// Kept as batches touch the groups ([`Group::bytes`]): constant time, so the runtime can
    /// check the memory limits after every batch however many groups there are.
    fn state_usage(&self) -> Vec<StateUsage> {
        let bytes = self.interner.size() + self.group_bytes;
        vec![StateUsage {
            table: GROUPS,
            rows: self.groups.len() - self.expired,
            bytes,
        }]
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::DFSchema;
    use datafusion::execution::context::ExecutionProps;
    use datafusion::functions_aggregate::expr_fn::{avg, count, count_distinct, max, min, sum};
    use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
    use datafusion::logical_expr::{Expr, cast, col};
    use datafusion::physical_expr::aggregate::LoweredAggregateBuilder;
    use datafusion::physical_expr::create_physical_expr;
    use datafusion::physical_plan::aggregates::PhysicalGroupBy;

    use super::*;
    use crate::operators::checkpoint_harness::{
        Lcg, Step, check_every_cut_forwarding, restore_declared, rows,
    };

    fn declared() -> Vec<StateTable> {
        state_tables(&["k".to_string()], false, false)
    }
    use crate::runtime::message::Message;

    fn input_schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    /// Rows of (k, v).
    fn batch(rows: &[(i64, Option<i64>)]) -> RecordBatch {
        RecordBatch::try_new(
            input_schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap()
    }

    /// `SELECT [k,] <aggregates> FROM input [GROUP BY k]`, output led by `__op`.
    fn operator(keyed: bool, aggregates: Vec<(Expr, DataType)>) -> UpdatingAggregateOperator {
        operator_over(keyed, aggregates, false)
    }

    /// The input as a changelog: `__op`, then (k, v).
    fn changelog_schema() -> Arc<Schema> {
        let mut fields = vec![Field::new(crate::plan::CHANGELOG_OP, DataType::Utf8, false)];
        fields.extend(input_schema().fields().iter().map(|f| f.as_ref().clone()));
        Arc::new(Schema::new(fields))
    }

    /// Changelog rows of (op, k, v).
    fn changes(rows: &[(&str, i64, Option<i64>)]) -> RecordBatch {
        RecordBatch::try_new(
            changelog_schema(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    /// [`operator`] over a changelog when `retracting`.
    fn operator_over(
        keyed: bool,
        aggregates: Vec<(Expr, DataType)>,
        retracting: bool,
    ) -> UpdatingAggregateOperator {
        let schema = if retracting {
            changelog_schema()
        } else {
            input_schema()
        };
        let df_schema = DFSchema::try_from(schema.as_ref().clone()).unwrap();
        let props = ExecutionProps::new();
        let planning = PhysicalPlanningContext::default();
        let mut fields = vec![Field::new(crate::plan::CHANGELOG_OP, DataType::Utf8, false)];
        let mut keys = Vec::new();
        if keyed {
            let key = create_physical_expr(&col("k"), &df_schema, &props, &planning).unwrap();
            keys.push((key, "k".to_string()));
            fields.push(Field::new("k", DataType::Int64, false));
        }
        let mut lowered_aggregates = Vec::new();
        for (i, (e, data_type)) in aggregates.iter().enumerate() {
            let lowered = LoweredAggregateBuilder::new(e, &df_schema, &schema, &props, &planning)
                .build()
                .unwrap();
            lowered_aggregates.push(lowered.aggregate);
            fields.push(Field::new(format!("a{i}"), data_type.clone(), true));
        }
        let exprs = AggregateExprs::try_new(
            lowered_aggregates,
            vec![None; aggregates.len()],
            PhysicalGroupBy::new_single(keys),
            &schema,
        )
        .unwrap();
        UpdatingAggregateOperator::try_new_over(
            OperatorInfo {
                name: "UpdatingAggregate".to_string(),
                schema: Arc::new(Schema::new(fields)),
            },
            exprs,
            retracting,
        )
        .unwrap()
    }

    #[test]
    fn state_bytes_kept_as_batches_come_equal_a_walk_over_the_groups() {
        let mut op = operator_over(true, with_extremes(), true);
        let mut out = OperatorContext::default();
        let walk = |op: &UpdatingAggregateOperator| {
            op.interner.size() + op.groups.iter().map(Group::size).sum::<usize>()
        };
        for step in [
            changes(&[("+", 1, Some(5)), ("+", 2, Some(7)), ("+", 1, Some(9))]),
            changes(&[("-", 1, Some(9)), ("+", 3, None)]),
            changes(&[("-", 1, Some(5)), ("-", 2, Some(7))]),
        ] {
            op.on_batch(0, step, &mut out).unwrap();
            assert_eq!(op.state_usage()[0].bytes, walk(&op));
            assert!(op.state_usage()[0].bytes > 0);
        }
    }

    fn retractable_aggregates() -> Vec<(Expr, DataType)> {
        vec![
            (count(col("v")), i64()),
            (sum(col("v")), i64()),
            (avg(cast(col("v"), DataType::Float64)), DataType::Float64),
        ]
    }

    /// [`retractable_aggregates`] and min and max.
    fn with_extremes() -> Vec<(Expr, DataType)> {
        let mut aggregates = retractable_aggregates();
        aggregates.push((min(col("v")), i64()));
        aggregates.push((max(col("v")), i64()));
        aggregates
    }

    #[test]
    fn over_a_changelog_retractions_leave_the_aggregates_and_an_emptied_group_is_deleted() {
        let mut op = operator_over(true, retractable_aggregates(), true);
        let mut out = OperatorContext::default();
        op.on_batch(
            0,
            changes(&[("+", 1, Some(10)), ("+", 1, Some(30)), ("+", 2, Some(5))]),
            &mut out,
        )
        .unwrap();
        assert_eq!(rows(&mut out), ["+ 1 2 40 20.0", "+ 2 1 5 5.0"]);
        // A retraction takes its value out again.
        op.on_batch(0, changes(&[("-", 1, Some(10))]), &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), ["- 1 2 40 20.0", "+ 1 1 30 30.0"]);
        // Group 2 loses its only row: deleted, not updated to count 0.
        op.on_batch(
            0,
            changes(&[("-", 2, Some(5)), ("+", 1, Some(0))]),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            rows(&mut out),
            ["- 2 1 5 5.0", "- 1 1 30 30.0", "+ 1 2 30 15.0"]
        );
        // A deleted group that gets a row again starts afresh.
        op.on_batch(0, changes(&[("+", 2, Some(7))]), &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), ["+ 2 1 7 7.0"]);
    }

    /// Over SESSION windows' changelog: `SELECT w, count(v) ... GROUP BY w` where `w` is a
    /// window end in ms; groups expire 1 s after it.
    fn session_groups() -> UpdatingAggregateOperator {
        use datafusion::arrow::datatypes::TimeUnit;
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        let schema = Arc::new(Schema::new(vec![
            Field::new(crate::plan::CHANGELOG_OP, DataType::Utf8, false),
            Field::new("w", ts.clone(), false),
            Field::new("v", DataType::Int64, true),
        ]));
        let df_schema = DFSchema::try_from(schema.as_ref().clone()).unwrap();
        let (props, planning) = (ExecutionProps::new(), PhysicalPlanningContext::default());
        let key = create_physical_expr(&col("w"), &df_schema, &props, &planning).unwrap();
        let lowered =
            LoweredAggregateBuilder::new(&count(col("v")), &df_schema, &schema, &props, &planning)
                .build()
                .unwrap();
        let exprs = AggregateExprs::try_new(
            vec![lowered.aggregate],
            vec![None],
            PhysicalGroupBy::new_single(vec![(key, "w".to_string())]),
            &schema,
        )
        .unwrap();
        UpdatingAggregateOperator::try_new_over(
            OperatorInfo {
                name: "UpdatingAggregate".to_string(),
                schema: Arc::new(Schema::new(vec![
                    Field::new(crate::plan::CHANGELOG_OP, DataType::Utf8, false),
                    Field::new("w", ts, false),
                    Field::new("n", DataType::Int64, true),
                ])),
            },
            exprs,
            true,
        )
        .unwrap()
        .with_expiry(Some(WindowExpiry {
            key: 0,
            after: 1_000_000_000,
            window_keys: vec![0],
        }))
    }

    /// Changelog rows of (op, w ms, v).
    fn window_changes(rows: &[(&str, i64, i64)]) -> RecordBatch {
        use datafusion::arrow::array::TimestampMillisecondArray;
        let schema = session_groups().info.schema.clone();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.1),
                )),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    #[test]
    fn over_sessions_groups_are_forgotten_once_their_window_expires_and_deleted_ones_freed() {
        const MS: i64 = 1_000_000;
        let mut op = session_groups();
        let mut out = OperatorContext::default();
        op.on_batch(
            0,
            window_changes(&[("+", 5_000, 1), ("+", 5_000, 2), ("+", 9_000, 3)]),
            &mut out,
        )
        .unwrap();
        assert_eq!(rows(&mut out).len(), 2);
        // A session grows: its rows leave the group of the old end for the new one, and the
        // emptied group gives its memory back.
        op.on_batch(
            0,
            window_changes(&[
                ("-", 5_000, 1),
                ("-", 5_000, 2),
                ("+", 7_000, 1),
                ("+", 7_000, 2),
            ]),
            &mut out,
        )
        .unwrap();
        assert_eq!(rows(&mut out).len(), 2, "- of the old group, + of the new");
        assert_eq!(op.state_usage()[0].rows, 2);
        // The watermark passes 7 s + 1 s: the group of window end 7 s goes, silently.
        op.on_watermark(7_999 * MS, &mut out).unwrap();
        assert_eq!(op.state_usage()[0].rows, 2);
        op.on_watermark(8_000 * MS, &mut out).unwrap();
        assert_eq!(op.state_usage()[0].rows, 1);
        assert!(rows(&mut out).is_empty(), "expiry emits nothing");
        // Half the groups have gone: the interner holds only the live one.
        assert_eq!(op.groups.len(), 1);
        op.on_watermark(10_000 * MS, &mut out).unwrap();
        assert_eq!(op.state_usage()[0].rows, 0);
        assert!(op.snapshot(1).unwrap().table(GROUPS).is_empty());
    }

    #[test]
    fn over_a_changelog_restores_at_every_cut_with_the_same_changelog() {
        for (keyed, seed) in [(true, 4), (false, 5)] {
            let mut rng = Lcg(seed);
            let mut held: Vec<(i64, Option<i64>)> = Vec::new();
            let mut steps = Vec::new();
            for i in 0..30 {
                if rng.next(4) == 0 {
                    steps.push(Step::Watermark(i));
                    continue;
                }
                let mut rows = Vec::new();
                for _ in 0..1 + rng.next(4) {
                    if !held.is_empty() && rng.next(3) == 0 {
                        let (k, v) = held.remove(rng.next(held.len() as u64) as usize);
                        rows.push(("-", k, v));
                    } else {
                        let row = (
                            rng.next(3) as i64,
                            (rng.next(6) != 0).then(|| rng.next(9) as i64),
                        );
                        held.push(row);
                        rows.push(("+", row.0, row.1));
                    }
                }
                steps.push(Step::Batch(changes(&rows)));
            }
            steps.push(Step::End);
            let make =
                || Box::new(operator_over(keyed, with_extremes(), true)) as Box<dyn Operator>;
            let (output, _) = check_every_cut_forwarding(&make, &declared(), &steps);
            assert!(
                output.join("\n").contains("| - "),
                "the sequence retracts rows"
            );
        }
    }

    fn i64() -> DataType {
        DataType::Int64
    }

    #[test]
    fn updates_retract_the_previous_row_of_each_touched_group() {
        let mut op = operator(
            true,
            vec![
                (count(col("v")), i64()),
                (sum(col("v")), i64()),
                (max(col("v")), i64()),
                // The analyzer's coercion of avg's argument, done by hand.
                (avg(cast(col("v"), DataType::Float64)), DataType::Float64),
            ],
        );
        let mut out = OperatorContext::default();
        // Groups in the order of their first row in the batch.
        op.on_batch(
            0,
            batch(&[(2, Some(5)), (1, Some(1)), (2, Some(3))]),
            &mut out,
        )
        .unwrap();
        assert_eq!(rows(&mut out), vec!["+ 2 2 8 5 4.0", "+ 1 1 1 1 1.0"]);
        // Only group 1 changes: its old row is retracted, then its new row inserted.
        op.on_batch(0, batch(&[(1, Some(4))]), &mut out).unwrap();
        assert_eq!(rows(&mut out), vec!["- 1 1 1 1 1.0", "+ 1 2 5 4 2.5"]);
        // A NULL does not change count(v), sum, max or avg: nothing is emitted.
        op.on_batch(0, batch(&[(2, None)]), &mut out).unwrap();
        assert_eq!(rows(&mut out), Vec::<String>::new());
        let state = op.state_usage();
        assert_eq!(state[0].rows, 2);
        assert!(state[0].bytes > 0);
        // Watermarks pass through; the end emits nothing more.
        op.on_watermark(42, &mut out).unwrap();
        op.on_end(&mut out).unwrap();
        let messages: Vec<Message> = out.drain().collect();
        assert!(matches!(messages.as_slice(), [Message::Watermark(42)]));
    }

    #[test]
    fn count_distinct_keeps_its_values_across_batches() {
        let mut op = operator(true, vec![(count_distinct(col("v")), i64())]);
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[(1, Some(7)), (1, Some(7))]), &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), vec!["+ 1 1"]);
        // 7 again: still one distinct value, so nothing; 8 makes two.
        op.on_batch(0, batch(&[(1, Some(7))]), &mut out).unwrap();
        assert_eq!(rows(&mut out), Vec::<String>::new());
        op.on_batch(0, batch(&[(1, Some(8)), (1, Some(7))]), &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), vec!["- 1 1", "+ 1 2"]);
    }

    #[test]
    fn unchanged_values_are_suppressed() {
        let mut op = operator(true, vec![(max(col("v")), i64())]);
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[(1, Some(10)), (2, Some(1))]), &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), vec!["+ 1 10", "+ 2 1"]);
        // Group 1's max stays 10; group 2's rises.
        op.on_batch(0, batch(&[(1, Some(3)), (2, Some(2))]), &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), vec!["- 2 1", "+ 2 2"]);
    }

    #[test]
    fn a_global_aggregate_is_one_group() {
        let mut op = operator(
            false,
            vec![
                (
                    count(Expr::Literal(ScalarValue::Int64(Some(1)), None)),
                    i64(),
                ),
                (sum(col("v")), i64()),
            ],
        );
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[(1, Some(1)), (2, Some(2))]), &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), vec!["+ 2 3"]);
        op.on_batch(0, batch(&[(3, Some(3))]), &mut out).unwrap();
        assert_eq!(rows(&mut out), vec!["- 2 3", "+ 3 6"]);
        op.on_end(&mut out).unwrap();
        assert_eq!(rows(&mut out), Vec::<String>::new());
    }

    #[test]
    fn a_global_aggregate_over_no_rows_emits_its_empty_row_at_the_end() {
        let mut op = operator(
            false,
            vec![(count(col("v")), i64()), (sum(col("v")), i64())],
        );
        let mut out = OperatorContext::default();
        op.on_end(&mut out).unwrap();
        assert_eq!(rows(&mut out), vec!["+ 0 NULL"]);
        // A grouped aggregate over no rows has no groups.
        let mut op = operator(true, vec![(count(col("v")), i64())]);
        op.on_end(&mut out).unwrap();
        assert_eq!(rows(&mut out), Vec::<String>::new());
    }

    fn checkpoint_sequence(seed: u64) -> Vec<Step> {
        let mut rng = Lcg(seed);
        let mut steps = Vec::new();
        for i in 0..30 {
            if rng.next(4) == 0 {
                steps.push(Step::Watermark(i));
                continue;
            }
            let rows: Vec<(i64, Option<i64>)> = (0..1 + rng.next(4))
                .map(|_| {
                    let k = rng.next(4) as i64;
                    (k, (rng.next(6) != 0).then(|| rng.next(9) as i64))
                })
                .collect();
            steps.push(Step::Batch(batch(&rows)));
        }
        steps.push(Step::End);
        steps
    }

    fn all_aggregates() -> Vec<(Expr, DataType)> {
        vec![
            (count(col("v")), i64()),
            (sum(col("v")), i64()),
            (max(col("v")), i64()),
            (min(col("v")), i64()),
            (avg(cast(col("v"), DataType::Float64)), DataType::Float64),
            (count_distinct(col("v")), i64()),
        ]
    }

    #[test]
    fn restores_at_every_cut_with_the_same_changelog() {
        for (keyed, seed) in [(true, 1), (true, 2), (false, 3)] {
            let make = || Box::new(operator(keyed, all_aggregates())) as Box<dyn Operator>;
            let (output, _) =
                check_every_cut_forwarding(&make, &declared(), &checkpoint_sequence(seed));
            let text = output.join("\n");
            assert!(text.contains("| - "), "the sequence retracts rows");
        }
    }

    #[test]
    fn a_global_aggregate_over_no_rows_restores_its_end_row() {
        let make =
            || Box::new(operator(false, vec![(count(col("v")), i64())])) as Box<dyn Operator>;
        let (output, _) =
            check_every_cut_forwarding(&make, &declared(), &[Step::Watermark(1), Step::End]);
        assert!(output.iter().any(|m| m.contains("| + ")));
    }

    #[test]
    fn a_snapshot_of_another_shape_is_refused() {
        let mut op = operator(true, all_aggregates());
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[(1, Some(1)), (2, None)]), &mut out)
            .unwrap();
        let good = op.snapshot(1).unwrap();
        let groups = &good.table(GROUPS)[0];
        // Fewer aggregates than the operator has.
        let mut short = StateSnapshot::new();
        short
            .add(GROUPS, groups.project(&[0, 1, 2]).unwrap())
            .unwrap();
        assert!(operator(true, all_aggregates()).restore(short).is_err());
        // A state column of another type.
        let mut columns = groups.columns().to_vec();
        columns[1] = datafusion::arrow::compute::cast(&columns[1], &DataType::Utf8).unwrap();
        let mut wrong = StateSnapshot::new();
        wrong
            .add(
                GROUPS,
                RecordBatch::try_new(
                    Arc::new(Schema::new(
                        columns
                            .iter()
                            .enumerate()
                            .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
                            .collect::<Vec<_>>(),
                    )),
                    columns,
                )
                .unwrap(),
            )
            .unwrap();
        assert!(operator(true, all_aggregates()).restore(wrong).is_err());
        // Another operator's table.
        let mut foreign = StateSnapshot::new();
        foreign.add("slices", batch(&[(1, Some(1))])).unwrap();
        let mut op = operator(true, all_aggregates());
        assert!(restore_declared(&mut op, &declared(), foreign).is_err());
        // The same group twice.
        let mut twice = StateSnapshot::new();
        twice.add(GROUPS, groups.clone()).unwrap();
        twice.add(GROUPS, groups.clone()).unwrap();
        assert!(operator(true, all_aggregates()).restore(twice).is_err());
        operator(true, all_aggregates()).restore(good).unwrap();
    }

    /// A clock the test moves, and an operator of `count(v), sum(v)` per key whose groups
    /// expire an hour after they were last written.
    fn with_ttl(
        retracting: bool,
    ) -> (Arc<std::sync::atomic::AtomicI64>, UpdatingAggregateOperator) {
        let now = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let clock = Arc::clone(&now);
        let aggregates = vec![(count(col("v")), i64()), (sum(col("v")), i64())];
        let op = operator_over(true, aggregates, retracting).with_ttl(Some(StateTtl::new(
            std::time::Duration::from_secs(3600),
            Arc::new(move || clock.load(std::sync::atomic::Ordering::Relaxed)),
        )));
        (now, op)
    }

    #[test]
    fn a_ttl_frees_a_million_groups_an_hour_after_their_last_row() {
        use std::sync::atomic::Ordering;
        let (now, mut op) = with_ttl(false);
        let mut out = OperatorContext::default();
        let keys: Vec<(i64, Option<i64>)> = (0..1_000_000).map(|k| (k, Some(1))).collect();
        op.on_batch(0, batch(&keys), &mut out).unwrap();
        out.drain().count();
        let held = |op: &UpdatingAggregateOperator| op.state_usage()[0];
        let full = held(&op);
        assert_eq!(full.rows, 1_000_000);
        // Half an hour later key 7 is written again: it lives an hour from then.
        now.store(1_800_000, Ordering::Relaxed);
        op.on_batch(0, batch(&[(7, Some(2))]), &mut out).unwrap();
        assert_eq!(rows(&mut out), ["- 7 1 1", "+ 7 2 3"]);
        assert_eq!(held(&op).rows, 1_000_000, "nothing expired yet");
        // Past the hour every other group expires, at the next watermark, without a row out.
        now.store(3_600_000, Ordering::Relaxed);
        op.on_watermark(1, &mut out).unwrap();
        assert_eq!(rows(&mut out), Vec::<String>::new());
        let left = held(&op);
        assert_eq!(left.rows, 1, "only key 7 is held");
        assert!(
            left.bytes * 100 < full.bytes,
            "the state's memory is given back: {} bytes of {}",
            left.bytes,
            full.bytes
        );
        // An expired key starts afresh: `+` without a `-` of its old row (Flink's TTL).
        op.on_batch(0, batch(&[(5, Some(10)), (7, Some(1))]), &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), ["+ 5 1 10", "- 7 2 3", "+ 7 3 4"]);
        // The snapshot holds the live groups and when they were written; a restored
        // operator expires them at the same time.
        let snapshot = op.snapshot(1).unwrap();
        let (now2, mut restored) = with_ttl(false);
        restored.restore(snapshot).unwrap();
        assert_eq!(held(&restored).rows, 2);
        now2.store(3_600_000 + 3_599_999, Ordering::Relaxed);
        restored.on_watermark(2, &mut out).unwrap();
        assert_eq!(held(&restored).rows, 2, "written at 3,600,000: not expired");
        // (Scans come at most every second with an hour's TTL.)
        now2.store(3_600_000 + 3_601_000, Ordering::Relaxed);
        restored.on_watermark(3, &mut out).unwrap();
        assert_eq!(held(&restored).rows, 0);
    }

    #[test]
    fn over_a_changelog_a_retraction_of_an_expired_group_is_ignored() {
        use std::sync::atomic::Ordering;
        let (now, mut op) = with_ttl(true);
        let mut out = OperatorContext::default();
        op.on_batch(
            0,
            changes(&[("+", 1, Some(10)), ("+", 2, Some(5))]),
            &mut out,
        )
        .unwrap();
        assert_eq!(rows(&mut out), ["+ 1 1 10", "+ 2 1 5"]);
        now.store(3_600_000, Ordering::Relaxed);
        op.on_batch(
            0,
            changes(&[("-", 1, Some(10)), ("+", 2, Some(1))]),
            &mut out,
        )
        .unwrap();
        assert_eq!(rows(&mut out), ["+ 2 1 1"], "both groups had expired");
    }
}
