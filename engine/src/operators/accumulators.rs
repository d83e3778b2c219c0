//! Grouped aggregation state built from DataFusion's accumulators.
//!
//! [`AggregateExprs`] holds a query's group keys and aggregate functions as DataFusion
//! physical expressions; [`Groups`] is one set of groups (a window slice, or a window being
//! assembled) with a `GroupsAccumulator` per aggregate (an `Accumulator` behind DataFusion's
//! adapter where an aggregate has no grouped form). Groups can be turned into their
//! intermediate state ([`GroupsState`]) and merged, which is how slices combine into windows:
//! the same partial/final split DataFusion uses between partitions. No aggregate is
//! re-implemented here. Checkpoints store a `GroupsState` as a batch and rebuild groups from
//! it the same way ([`GroupsState::to_batch`], [`Groups::snapshot`]).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::GroupsAccumulatorAdapter;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use datafusion::physical_plan::aggregates::{PhysicalGroupBy, evaluate_group_by};

use crate::error::{EngineError, EngineResult};
use crate::state::corrupt;

/// The aggregate functions and group keys of one aggregation, shared by all its groups.
pub struct AggregateExprs {
    pub aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// Per aggregate: its argument expressions (then its ORDER BY expressions).
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    /// Per aggregate: its `FILTER (WHERE ...)`.
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// The group keys (without window columns); with GROUPING SETS, one key list per set.
    group_by: PhysicalGroupBy,
    /// The schema of the interned keys (a constant placeholder when there are none).
    key_schema: SchemaRef,
    no_keys: bool,
}

impl AggregateExprs {
    pub fn try_new(
        aggregates: Vec<Arc<AggregateFunctionExpr>>,
        filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
        group_by: PhysicalGroupBy,
        input_schema: &Schema,
    ) -> EngineResult<Self> {
        let arguments = aggregates
            .iter()
            .map(|a| {
                let mut args = a.expressions();
                args.extend(a.order_bys().iter().map(|o| Arc::clone(&o.expr)));
                args
            })
            .collect();
        let key_schema = group_by.group_schema(input_schema)?;
        let no_keys = key_schema.fields().is_empty();
        let key_schema = if no_keys {
            Arc::new(Schema::new(vec![Field::new(
                "__all",
                DataType::Boolean,
                false,
            )]))
        } else {
            key_schema
        };
        Ok(Self {
            aggregates,
            arguments,
            filters,
            group_by,
            key_schema,
            no_keys,
        })
    }

    /// True when the query groups by window columns only.
    pub fn has_keys(&self) -> bool {
        !self.no_keys
    }

    /// The number of key columns groups evaluate to (group keys, then `__grouping_id`; none
    /// when grouping by window columns only).
    pub fn num_key_columns(&self) -> usize {
        if self.no_keys {
            0
        } else {
            self.key_schema.fields().len()
        }
    }

    /// True with GROUPING SETS, ROLLUP or CUBE.
    pub fn has_grouping_sets(&self) -> bool {
        self.group_by.has_grouping_set()
    }

    /// The fields of a [`GroupsState`] written as a batch: the key columns, then each
    /// aggregate's state columns (`AggregateFunctionExpr::state_fields`).
    pub fn state_fields(&self) -> EngineResult<Vec<FieldRef>> {
        let mut fields: Vec<FieldRef> = self.key_schema.fields().iter().cloned().collect();
        for a in &self.aggregates {
            fields.extend(a.state_fields()?);
        }
        Ok(fields)
    }

    /// An empty interner of this aggregation's group keys.
    pub fn new_group_values(&self) -> EngineResult<Box<dyn GroupValues>> {
        Ok(new_group_values(
            Arc::clone(&self.key_schema),
            &GroupOrdering::None,
        )?)
    }

