//! The window table function as a logical plan node: [`WindowTvfNode`].
//!
//! `TUMBLE`, `HOP`, `CUMULATE` and `SESSION` in the FROM clause are planned (by
//! `sql::window_tvf`) into this DataFusion extension node: the input's columns plus
//! `window_start`, `window_end` and `window_time`. The streaming planner turns the node into
//! window operators.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::common::{Column, DFSchema, DFSchemaRef, DataFusionError, Result};
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, UserDefinedLogicalNodeCore};

use crate::operators::window::WindowKind;

/// The names of the columns a window table function adds.
pub const WINDOW_START: &str = "window_start";
pub const WINDOW_END: &str = "window_end";
pub const WINDOW_TIME: &str = "window_time";

/// A window table function applied to its input (a logical plan node).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WindowTvfNode {
    pub input: LogicalPlan,
    pub kind: WindowKind,
    /// The time attribute column of the input (`DESCRIPTOR(ts)`).
    pub time: Column,
    /// SESSION's `PARTITION BY` columns.
    pub keys: Vec<Column>,
    /// The job's `allowed.lateness` in nanoseconds (0: none), set on the logical plan by
    /// [`with_allowed_lateness`]: a window aggregate over these windows keeps each window
    /// that long after it fires.
    pub allowed_lateness: i64,
    schema: DFSchemaRef,
}

impl WindowTvfNode {
    pub fn try_new(
        input: LogicalPlan,
        kind: WindowKind,
        time: Column,
        keys: Vec<Column>,
    ) -> Result<Self> {
        let in_schema = input.schema();
        let (_, field) = in_schema.qualified_field_from_column(&time)?;
        let window_type = window_column_type(field.data_type()).ok_or_else(|| {
            DataFusionError::Plan(format!(
                "the time column \"{}\" of {} must be a TIMESTAMP, not {}",
                time.name,
                kind.name(),
                field.data_type()
            ))
        })?;
        for key in &keys {
            in_schema.qualified_field_from_column(key)?;
        }
        let window_fields = DFSchema::from_unqualified_fields(
            vec![
                Field::new(WINDOW_START, window_type.clone(), false),
                Field::new(WINDOW_END, window_type.clone(), false),
                Field::new(WINDOW_TIME, window_type, false),
            ]
            .into(),
            Default::default(),
        )?;
        let mut schema = in_schema.as_ref().clone();
        schema.merge(&window_fields);
        if schema.fields().len() != in_schema.fields().len() + 3 {
            return Err(DataFusionError::Plan(format!(
                "the input of {} already has a column named window_start, window_end or \
                 window_time; rename it first",
                kind.name()
            )));
        }
        Ok(Self {
            input,
            kind,
            time,
            keys,
            allowed_lateness: 0,
            schema: Arc::new(schema),
        })
    }

    /// The node's output schema.
    pub fn schema_ref(&self) -> &DFSchemaRef {
        &self.schema
    }

    /// Index of the time column in the input schema.
    pub fn time_index(&self) -> Result<usize> {
        self.input.schema().index_of_column(&self.time)
    }

    /// The resolution of the time column in nanoseconds (a window fires at end minus this);
    /// 0 for sessions, which fire at their end.
    pub fn time_lag(&self) -> i64 {
        if matches!(self.kind, WindowKind::Session { .. }) {
            return 0;
        }
        match self
            .time_index()
            .map(|i| self.input.schema().field(i).data_type().clone())
        {
            Ok(DataType::Timestamp(unit, _)) => crate::operators::window::unit_nanos(unit),
            _ => 0,
        }
    }

    /// Index of `window_start` in the node's schema (`window_end` and `window_time` follow).
    pub fn window_start_index(&self) -> usize {
        self.input.schema().fields().len()
    }
}

/// The type of `window_start`/`window_end`/`window_time` for a time column of type `t`
/// (seconds become milliseconds so that `window_time = window_end - 1 ms` fits).
pub fn window_column_type(t: &DataType) -> Option<DataType> {
    match t {
        DataType::Timestamp(TimeUnit::Second, tz) => {
            Some(DataType::Timestamp(TimeUnit::Millisecond, tz.clone()))
        }
        DataType::Timestamp(unit, tz) => Some(DataType::Timestamp(*unit, tz.clone())),
        _ => None,
    }
}

impl PartialOrd for WindowTvfNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        // Plans are compared only to order equal-cost alternatives; the window is enough.
        self.kind.partial_cmp(&other.kind)
    }
}

impl UserDefinedLogicalNodeCore for WindowTvfNode {
    fn name(&self) -> &str {
        "WindowTvf"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn prevent_predicate_push_down_columns(&self) -> std::collections::HashSet<String> {
        // Filters on the input's columns may run before the window; on window columns not.
        [WINDOW_START, WINDOW_END, WINDOW_TIME]
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "WindowTvf: {} on {}", self.kind, self.time)?;
        if !self.keys.is_empty() {
            let keys: Vec<String> = self.keys.iter().map(|k| k.to_string()).collect();
            write!(f, " partition by {}", keys.join(", "))?;
        }
        if self.allowed_lateness > 0 {
            write!(
                f,
                " allowed lateness {}",
                crate::operators::window::format_duration(self.allowed_lateness)
            )?;
        }
        Ok(())
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        let input = inputs
            .pop()
            .ok_or_else(|| DataFusionError::Internal("WindowTvf needs one input".to_string()))?;
        let mut node = Self::try_new(input, self.kind, self.time.clone(), self.keys.clone())?;
        node.allowed_lateness = self.allowed_lateness;
        Ok(node)
    }
}

/// `plan` with every window table function's `allowed_lateness` set to `nanos` (a view's or
/// sink's `allowed.lateness`). The nodes keep their schemas, so the rest of the plan stands.
pub fn with_allowed_lateness(plan: LogicalPlan, nanos: i64) -> Result<LogicalPlan> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    plan.transform_up(|node| {
        let Some(tvf) = as_window_tvf(&node) else {
            return Ok(Transformed::no(node));
        };
        let mut tvf = tvf.clone();
        tvf.allowed_lateness = nanos;
        Ok(Transformed::yes(LogicalPlan::Extension(Extension {
            node: Arc::new(tvf),
        })))
    })
    .map(|t| t.data)
}

/// Finds a [`WindowTvfNode`] in a logical plan node.
pub fn as_window_tvf(plan: &LogicalPlan) -> Option<&WindowTvfNode> {
    match plan {
        LogicalPlan::Extension(Extension { node }) => node.as_any().downcast_ref::<WindowTvfNode>(),
        _ => None,
    }
}
