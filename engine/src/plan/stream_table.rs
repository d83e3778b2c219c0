//! How a stream appears to DataFusion's planner: [`StreamTableProvider`].
//!
//! Each catalog relation is a [`StreamTableProvider`]: DataFusion sees its schema and plans
//! queries over it. A stream is never scanned — the streaming planner recognises these scans
//! and turns them into source operators; a materialized view is scanned by a batch query (its
//! current contents) and turned into a source that follows it by a continuous one. The SQL
//! front end's schema provider (`sql::provider`) hands them out.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, not_impl_err};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::catalog::RelationDef;

/// A source or push table, as DataFusion's planner sees it.
#[derive(Debug, Clone)]
pub struct StreamTableProvider {
    relation: Arc<RelationDef>,
}

impl StreamTableProvider {
    pub fn new(relation: Arc<RelationDef>) -> Self {
        Self { relation }
    }

    pub fn relation(&self) -> &Arc<RelationDef> {
        &self.relation
    }
}

#[async_trait]
impl TableProvider for StreamTableProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.relation.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// A materialized view's (or a system table's) current contents; a stream cannot be read
    /// as a batch.
    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        if self.relation.system
            && let Some(table) = &self.relation.table
        {
            // A system table's rows so far.
            return Ok(MemorySourceConfig::try_new_exec(
                &[table.batches_from(0)],
                Arc::clone(table.schema()),
                projection.cloned(),
            )?);
        }
        let Some(view) = &self.relation.view else {
            return not_impl_err!("reading stream \"{}\" in a batch query", self.relation.name);
        };
        let batches = view
            .snapshot()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            Arc::clone(view.schema()),
            projection.cloned(),
        )?)
    }
}
