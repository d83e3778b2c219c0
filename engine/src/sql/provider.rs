//! How streams appear to DataFusion's planner.
//!
//! Each catalog relation is a [`StreamTableProvider`]: DataFusion sees its schema and plans
//! queries over it. A stream is never scanned — the streaming planner recognises these scans
//! and turns them into source operators; a materialized view is scanned by a batch query (its
//! current contents) and turned into a source that follows it by a continuous one. [`CatalogSchemaProvider`] serves the shared catalog to every
//! session, so a `CREATE SOURCE` is visible everywhere at once.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, not_impl_err};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{MemTable, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::catalog::{Catalog, RelationDef};
use crate::checkpoints::CHECKPOINTS_TABLE;
use crate::jobs::{JOBS_TABLE, JobManager};

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

    /// A materialized view's current contents; a stream cannot be read as a batch.
    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
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

/// The catalog's relations as DataFusion's `public` schema, and the `eddy_jobs` system table.
#[derive(Debug)]
pub struct CatalogSchemaProvider {
    catalog: Arc<Catalog>,
    jobs: Arc<JobManager>,
}

impl CatalogSchemaProvider {
    pub fn new(catalog: Arc<Catalog>, jobs: Arc<JobManager>) -> Self {
        Self { catalog, jobs }
    }
}

#[async_trait]
impl SchemaProvider for CatalogSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.catalog.names();
        names.push(JOBS_TABLE.to_string());
        names.push(CHECKPOINTS_TABLE.to_string());
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        if name == JOBS_TABLE || name == CHECKPOINTS_TABLE {
            // The jobs (or their checkpoints) as they are when the query is planned.
            let report = if name == JOBS_TABLE {
                self.jobs.report()
            } else {
                self.jobs.checkpoints_report()
            }
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
            return Ok(Some(Arc::new(MemTable::try_new(
                report.schema(),
                vec![vec![report]],
            )?)));
        }
        Ok(self
            .catalog
            .readable(name)
            .map(|r| Arc::new(StreamTableProvider::new(r)) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        name == JOBS_TABLE || name == CHECKPOINTS_TABLE || self.catalog.readable(name).is_some()
    }
}
