//! MATCH_RECOGNIZE in the FROM clause: the clause planned into a [`MatchRecognizeNode`].
//!
//! DataFusion hands every table factor to the registered [`RelationPlanner`]s first; this one
//! takes `TableFactor::MatchRecognize`, plans its input through DataFusion, and compiles the
//! clause into a [`MatchSpec`] (the spec types and the node live in `plan::match_recognize`):
//!
//! - `PATTERN` into a [`Pattern`] (with `PERMUTE` expanded; sqlparser spells a reluctant `B+?`
//!   as a `?` on a `+`);
//! - each `DEFINE` condition and `MEASURES` expression into a [`MatchExpr`]: every pattern
//!   navigation in it (`A.x`, `PREV(A.x, 2)`, `FIRST(A.x + A.y)`, `SUM(A.x)`, `CLASSIFIER()`,
//!   `MATCH_NUMBER()`) becomes a [`Channel`], a column of a small schema, and the rest of the
//!   expression is planned by DataFusion over those columns. The operator computes the
//!   channels for each candidate row or match and evaluates the expression on them.
//!
//! The parser layer (`crate::sql::match_syntax`) has turned `WITHIN`, `WITH TIMEOUTS` and
//! `SUBSET` into `__eddy_` entries of DEFINE; they are taken back out here.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::tree_node::{TransformedResult, TreeNode};
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::planner::{
    PlannedRelation, RelationPlanner, RelationPlannerContext, RelationPlanning,
};
use datafusion::logical_expr::{
    Expr, ExprSchemable, Extension, LogicalPlan, SortExpr, UserDefinedLogicalNode,
};
use datafusion::optimizer::analyzer::type_coercion::TypeCoercionRewriter;
use datafusion::sql::sqlparser::ast::{
    self, EmptyMatchesMode, FunctionArg, FunctionArgExpr, FunctionArguments, Ident,
    MatchRecognizePattern, MatchRecognizeSymbol, RepetitionQuantifier, RowsPerMatch, Spanned,
    TableFactor, VisitMut, VisitorMut,
};

use crate::operators::match_recognize::matcher::SkipMode;
use crate::operators::match_recognize::pattern::{Pattern, Program, VarId};
use crate::plan::match_recognize::{
    Channel, ChannelSource, EmptyMatches, MatchExpr, MatchOutput, MatchRecognizeNode, MatchSpec,
    Navigation, RowsMode,
};
use crate::sql::match_syntax::{
    DERIVED_INPUT, EMPTY_DEFINE_ENTRY, SUBSET_ENTRY, TIMEOUTS_ENTRY, WITHIN_ENTRY,
};
use crate::sql::window_tvf::{attach_span, error_at, interval_arg};

/// Prefix of the channel columns an expression is planned over.
const CHANNEL_PREFIX: &str = "__mr_";

/// Plans MATCH_RECOGNIZE (registered on every session).
#[derive(Debug, Default)]
pub struct MatchRecognizePlanner;

