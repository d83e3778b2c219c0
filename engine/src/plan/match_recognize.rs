//! MATCH_RECOGNIZE as a logical plan node: the compiled clause ([`MatchSpec`]) and the
//! DataFusion extension node that carries it ([`MatchRecognizeNode`]).
//!
//! The SQL front end (`sql::match_recognize`) compiles the clause: `PATTERN` into a
//! [`Pattern`], each `DEFINE` condition and `MEASURES` expression into a [`MatchExpr`], an
//! expression planned by DataFusion over [`Channel`]s (each a pattern navigation such as
//! `A.x`, `PREV(A.x, 2)`, `SUM(A.x)` or `CLASSIFIER()`). The streaming planner turns the node
//! into the MATCH_RECOGNIZE operator, which computes the channels for each candidate row or
//! match and evaluates the expressions on them.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use datafusion::common::{Column, DFSchema, DFSchemaRef, DataFusionError, Result};
use datafusion::logical_expr::{
    Expr, Extension, LogicalPlan, SortExpr, UserDefinedLogicalNodeCore,
};

use crate::operators::match_recognize::matcher::SkipMode;
use crate::operators::match_recognize::pattern::{Pattern, Program, VarId};

/// How many rows a match produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowsMode {
    One,
    All(EmptyMatches),
}

/// `ALL ROWS PER MATCH` options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyMatches {
    Show,
    Omit,
    WithUnmatched,
}

/// Which row a value channel reads: a logical offset among the rows of the match labelled
/// with the channel's variables (`FIRST`/`LAST`, default `LAST(.., 0)`), then a physical
/// offset in the partition (`PREV` negative, `NEXT` positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Navigation {
    pub from_first: bool,
    pub logical: usize,
    pub physical: i64,
}

/// What a channel holds.
#[derive(Debug, Clone)]
pub enum ChannelSource {
    /// `arg` (an expression over the input's columns) at the navigated row. `vars` None is
    /// the universal variable (every row of the match).
    Value {
        vars: Option<Vec<VarId>>,
        nav: Navigation,
        arg: Expr,
    },
    /// An aggregate (over the input's columns) of the rows labelled with `vars`.
    Aggregate {
        vars: Option<Vec<VarId>>,
        aggregate: Expr,
    },
    /// `CLASSIFIER()`: the variable of the current row (or the last row of `vars`).
    Classifier {
        vars: Option<Vec<VarId>>,
    },
    MatchNumber,
    /// `MATCH_STATUS()`: `'MATCHED'`, or `'TIMED_OUT'` for an attempt that timed out.
    MatchStatus,
}

/// One input of a [`MatchExpr`].
#[derive(Debug, Clone)]
pub struct Channel {
    pub source: ChannelSource,
    /// RUNNING (the match up to the current row) or FINAL (the whole match).
    pub running: bool,
}

impl Channel {
    /// Whether the channel reads only the current row and rows around it (`PREV`, `NEXT`),
    /// when the current row is labelled `var` (so DEFINE of `var` can be evaluated for whole
    /// batches).
    fn is_row_local(&self, var: VarId) -> bool {
        match &self.source {
            ChannelSource::Value { vars, nav, .. } => {
                vars.as_ref().is_none_or(|vs| vs.contains(&var))
                    && !nav.from_first
                    && nav.logical == 0
            }
            _ => false,
        }
    }
}

/// A DEFINE condition or a measure: `expr` over `schema`, whose columns are the channels.
#[derive(Debug, Clone)]
pub struct MatchExpr {
    pub expr: Expr,
    pub schema: DFSchemaRef,
    pub channels: Vec<Channel>,
}

impl MatchExpr {
    /// Whether, as the condition of `var`, it depends only on the current row and rows around
    /// it in the partition (not on how earlier rows were labelled).
    pub fn is_row_local(&self, var: VarId) -> bool {
        self.channels.iter().all(|c| c.is_row_local(var))
    }

    /// The farthest a navigation looks back (`PREV`) and ahead (`NEXT`) of its row.
    pub fn reach(&self) -> (usize, usize) {
        self.channels
            .iter()
            .fold((0, 0), |(back, ahead), c| match &c.source {
                ChannelSource::Value { nav, .. } => (
                    back.max((-nav.physical).max(0) as usize),
                    ahead.max(nav.physical.max(0) as usize),
                ),
                _ => (back, ahead),
            })
    }
}

/// Where an output column comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOutput {
    /// A column of the input row (a partition column: of the match's first row).
    Input(usize),
    Measure(usize),
}

/// The compiled clause.
#[derive(Debug, Clone)]
pub struct MatchSpec {
    pub partition_by: Vec<usize>,
    /// The event-time column (the leading ORDER BY key).
    pub time: usize,
    /// Further ORDER BY keys, over the input.
    pub order_by: Vec<SortExpr>,
    pub variables: Vec<String>,
    pub subsets: Vec<(String, Vec<VarId>)>,
    pub pattern: Pattern,
    pub program: Arc<Program>,
    /// Per variable; None: the variable matches every row.
    pub defines: Vec<Option<MatchExpr>>,
    pub measures: Vec<(String, MatchExpr)>,
    pub rows: RowsMode,
    pub skip: SkipMode,
    /// WITHIN, in nanoseconds.
    pub within: Option<i64>,
    /// `WITH TIMEOUTS`: an attempt still open when its WITHIN interval has passed, and that
    /// found no match, is reported too (`MATCH_STATUS()` = `'TIMED_OUT'`).
    pub timeouts: bool,
    pub output: Vec<MatchOutput>,
    /// The clause as written (for EXPLAIN, equality and hashing).
    pub text: String,
}

