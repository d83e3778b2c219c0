//! `CREATE [OR REPLACE] VIEW v [(columns)] AS query`: a named query, not materialized. Its
//! query is planned once, when the view is created (with the view's column names), and
//! DataFusion inlines that plan wherever the view is read, as Postgres and Flink expand a
//! view: a query over a view of a stream is a continuous query over the stream.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::common::Column;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder};
use datafusion::sql::sqlparser::ast::{CreateTableOptions, CreateView, Statement, visit_relations};

use super::ddl::{normalize_ident, relation_name};
use super::{CommandTag, Session, StatementResult};
use crate::catalog::{RelationDef, RelationKind};
use crate::error::{EngineError, EngineResult, plan_error};
use crate::plan::planner::relations_read;

impl Session {
    /// Creates (or with `OR REPLACE` replaces) the logical view `create` describes.
    /// `statement_sql` is the statement's own text (saved in the catalog); `sql` is the whole
    /// query string errors point into.
    pub(crate) async fn create_logical_view(
        &mut self,
        create: &CreateView,
        statement_sql: &str,
        sql: &str,
    ) -> EngineResult<StatementResult> {
        const TAG: &str = "CREATE VIEW";
        if create.or_alter || create.temporary {
            return Err(EngineError::Unsupported(
                "CREATE OR ALTER VIEW and temporary views".to_string(),
            ));
        }
        if !matches!(create.options, CreateTableOptions::None) {
            return Err(EngineError::Unsupported(
                "options on a view that is not materialized".to_string(),
            ));
        }
        let name = relation_name(&create.name)?;
        let replaced = match self.engine.catalog.get(&name) {
            Some(existing) if create.or_replace => {
                if existing.kind != RelationKind::LogicalView {
                    return Err(EngineError::WrongObjectType(format!(
                        "\"{name}\" is not a view"
                    )));
                }
                let dependents = self.engine.catalog.dependents(&name);
                if !dependents.is_empty() {
                    return Err(EngineError::DependentObjects(format!(
                        "cannot replace view {name} because {} depend on it (drop them first)",
                        dependents.join(", ")
                    )));
                }
                true
            }
            _ => {
                if let Some(exists) = self.already_exists(&name, create.if_not_exists, TAG) {
                    return exists;
                }
                false
            }
        };
        let stmt = Statement::Query(create.query.clone());
        let names = crate::sql::names::postgres_column_names(&stmt);
        let views_named = self.views_named(&stmt);
        if views_named.contains(&name) {
            return Err(plan_error(format!("view {name} cannot read itself")));
        }
        let plan = self.logical_plan(stmt, sql).await?;
        // The view's columns: the query's (with Postgres' names), renamed by a column list.
        let schema = plan.schema();
        let mut columns: Vec<String> = (0..schema.fields().len())
            .map(|i| {
                names
                    .as_ref()
                    .and_then(|n| n.get(i).cloned().flatten())
                    .unwrap_or_else(|| schema.field(i).name().clone())
            })
            .collect();
        if !create.columns.is_empty() {
            if create.columns.len() != columns.len() {
                return Err(plan_error(format!(
                    "view {name} names {} columns but its query has {}",
                    create.columns.len(),
                    columns.len()
                )));
            }
            columns = create
                .columns
                .iter()
                .map(|c| normalize_ident(&c.name))
                .collect();
        }
        for (i, column) in columns.iter().enumerate() {
            if columns[..i].contains(column) {
                return Err(plan_error(format!(
                    "view {name} has two columns named {column} (name them with AS)"
                )));
            }
        }
        let exprs: Vec<Expr> = columns
            .iter()
            .enumerate()
            .map(|(i, column)| {
                Expr::Column(Column::from(schema.qualified_field(i))).alias(column.as_str())
            })
            .collect();
        let plan = LogicalPlanBuilder::from(plan).project(exprs)?.build()?;
        let mut depends_on = relations_read(&plan);
        for view in views_named {
            if !depends_on.contains(&view) {
                depends_on.push(view);
            }
        }
        if replaced {
            self.engine.catalog.remove(&name)?;
        }
        self.engine.catalog.insert(RelationDef {
            name,
            kind: RelationKind::LogicalView,
            schema: Arc::new(plan.schema().as_arrow().clone()),
            watermark: None,
            connector: None,
            options: Default::default(),
            metadata: Vec::new(),
            primary_key: Vec::new(),
            upsert: false,
            ddl: statement_sql.to_string(),
            table: None,
            view: None,
            depends_on,
            query: Some(plan),
            system: false,
        })?;
        Ok(StatementResult::Command(CommandTag::new(TAG)))
    }

    /// The logical views `statement` names (which their plans inline, so that the plan alone
    /// does not tell): what a view, materialized view or sink over them depends on.
    pub(crate) fn views_named(&self, statement: &Statement) -> Vec<String> {
        let mut views = Vec::new();
        let _ = visit_relations(statement, |name| {
            if let Ok(name) = relation_name(name)
                && self
                    .engine
                    .catalog
                    .get(&name)
                    .is_some_and(|r| r.kind == RelationKind::LogicalView)
                && !views.contains(&name)
            {
                views.push(name);
            }
            ControlFlow::<()>::Continue(())
        });
        views
    }
}