impl RelationPlanner for MatchRecognizePlanner {
    fn plan_relation(
        &self,
        relation: TableFactor,
        context: &mut dyn RelationPlannerContext,
    ) -> Result<RelationPlanning> {
        if !matches!(relation, TableFactor::MatchRecognize { .. }) {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        }
        let text = relation.to_string();
        let TableFactor::MatchRecognize {
            table,
            partition_by,
            order_by,
            measures,
            rows_per_match,
            after_match_skip,
            pattern,
            symbols,
            alias,
        } = relation
        else {
            return Err(DataFusionError::Internal("not MATCH_RECOGNIZE".to_string()));
        };
        let input = context.plan(derived_input(*table))?;
        let in_schema = Arc::clone(input.schema());
        let mut clause = Clause {
            context,
            input: in_schema.as_ref(),
            names: HashMap::new(),
            display: Vec::new(),
            subsets: Vec::new(),
        };

        let partition_by = partition_by
            .iter()
            .map(|e| clause.input_column(e, "PARTITION BY"))
            .collect::<Result<Vec<_>>>()?;
        let (time, order_by) = clause.order_by(&order_by)?;

        // DEFINE, with the entries the parser layer added.
        let mut within = None;
        let mut timeouts = None;
        let mut defines = Vec::new();
        let mut subset_defs = Vec::new();
        for symbol in symbols {
            match symbol.symbol.value.as_str() {
                WITHIN_ENTRY => {
                    let nanos = interval_arg(clause.context, &symbol.definition, "WITHIN")?;
                    if nanos <= 0 {
                        return Err(error_at(
                            "WITHIN must be a positive interval".to_string(),
                            symbol.definition.span(),
                        ));
                    }
                    within = Some(nanos);
                }
                TIMEOUTS_ENTRY => timeouts = Some(symbol.definition.span()),
                SUBSET_ENTRY => subset_defs.push(symbol.definition),
                EMPTY_DEFINE_ENTRY => {}
                _ => defines.push(symbol),
            }
        }

        let pattern = clause.pattern(&pattern)?;
        for def in subset_defs {
            clause.subset(&def)?;
        }
        let variables = clause.display.clone();
        let program = Arc::new(
            Program::compile(&pattern, variables.len())
                .map_err(|e| DataFusionError::Plan(e.to_string()))?,
        );

        let mut define_exprs: Vec<Option<MatchExpr>> = vec![None; variables.len()];
        for def in &defines {
            let key = clause.context.normalize_ident(def.symbol.clone());
            let Some(&var) = clause.names.get(&key) else {
                return Err(error_at(
                    format!(
                        "DEFINE names the pattern variable {}, which PATTERN does not use",
                        def.symbol
                    ),
                    def.symbol.span,
                ));
            };
            if define_exprs[var as usize].is_some() {
                return Err(error_at(
                    format!("the pattern variable {} is defined twice", def.symbol),
                    def.symbol.span,
                ));
            }
            let compiled = clause.compile(&def.definition, Role::Define)?;
            let t = compiled.expr.get_type(&compiled.schema)?;
            if !matches!(t, DataType::Boolean | DataType::Null) {
                return Err(error_at(
                    format!(
                        "the DEFINE condition of {} must be boolean, not {t}",
                        def.symbol
                    ),
                    def.definition.span(),
                ));
            }
            define_exprs[var as usize] = Some(compiled);
        }

        let rows = match rows_per_match {
            None | Some(RowsPerMatch::OneRow) => RowsMode::One,
            Some(RowsPerMatch::AllRows(mode)) => RowsMode::All(match mode {
                None | Some(EmptyMatchesMode::Show) => EmptyMatches::Show,
                Some(EmptyMatchesMode::Omit) => EmptyMatches::Omit,
                Some(EmptyMatchesMode::WithUnmatched) => EmptyMatches::WithUnmatched,
            }),
        };
        if let Some(span) = timeouts {
            if within.is_none() {
                return Err(error_at(
                    "WITH TIMEOUTS needs WITHIN: an attempt times out when its WITHIN interval \
                     has passed"
                        .to_string(),
                    span,
                ));
            }
            if rows == RowsMode::All(EmptyMatches::WithUnmatched) {
                return Err(DataFusionError::NotImplemented(
                    "ALL ROWS PER MATCH WITH UNMATCHED ROWS together with WITH TIMEOUTS"
                        .to_string(),
                ));
            }
        }
        let role = Role::Measure;
        let mut measure_exprs = Vec::new();
        for m in &measures {
            let compiled = clause.compile(&m.expr, role)?;
            measure_exprs.push((clause.context.normalize_ident(m.alias.clone()), compiled));
        }

        let skip = match after_match_skip {
            None | Some(ast::AfterMatchSkip::PastLastRow) => SkipMode::PastLastRow,
            Some(ast::AfterMatchSkip::ToNextRow) => SkipMode::ToNextRow,
            Some(ast::AfterMatchSkip::ToFirst(v)) => SkipMode::ToFirst {
                vars: clause.vars_of(&v)?,
                name: v.value.clone(),
            },
            Some(ast::AfterMatchSkip::ToLast(v)) => SkipMode::ToLast {
                vars: clause.vars_of(&v)?,
                name: v.value.clone(),
            },
        };

        // Output: partition columns, [ordering columns,] measures, [the other columns].
        let mut output = Vec::new();
        let mut fields: Vec<Field> = Vec::new();
        for &p in &partition_by {
            output.push(MatchOutput::Input(p));
        }
        if let RowsMode::All(_) = rows {
            let mut order_columns = vec![time];
            for s in &order_by {
                if let Expr::Column(c) = &s.expr
                    && let Ok(i) = in_schema.index_of_column(c)
                    && !order_columns.contains(&i)
                {
                    order_columns.push(i);
                }
            }
            for i in order_columns {
                if !partition_by.contains(&i) {
                    output.push(MatchOutput::Input(i));
                }
            }
        }
        for (k, _) in measure_exprs.iter().enumerate() {
            output.push(MatchOutput::Measure(k));
        }
        if let RowsMode::All(_) = rows {
            for i in 0..in_schema.fields().len() {
                if !output.contains(&MatchOutput::Input(i)) {
                    output.push(MatchOutput::Input(i));
                }
            }
        }
        for o in &output {
            match o {
                MatchOutput::Input(i) => {
                    let f = in_schema.field(*i);
                    fields.push(Field::new(f.name(), f.data_type().clone(), true));
                }
                MatchOutput::Measure(k) => {
                    let (name, m) = &measure_exprs[*k];
                    fields.push(Field::new(name, m.expr.get_type(&m.schema)?, true));
                }
            }
        }
        for (i, f) in fields.iter().enumerate() {
            if fields[..i].iter().any(|g| g.name() == f.name()) {
                return Err(DataFusionError::Plan(format!(
                    "MATCH_RECOGNIZE would output two columns named {}: with ALL ROWS PER MATCH \
                     every input column is in the output, so give the measure another name",
                    f.name()
                )));
            }
        }
        if fields.is_empty() {
            return Err(DataFusionError::Plan(
                "MATCH_RECOGNIZE with ONE ROW PER MATCH needs a PARTITION BY column or a \
                 measure"
                    .to_string(),
            ));
        }
        let qualifier = alias
            .as_ref()
            .map(|a| clause.context.normalize_ident(a.name.clone()));
        let schema = match &qualifier {
            Some(q) => DFSchema::try_from_qualified_schema(
                q.as_str(),
                &datafusion::arrow::datatypes::Schema::new(fields),
            )?,
            None => DFSchema::from_unqualified_fields(fields.into(), Default::default())?,
        };
        let spec = MatchSpec {
            partition_by,
            time,
            order_by,
            variables,
            subsets: clause.subsets.clone(),
            pattern,
            program,
            defines: define_exprs,
            measures: measure_exprs,
            rows,
            skip,
            within,
            timeouts: timeouts.is_some(),
            output,
            text,
        };
        let node = MatchRecognizeNode::new(input, Arc::new(spec), Arc::new(schema));
        let plan = LogicalPlan::Extension(Extension {
            node: Arc::new(node) as Arc<dyn UserDefinedLogicalNode>,
        });
        Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(
            plan, None,
        ))))
    }
}