impl MatchSpec {
    /// The input columns the clause reads, in order.
    pub fn input_columns(&self, input: &DFSchema) -> Vec<usize> {
        let mut columns: Vec<usize> = self.partition_by.clone();
        columns.push(self.time);
        columns.extend(self.output.iter().filter_map(|o| match o {
            MatchOutput::Input(i) => Some(*i),
            MatchOutput::Measure(_) => None,
        }));
        let mut exprs: Vec<&Expr> = self.order_by.iter().map(|o| &o.expr).collect();
        for m in self
            .defines
            .iter()
            .flatten()
            .chain(self.measures.iter().map(|(_, m)| m))
        {
            for c in &m.channels {
                match &c.source {
                    ChannelSource::Value { arg, .. } => exprs.push(arg),
                    ChannelSource::Aggregate { aggregate, .. } => exprs.push(aggregate),
                    ChannelSource::Classifier { .. }
                    | ChannelSource::MatchNumber
                    | ChannelSource::MatchStatus => {}
                }
            }
        }
        for e in exprs {
            for c in e.column_refs() {
                if let Ok(i) = input.index_of_column(c) {
                    columns.push(i);
                }
            }
        }
        columns.sort_unstable();
        columns.dedup();
        columns
    }

    /// Whether the matcher's state can grow without bound (an unbounded quantifier and no
    /// WITHIN).
    pub fn unbounded_state(&self) -> bool {
        self.within.is_none() && self.pattern.is_unbounded()
    }
}

/// MATCH_RECOGNIZE applied to its input (a logical plan node).
#[derive(Debug, Clone)]
pub struct MatchRecognizeNode {
    pub input: LogicalPlan,
    pub spec: Arc<MatchSpec>,
    schema: DFSchemaRef,
}

impl PartialEq for MatchRecognizeNode {
    fn eq(&self, other: &Self) -> bool {
        self.input == other.input && self.spec.text == other.spec.text
    }
}

impl Eq for MatchRecognizeNode {}

impl std::hash::Hash for MatchRecognizeNode {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.input.hash(state);
        self.spec.text.hash(state);
    }
}

impl PartialOrd for MatchRecognizeNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.spec.text.partial_cmp(&other.spec.text)
    }
}

impl MatchRecognizeNode {
    /// The clause `spec` applied to `input`; `schema` is the node's output schema.
    pub fn new(input: LogicalPlan, spec: Arc<MatchSpec>, schema: DFSchemaRef) -> Self {
        Self {
            input,
            spec,
            schema,
        }
    }

    pub fn schema_ref(&self) -> &DFSchemaRef {
        &self.schema
    }
}

impl UserDefinedLogicalNodeCore for MatchRecognizeNode {
    fn name(&self) -> &str {
        "MatchRecognize"
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
        // A filter changes which rows the pattern sees: nothing is pushed below.
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "MatchRecognize: pattern ({})",
            self.spec.pattern.display(&self.spec.variables)
        )
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        let input = inputs.pop().ok_or_else(|| {
            DataFusionError::Internal("MatchRecognize needs one input".to_string())
        })?;
        // The optimizer may have narrowed the input to the columns the clause reads
        // (`necessary_children_exprs`): the spec's column indices follow their columns.
        let old = self.input.schema();
        let new = input.schema();
        let spec = if old == new {
            Arc::clone(&self.spec)
        } else {
            let remap = |i: usize| -> Result<usize> {
                new.index_of_column(&Column::from(old.qualified_field(i)))
            };
            let mut spec = self.spec.as_ref().clone();
            spec.partition_by = spec
                .partition_by
                .iter()
                .map(|i| remap(*i))
                .collect::<Result<_>>()?;
            spec.time = remap(spec.time)?;
            spec.output = spec
                .output
                .iter()
                .map(|o| match o {
                    MatchOutput::Input(i) => remap(*i).map(MatchOutput::Input),
                    MatchOutput::Measure(k) => Ok(MatchOutput::Measure(*k)),
                })
                .collect::<Result<_>>()?;
            Arc::new(spec)
        };
        Ok(Self {
            input,
            spec,
            schema: Arc::clone(&self.schema),
        })
    }

    fn necessary_children_exprs(&self, _output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        // Every output column is computed whether or not it is read; of the input, only the
        // columns the clause reads are needed.
        Some(vec![self.spec.input_columns(self.input.schema())])
    }
}

/// Finds a [`MatchRecognizeNode`] in a logical plan node.
pub fn as_match_recognize(plan: &LogicalPlan) -> Option<&MatchRecognizeNode> {
    match plan {
        LogicalPlan::Extension(Extension { node }) => {
            node.as_any().downcast_ref::<MatchRecognizeNode>()
        }
        _ => None,
    }
}