    /// Each aggregate's argument columns and `FILTER (WHERE ...)` mask over `batch`.
    pub fn evaluate_arguments(&self, batch: &RecordBatch) -> EngineResult<AggregateArguments> {
        let rows = batch.num_rows();
        let arguments = self
            .arguments
            .iter()
            .map(|args| {
                args.iter()
                    .map(|e| Ok(e.evaluate(batch)?.into_array(rows)?))
                    .collect::<EngineResult<Vec<ArrayRef>>>()
            })
            .collect::<EngineResult<Vec<_>>>()?;
        let filters = self
            .filters
            .iter()
            .map(|f| {
                f.as_ref()
                    .map(|f| -> EngineResult<BooleanArray> {
                        let mask = f.evaluate(batch)?.into_array(rows)?;
                        mask.as_any()
                            .downcast_ref::<BooleanArray>()
                            .cloned()
                            .ok_or_else(|| {
                                EngineError::Internal("FILTER is not boolean".to_string())
                            })
                    })
                    .transpose()
            })
            .collect::<EngineResult<Vec<_>>>()?;
        Ok(AggregateArguments { arguments, filters })
    }

    /// The key columns to intern for `batch`: one list per grouping set (a constant column
    /// when the aggregation has no keys).
    pub fn evaluate_keys(&self, batch: &RecordBatch) -> EngineResult<Vec<Vec<ArrayRef>>> {
        let rows = batch.num_rows();
        Ok(evaluate_group_by(&self.group_by, batch)?
            .into_iter()
            .map(|keys| {
                if self.no_keys {
                    vec![Arc::new(BooleanArray::from(vec![true; rows])) as ArrayRef]
                } else {
                    keys
                }
            })
            .collect())
    }
}

/// The inputs of an aggregation's functions over one batch.
pub struct AggregateArguments {
    /// Per aggregate: its argument columns (then its ORDER BY columns).
    pub arguments: Vec<Vec<ArrayRef>>,
    /// Per aggregate: the rows its `FILTER (WHERE ...)` keeps.
    pub filters: Vec<Option<BooleanArray>>,
}

/// The intermediate state of a set of groups: its keys and each aggregate's state columns.
#[derive(Debug, Clone)]
pub struct GroupsState {
    keys: Vec<ArrayRef>,
    states: Vec<Vec<ArrayRef>>,
}

impl GroupsState {
    pub fn num_groups(&self) -> usize {
        self.keys.first().map_or(0, |k| k.len())
    }

    pub fn size(&self) -> usize {
        self.keys
            .iter()
            .chain(self.states.iter().flatten())
            .map(|a| a.get_array_memory_size())
            .sum()
    }

    /// The state as one batch: key columns, then each aggregate's state columns (named
    /// `key{i}` and `agg{i}_{field}`; types as the accumulators produced them).
    pub fn to_batch(&self, exprs: &AggregateExprs) -> EngineResult<RecordBatch> {
        let expected = exprs.state_fields()?;
        let columns: Vec<ArrayRef> = self
            .keys
            .iter()
            .chain(self.states.iter().flatten())
            .cloned()
            .collect();
        if columns.len() != expected.len() {
            return Err(EngineError::Internal(format!(
                "aggregate state of {} columns, expected {}",
                columns.len(),
                expected.len()
            )));
        }
        let fields: Vec<Field> = columns
            .iter()
            .zip(&expected)
            .map(|(c, f)| Field::new(f.name(), c.data_type().clone(), true))
            .collect();
        Ok(RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(self.num_groups())),
        )?)
    }

    /// A state from a batch [`GroupsState::to_batch`] wrote for the same aggregation; a batch
    /// whose columns do not match the aggregation's keys and states is refused (the
    /// accumulators would otherwise misread it).
    pub fn from_batch(exprs: &AggregateExprs, batch: &RecordBatch) -> EngineResult<Self> {
        let expected = exprs.state_fields()?;
        if batch.num_columns() != expected.len() {
            return Err(corrupt(format!(
                "aggregate state of {} columns, expected {}",
                batch.num_columns(),
                expected.len()
            )));
        }
        for (column, field) in batch.columns().iter().zip(&expected) {
            if !column.data_type().equals_datatype(field.data_type()) {
                return Err(corrupt(format!(
                    "aggregate state column {} is {}, expected {}",
                    field.name(),
                    column.data_type(),
                    field.data_type()
                )));
            }
        }
        let mut columns = batch.columns().iter().cloned();
        let keys: Vec<ArrayRef> = columns
            .by_ref()
            .take(exprs.key_schema.fields().len())
            .collect();
        let mut states = Vec::with_capacity(exprs.aggregates.len());
        for a in &exprs.aggregates {
            let n = a.state_fields()?.len();
            states.push(columns.by_ref().take(n).collect());
        }
        Ok(Self { keys, states })
    }
}