/// Where an expression appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Define,
    Measure,
}

/// The clause being compiled: its variables and the planner context.
struct Clause<'a, 'c> {
    context: &'c mut dyn RelationPlannerContext,
    input: &'a DFSchema,
    /// Normalized variable or subset name to its variables.
    names: HashMap<String, VarId>,
    /// Variable names as first written in PATTERN.
    display: Vec<String>,
    subsets: Vec<(String, Vec<VarId>)>,
}

impl Clause<'_, '_> {
    fn input_column(&mut self, e: &ast::Expr, clause: &str) -> Result<usize> {
        let expr = self
            .context
            .sql_to_expr(e.clone(), self.input)
            .map_err(|err| attach_span(err, e.span()))?;
        match &expr {
            Expr::Column(c) => self.input.index_of_column(c),
            _ => Err(DataFusionError::NotImplemented(format!(
                "{clause} expressions other than columns in MATCH_RECOGNIZE (use a subquery \
                 that computes {e})"
            ))),
        }
    }

    fn order_by(&mut self, order_by: &[ast::OrderByExpr]) -> Result<(usize, Vec<SortExpr>)> {
        let Some(first) = order_by.first() else {
            return Err(DataFusionError::Plan(
                "MATCH_RECOGNIZE on a stream needs ORDER BY its event-time column".to_string(),
            ));
        };
        let time = self.input_column(&first.expr, "ORDER BY")?;
        if !matches!(
            self.input.field(time).data_type(),
            DataType::Timestamp(_, _)
        ) || first.options.asc == Some(false)
        {
            return Err(error_at(
                "the first ORDER BY key of MATCH_RECOGNIZE must be the event-time column, \
                 ascending"
                    .to_string(),
                first.expr.span(),
            ));
        }
        let mut rest = Vec::new();
        for o in &order_by[1..] {
            let expr = self
                .context
                .sql_to_expr(o.expr.clone(), self.input)
                .map_err(|err| attach_span(err, o.expr.span()))?;
            let asc = o.options.asc.unwrap_or(true);
            rest.push(SortExpr::new(
                expr,
                asc,
                o.options.nulls_first.unwrap_or(!asc),
            ));
        }
        Ok((time, rest))
    }

    fn variable(&mut self, ident: &Ident) -> VarId {
        let key = self.context.normalize_ident(ident.clone());
        if let Some(&v) = self.names.get(&key) {
            return v;
        }
        let v = self.display.len() as VarId;
        self.display.push(ident.value.clone());
        self.names.insert(key, v);
        v
    }

    fn pattern(&mut self, p: &MatchRecognizePattern) -> Result<Pattern> {
        let symbol = |this: &mut Self, s: &MatchRecognizeSymbol| match s {
            MatchRecognizeSymbol::Named(ident) => Pattern::Var(this.variable(ident)),
            MatchRecognizeSymbol::Start => Pattern::Start,
            MatchRecognizeSymbol::End => Pattern::End,
        };
        Ok(match p {
            MatchRecognizePattern::Symbol(s) => symbol(self, s),
            MatchRecognizePattern::Exclude(s) => Pattern::Exclude(Box::new(symbol(self, s))),
            MatchRecognizePattern::Permute(items) => {
                let items = items.iter().map(|s| symbol(self, s)).collect();
                Pattern::permute(items).map_err(|e| DataFusionError::Plan(e.to_string()))?
            }
            MatchRecognizePattern::Concat(ps) => {
                Pattern::Concat(ps.iter().map(|p| self.pattern(p)).collect::<Result<_>>()?)
            }
            MatchRecognizePattern::Alternation(ps) => {
                Pattern::Alt(ps.iter().map(|p| self.pattern(p)).collect::<Result<_>>()?)
            }
            MatchRecognizePattern::Group(p) => self.pattern(p)?,
            MatchRecognizePattern::Repetition(inner, q) => {
                // `X+?` arrives as `?` applied to `X+`: the reluctant form of `+`.
                if let (
                    MatchRecognizePattern::Repetition(inner2, q2),
                    RepetitionQuantifier::AtMostOne,
                ) = (inner.as_ref(), q)
                {
                    if let MatchRecognizePattern::Repetition(_, _) = inner2.as_ref() {
                        return Err(DataFusionError::Plan(format!(
                            "the pattern quantifier in {p} is not valid (at most one \
                             quantifier and one `?` for reluctance)"
                        )));
                    }
                    return Ok(repeat(self.pattern(inner2)?, q2, false));
                }
                // `B+*`: a quantifier on a quantifier (other than reluctance) needs a group.
                if let MatchRecognizePattern::Repetition(_, _) = inner.as_ref() {
                    return Err(DataFusionError::Plan(format!(
                        "the pattern quantifier in {p} is not valid: a quantified pattern takes \
                         another quantifier only inside parentheses, as in ({inner}){}",
                        &p.to_string()[inner.to_string().len()..]
                    )));
                }
                repeat(self.pattern(inner)?, q, true)
            }
        })
    }

    /// `S = (A, B)` from SUBSET.
    fn subset(&mut self, def: &ast::Expr) -> Result<()> {
        let bad = || {
            error_at(
                format!("SUBSET expects `name = (variable, ...)`, found {def}"),
                def.span(),
            )
        };
        let ast::Expr::BinaryOp {
            left,
            op: ast::BinaryOperator::Eq,
            right,
        } = def
        else {
            return Err(bad());
        };
        let ast::Expr::Identifier(name) = left.as_ref() else {
            return Err(bad());
        };
        let members: Vec<&ast::Expr> = match right.as_ref() {
            ast::Expr::Tuple(items) => items.iter().collect(),
            ast::Expr::Nested(item) => vec![item.as_ref()],
            _ => return Err(bad()),
        };
        let mut vars = Vec::new();
        for m in members {
            let ast::Expr::Identifier(ident) = m else {
                return Err(bad());
            };
            let key = self.context.normalize_ident(ident.clone());
            match self.names.get(&key) {
                Some(&v) if (v as usize) < self.display.len() => vars.push(v),
                _ => {
                    return Err(error_at(
                        format!("SUBSET {name} names {ident}, which is not a pattern variable"),
                        ident.span,
                    ));
                }
            }
        }
        let key = self.context.normalize_ident(name.clone());
        if self.names.contains_key(&key) || self.subsets.iter().any(|(n, _)| n == &key) {
            return Err(error_at(
                format!("SUBSET {name} reuses the name of a pattern variable or subset"),
                name.span,
            ));
        }
        self.subsets.push((key, vars));
        Ok(())
    }

    /// The variables a qualifier (a variable or a subset) stands for.
    fn vars_of(&mut self, ident: &Ident) -> Result<Vec<VarId>> {
        let key = self.context.normalize_ident(ident.clone());
        if let Some(&v) = self.names.get(&key) {
            return Ok(vec![v]);
        }
        if let Some((_, vars)) = self.subsets.iter().find(|(n, _)| n == &key) {
            return Ok(vars.clone());
        }
        Err(error_at(
            format!("{ident} is not a pattern variable or subset of this MATCH_RECOGNIZE"),
            ident.span,
        ))
    }