/// Live groups: keys interned to group indices, and one accumulator per aggregate.
pub struct Groups {
    values: Box<dyn GroupValues>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
}

impl Groups {
    pub fn try_new(exprs: &AggregateExprs) -> EngineResult<Self> {
        let values = exprs.new_group_values()?;
        let accumulators = exprs
            .aggregates
            .iter()
            .map(|a| -> EngineResult<Box<dyn GroupsAccumulator>> {
                if a.groups_accumulator_supported() {
                    Ok(a.create_groups_accumulator()?)
                } else {
                    let a = Arc::clone(a);
                    Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
                        a.create_accumulator()
                    })))
                }
            })
            .collect::<EngineResult<_>>()?;
        Ok(Self {
            values,
            accumulators,
        })
    }

    pub fn num_groups(&self) -> usize {
        self.values.len()
    }

    /// Approximate bytes held.
    pub fn size(&self) -> usize {
        self.values.size() + self.accumulators.iter().map(|a| a.size()).sum::<usize>()
    }

    /// Aggregates the rows of `batch` (raw input rows).
    pub fn update(&mut self, exprs: &AggregateExprs, batch: &RecordBatch) -> EngineResult<()> {
        let AggregateArguments { arguments, filters } = exprs.evaluate_arguments(batch)?;
        let mut groups = Vec::with_capacity(batch.num_rows());
        for keys in exprs.evaluate_keys(batch)? {
            groups.clear();
            self.values.intern(&keys, &mut groups)?;
            let total = self.values.len();
            for ((acc, args), filter) in self.accumulators.iter_mut().zip(&arguments).zip(&filters)
            {
                acc.update_batch(args, &groups, filter.as_ref(), total)?;
            }
        }
        Ok(())
    }

    /// Adds the intermediate state of other groups.
    pub fn merge(&mut self, state: &GroupsState) -> EngineResult<()> {
        let mut groups = Vec::with_capacity(state.num_groups());
        self.values.intern(&state.keys, &mut groups)?;
        let total = self.values.len();
        for (acc, columns) in self.accumulators.iter_mut().zip(&state.states) {
            acc.merge_batch(columns, &groups, total)?;
        }
        Ok(())
    }

    /// The intermediate state of every group, for a checkpoint, leaving the groups as they
    /// were: the accumulators are rebuilt from that state (as a restore rebuilds them), so
    /// the groups keep their order and later results are those of an uninterrupted run.
    pub fn snapshot(&mut self, exprs: &AggregateExprs) -> EngineResult<GroupsState> {
        let groups = std::mem::replace(self, Groups::try_new(exprs)?);
        let state = groups.into_state()?;
        self.merge(&state)?;
        Ok(state)
    }

    /// Groups holding `state` (a restore).
    pub fn from_state(exprs: &AggregateExprs, state: &GroupsState) -> EngineResult<Self> {
        let mut groups = Groups::try_new(exprs)?;
        groups.merge(state)?;
        Ok(groups)
    }

    /// The intermediate state of every group, consuming them.
    pub fn into_state(mut self) -> EngineResult<GroupsState> {
        let keys = self.values.emit(EmitTo::All)?;
        let states = self
            .accumulators
            .iter_mut()
            .map(|a| a.state(EmitTo::All))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GroupsState { keys, states })
    }

    /// The final values: the key columns (none when grouping by window columns only) and one
    /// column per aggregate.
    pub fn evaluate(
        mut self,
        exprs: &AggregateExprs,
    ) -> EngineResult<(Vec<ArrayRef>, Vec<ArrayRef>)> {
        let keys = self.values.emit(EmitTo::All)?;
        let values = self
            .accumulators
            .iter_mut()
            .map(|a| a.evaluate(EmitTo::All))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((if exprs.no_keys { Vec::new() } else { keys }, values))
    }
}