    /// Compiles a DEFINE condition or a measure.
    fn compile(&mut self, expr: &ast::Expr, role: Role) -> Result<MatchExpr> {
        let mut rewritten = expr.clone();
        let mut extractor = Extractor {
            clause: self,
            role,
            channels: Vec::new(),
            error: None,
        };
        let _ = rewritten.visit(&mut extractor);
        if let Some(e) = extractor.error {
            return Err(e);
        }
        let channels = extractor.channels;
        let mut fields = Vec::new();
        for (i, c) in channels.iter().enumerate() {
            let t = match &c.source {
                ChannelSource::Value { arg, .. } => arg.get_type(self.input)?,
                ChannelSource::Aggregate { aggregate, .. } => aggregate.get_type(self.input)?,
                ChannelSource::Classifier { .. } => DataType::Utf8,
                ChannelSource::MatchNumber => DataType::Int64,
                ChannelSource::MatchStatus => DataType::Utf8,
            };
            fields.push(Field::new(format!("{CHANNEL_PREFIX}{i}"), t, true));
        }
        let schema = DFSchema::from_unqualified_fields(fields.into(), Default::default())?;
        let planned = self
            .context
            .sql_to_expr(rewritten, &schema)
            .map_err(|e| attach_span(e, expr.span()))?;
        if planned.exists(|e| {
            Ok(matches!(
                e,
                Expr::AggregateFunction(_) | Expr::WindowFunction(_)
            ))
        })? {
            return Err(error_at(
                format!("{expr}: window functions cannot be used in MATCH_RECOGNIZE"),
                expr.span(),
            ));
        }
        Ok(MatchExpr {
            expr: planned,
            schema: Arc::new(schema),
            channels,
        })
    }
}

/// The parser layer's `__eddy_derived((SELECT ...)) [AS alias]` back as the derived table
/// `(SELECT ...) [AS alias]`; any other input as it is.
fn derived_input(table: TableFactor) -> TableFactor {
    if let TableFactor::Table {
        name,
        args: Some(args),
        alias,
        ..
    } = &table
        && name.to_string() == DERIVED_INPUT
        && let [FunctionArg::Unnamed(FunctionArgExpr::Expr(ast::Expr::Subquery(query)))] =
            args.args.as_slice()
    {
        return TableFactor::Derived {
            lateral: false,
            subquery: query.clone(),
            alias: alias.clone(),
            sample: None,
        };
    }
    table
}

fn repeat(inner: Pattern, q: &RepetitionQuantifier, greedy: bool) -> Pattern {
    let (min, max) = match *q {
        RepetitionQuantifier::ZeroOrMore => (0, None),
        RepetitionQuantifier::OneOrMore => (1, None),
        RepetitionQuantifier::AtMostOne => (0, Some(1)),
        RepetitionQuantifier::Exactly(n) => (n, Some(n)),
        RepetitionQuantifier::AtLeast(n) => (n, None),
        RepetitionQuantifier::AtMost(m) => (0, Some(m)),
        RepetitionQuantifier::Range(n, m) => (n, Some(m)),
    };
    Pattern::Repeat {
        inner: Box::new(inner),
        min,
        max,
        greedy,
    }
}

/// The functions of row pattern recognition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatternFunction {
    Prev,
    Next,
    First,
    Last,
    Classifier,
    MatchNumber,
    MatchStatus,
    Running,
    Final,
}

fn pattern_function(f: &ast::Function) -> Option<PatternFunction> {
    let [part] = f.name.0.as_slice() else {
        return None;
    };
    let ident = part.as_ident()?;
    if ident.quote_style.is_some() {
        return None;
    }
    Some(match ident.value.to_ascii_uppercase().as_str() {
        "PREV" => PatternFunction::Prev,
        "NEXT" => PatternFunction::Next,
        "FIRST" => PatternFunction::First,
        "LAST" => PatternFunction::Last,
        "CLASSIFIER" => PatternFunction::Classifier,
        "MATCH_NUMBER" => PatternFunction::MatchNumber,
        "MATCH_STATUS" => PatternFunction::MatchStatus,
        "RUNNING" => PatternFunction::Running,
        "FINAL" => PatternFunction::Final,
        _ => return None,
    })
}

fn function_args(f: &ast::Function) -> Vec<&FunctionArg> {
    match &f.args {
        FunctionArguments::List(list) => list.args.iter().collect(),
        _ => Vec::new(),
    }
}

fn function_name(f: &ast::Function) -> String {
    f.name.to_string().to_ascii_lowercase()
}

/// Replaces the pattern navigations of an expression by channel columns.
struct Extractor<'x, 'a, 'c> {
    clause: &'x mut Clause<'a, 'c>,
    role: Role,
    channels: Vec<Channel>,
    error: Option<DataFusionError>,
}

impl VisitorMut for Extractor<'_, '_, '_> {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &mut ast::Expr) -> ControlFlow<()> {
        match self.channel(expr, true) {
            Ok(Some(channel)) => {
                let name = format!("{CHANNEL_PREFIX}{}", self.channels.len());
                self.channels.push(channel);
                *expr = ast::Expr::Identifier(Ident::new(name));
                ControlFlow::Continue(())
            }
            Ok(None) => ControlFlow::Continue(()),
            Err(e) => {
                self.error = Some(e);
                ControlFlow::Break(())
            }
        }
    }
}

impl Extractor<'_, '_, '_> {
    fn aggregate_exists(&self, f: &ast::Function) -> bool {
        self.clause
            .context
            .context_provider()
            .get_aggregate_meta(&function_name(f))
            .is_some()
    }

    /// The channel an expression is, if it is a navigation.
    fn channel(&mut self, expr: &ast::Expr, running: bool) -> Result<Option<Channel>> {
        let value = |vars, arg| ChannelSource::Value {
            vars,
            nav: Navigation {
                from_first: false,
                logical: 0,
                physical: 0,
            },
            arg,
        };
        let source = match expr {
            ast::Expr::Identifier(ident) if ident.value.starts_with(CHANNEL_PREFIX) => {
                return Ok(None);
            }
            ast::Expr::Identifier(_) | ast::Expr::CompoundIdentifier(_) => {
                let (vars, arg) = self.row_expression(expr, "a column reference")?;
                value(vars, arg)
            }
            ast::Expr::Function(f) => match pattern_function(f) {
                Some(PatternFunction::Running | PatternFunction::Final) => {
                    let is_final = pattern_function(f) == Some(PatternFunction::Final);
                    if is_final && self.role == Role::Define {
                        return Err(error_at(
                            "FINAL cannot be used in DEFINE (conditions see the match so far)"
                                .to_string(),
                            expr.span(),
                        ));
                    }
                    let args = function_args(f);
                    let inner = match args.as_slice() {
                        [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))] => e,
                        _ => {
                            return Err(error_at(
                                format!("{expr}: RUNNING and FINAL apply to one navigation"),
                                expr.span(),
                            ));
                        }
                    };
                    let applies = matches!(inner, ast::Expr::Function(g)
                        if matches!(pattern_function(g), Some(PatternFunction::First
                            | PatternFunction::Last | PatternFunction::Prev
                            | PatternFunction::Next)) || self.aggregate_exists(g));
                    if !applies {
                        return Err(error_at(
                            format!(
                                "{expr}: RUNNING and FINAL apply to FIRST, LAST, PREV, NEXT or \
                                 an aggregate"
                            ),
                            expr.span(),
                        ));
                    }
                    return self.channel(inner, !is_final);
                }
                Some(PatternFunction::MatchNumber) => {
                    if self.role == Role::Define {
                        return Err(error_at(
                            "MATCH_NUMBER() cannot be used in DEFINE".to_string(),
                            expr.span(),
                        ));
                    }
                    if !function_args(f).is_empty() {
                        return Err(error_at(
                            "MATCH_NUMBER() takes no arguments".to_string(),
                            expr.span(),
                        ));
                    }
                    ChannelSource::MatchNumber
                }
                Some(PatternFunction::MatchStatus) => {
                    if self.role == Role::Define {
                        return Err(error_at(
                            "MATCH_STATUS() cannot be used in DEFINE (a condition is decided \
                             before the attempt's outcome is known)"
                                .to_string(),
                            expr.span(),
                        ));
                    }
                    if !function_args(f).is_empty() {
                        return Err(error_at(
                            "MATCH_STATUS() takes no arguments".to_string(),
                            expr.span(),
                        ));
                    }
                    ChannelSource::MatchStatus
                }
                Some(PatternFunction::Classifier) => {
                    let vars = match function_args(f).as_slice() {
                        [] => None,
                        [FunctionArg::Unnamed(FunctionArgExpr::Expr(ast::Expr::Identifier(v)))] => {
                            Some(self.clause.vars_of(v)?)
                        }
                        _ => {
                            return Err(error_at(
                                "CLASSIFIER takes no argument or a pattern variable".to_string(),
                                expr.span(),
                            ));
                        }
                    };
                    ChannelSource::Classifier { vars }
                }
                Some(nav) => self.navigation(expr, f, nav)?,
                None if self.aggregate_exists(f) && f.over.is_none() => self.aggregate(expr, f)?,
                None => return Ok(None),
            },
            _ => return Ok(None),
        };
        Ok(Some(Channel { source, running }))
    }

    /// `PREV/NEXT/FIRST/LAST(arg [, offset])`.
    fn navigation(
        &mut self,
        expr: &ast::Expr,
        f: &ast::Function,
        nav: PatternFunction,
    ) -> Result<ChannelSource> {
        let name = function_name(f).to_ascii_uppercase();
        let args = function_args(f);
        let (arg, offset) = match args.as_slice() {
            // PREV/NEXT default to offset 1, FIRST/LAST to 0.
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(a))] => (
                a,
                usize::from(matches!(nav, PatternFunction::Prev | PatternFunction::Next)),
            ),
            [
                FunctionArg::Unnamed(FunctionArgExpr::Expr(a)),
                FunctionArg::Unnamed(FunctionArgExpr::Expr(o)),
            ] => (a, self.offset(o, &name)?),
            _ => {
                return Err(error_at(
                    format!("{name} takes an expression and an optional offset"),
                    expr.span(),
                ));
            }
        };
        let physical_nav = matches!(nav, PatternFunction::Prev | PatternFunction::Next);
        // PREV(FIRST(A.x), 2): a logical navigation inside a physical one.
        if physical_nav
            && let ast::Expr::Function(inner) = arg
            && matches!(
                pattern_function(inner),
                Some(PatternFunction::First | PatternFunction::Last)
            )
        {
            let Some(Channel {
                source: ChannelSource::Value { vars, nav: n, arg },
                ..
            }) = self.channel(arg, true)?
            else {
                return Err(DataFusionError::Internal("navigation".to_string()));
            };
            let step = offset as i64;
            return Ok(ChannelSource::Value {
                vars,
                nav: Navigation {
                    physical: if nav == PatternFunction::Prev {
                        -step
                    } else {
                        step
                    },
                    ..n
                },
                arg,
            });
        }
        let (vars, arg) = self.row_expression(arg, &name)?;
        let step = offset as i64;
        let nav = match nav {
            PatternFunction::Prev => Navigation {
                from_first: false,
                logical: 0,
                physical: -step,
            },
            PatternFunction::Next => Navigation {
                from_first: false,
                logical: 0,
                physical: step,
            },
            PatternFunction::First => Navigation {
                from_first: true,
                logical: offset,
                physical: 0,
            },
            _ => Navigation {
                from_first: false,
                logical: offset,
                physical: 0,
            },
        };
        Ok(ChannelSource::Value { vars, nav, arg })
    }

    fn offset(&mut self, o: &ast::Expr, name: &str) -> Result<usize> {
        // A column reference fails to plan over the empty schema: that is a bad offset too.
        let planned = self
            .clause
            .context
            .sql_to_expr(o.clone(), &DFSchema::empty());
        let n = match planned {
            Ok(Expr::Literal(ScalarValue::Int64(Some(n)), _)) => n,
            Ok(Expr::Literal(ScalarValue::Int32(Some(n)), _)) => n as i64,
            _ => -1,
        };
        if n < 0 {
            return Err(error_at(
                format!("the offset of {name} must be a non-negative integer literal"),
                o.span(),
            ));
        }
        Ok(n as usize)
    }

    /// An aggregate over a variable's rows: `SUM(A.x)`, `COUNT(A.*)`, `COUNT(*)`.
    fn aggregate(&mut self, expr: &ast::Expr, f: &ast::Function) -> Result<ChannelSource> {
        let mut stripped = f.clone();
        let mut vars: Option<Option<Vec<VarId>>> = None;
        if let FunctionArguments::List(list) = &mut stripped.args {
            for arg in &mut list.args {
                let e = match arg {
                    FunctionArg::Unnamed(e) | FunctionArg::Named { arg: e, .. } => e,
                    FunctionArg::ExprNamed { arg: e, .. } => e,
                };
                match e {
                    FunctionArgExpr::QualifiedWildcard(name) => {
                        let ident = match name.0.as_slice() {
                            [part] => part.as_ident().cloned(),
                            _ => None,
                        };
                        let Some(ident) = ident else {
                            return Err(error_at(
                                format!("{expr}: expected variable.*"),
                                expr.span(),
                            ));
                        };
                        merge_vars(&mut vars, Some(self.clause.vars_of(&ident)?), expr)?;
                        *e = FunctionArgExpr::Wildcard;
                    }
                    FunctionArgExpr::Wildcard | FunctionArgExpr::WildcardWithOptions(_) => {
                        merge_vars(&mut vars, None, expr)?
                    }
                    FunctionArgExpr::Expr(a) => {
                        let (v, _) = self.row_expression(a, &function_name(f))?;
                        merge_vars(&mut vars, v, expr)?;
                        strip_qualifiers(a);
                    }
                }
            }
        }
        // FILTER (WHERE ...) and ORDER BY inside the call read the same rows as the arguments.
        let mut clauses: Vec<&mut ast::Expr> = Vec::new();
        if let Some(filter) = stripped.filter.as_deref_mut() {
            clauses.push(filter);
        }
        clauses.extend(stripped.within_group.iter_mut().map(|o| &mut o.expr));
        if let FunctionArguments::List(list) = &mut stripped.args {
            for clause in &mut list.clauses {
                if let ast::FunctionArgumentClause::OrderBy(order) = clause {
                    clauses.extend(order.iter_mut().map(|o| &mut o.expr));
                }
            }
        }
        for e in clauses {
            let (v, _) = self.row_expression(e, &function_name(f))?;
            merge_vars(&mut vars, v, expr)?;
            strip_qualifiers(e);
        }
        let aggregate = self
            .clause
            .context
            .sql_to_expr(ast::Expr::Function(stripped), self.clause.input)
            .map_err(|e| attach_span(e, expr.span()))?;
        // `count(*)` comes back as `count(1) AS "count(*)"`. The aggregate is lowered on its
        // own, not as part of a plan the analyzer coerces, so coerce its arguments here (`sum`
        // and `avg` take Int64/Float64, not an Int32 column).
        let aggregate = match aggregate {
            Expr::Alias(alias) => *alias.expr,
            other => other,
        };
        let aggregate = aggregate
            .rewrite(&mut TypeCoercionRewriter::new(self.clause.input))
            .data()
            .map_err(|e| attach_span(e, expr.span()))?;
        if !matches!(aggregate, Expr::AggregateFunction(_)) {
            return Err(error_at(format!("{expr} is not an aggregate"), expr.span()));
        }
        Ok(ChannelSource::Aggregate {
            vars: vars.flatten(),
            aggregate,
        })
    }

    /// An expression over one row's columns, all qualified by the same variable (or none):
    /// its variables and the expression planned over the input.
    fn row_expression(
        &mut self,
        e: &ast::Expr,
        context: &str,
    ) -> Result<(Option<Vec<VarId>>, Expr)> {
        let mut found: Vec<Ident> = Vec::new();
        let mut nested: Option<String> = None;
        let mut stripped = e.clone();
        let _ = ast::visit_expressions(&stripped, |x| {
            match x {
                ast::Expr::CompoundIdentifier(parts) if parts.len() == 2 => {
                    found.push(parts[0].clone());
                }
                ast::Expr::Function(g)
                    if pattern_function(g).is_some() || self.aggregate_exists(g) =>
                {
                    nested = Some(g.to_string());
                }
                _ => {}
            }
            ControlFlow::<()>::Continue(())
        });
        if let Some(n) = nested {
            return Err(error_at(
                format!("{n} cannot be used inside {context}"),
                e.span(),
            ));
        }
        let mut vars: Option<Option<Vec<VarId>>> = None;
        for q in &found {
            let v = self.clause.vars_of(q)?;
            merge_vars(&mut vars, Some(v), e)?;
        }
        strip_qualifiers(&mut stripped);
        let planned = self
            .clause
            .context
            .sql_to_expr(stripped, self.clause.input)
            .map_err(|err| attach_span(err, e.span()))?;
        Ok((vars.flatten(), planned))
    }
}

/// Records the variables of one more reference; all references of one navigation must
/// name the same variable (or none).
fn merge_vars(
    seen: &mut Option<Option<Vec<VarId>>>,
    vars: Option<Vec<VarId>>,
    expr: &ast::Expr,
) -> Result<()> {
    match seen {
        None => *seen = Some(vars),
        Some(prev) if *prev == vars => {}
        Some(_) => {
            return Err(error_at(
                format!(
                    "{expr} refers to more than one pattern variable (a navigation or aggregate \
                     reads the rows of one variable)"
                ),
                expr.span(),
            ));
        }
    }
    Ok(())
}

/// `A.price` becomes `price`.
fn strip_qualifiers(e: &mut ast::Expr) {
    let _ = ast::visit_expressions_mut(e, |x| {
        if let ast::Expr::CompoundIdentifier(parts) = x
            && parts.len() == 2
        {
            *x = ast::Expr::Identifier(parts[1].clone());
        }
        ControlFlow::<()>::Continue(())
    });
}
