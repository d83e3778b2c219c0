//! How the catalog appears to DataFusion's planner.
//!
//! [`CatalogSchemaProvider`] serves the shared catalog to every session as DataFusion's
//! `public` schema, so a `CREATE SOURCE` is visible everywhere at once. Each catalog relation
//! is a [`StreamTableProvider`] (in `plan::stream_table`), which the streaming planner
//! recognises as a source, but a logical view (`CREATE VIEW`), which is a DataFusion
//! [`ViewTable`] of its planned query, inlined wherever it is read.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::view::ViewTable;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::DataFusionError;
use datafusion::datasource::MemTable;

use crate::catalog::{Catalog, RelationDef};
use crate::checkpoints::CHECKPOINTS_TABLE;
use crate::dead_letters::{DEAD_LETTERS_TABLE, DeadLetters};
use crate::jobs::{JOBS_TABLE, JobManager};
use crate::plan::stream_table::StreamTableProvider;

/// The catalog's relations as DataFusion's `public` schema, and the system tables
/// `eddy_jobs`, `eddy_checkpoints` and `eddy_dead_letters`.
#[derive(Debug)]
pub struct CatalogSchemaProvider {
    catalog: Arc<Catalog>,
    jobs: Arc<JobManager>,
    dead_letters: Arc<DeadLetters>,
}

impl CatalogSchemaProvider {
    pub fn new(
        catalog: Arc<Catalog>,
        jobs: Arc<JobManager>,
        dead_letters: Arc<DeadLetters>,
    ) -> Self {
        Self {
            catalog,
            jobs,
            dead_letters,
        }
    }
}

#[async_trait]
impl SchemaProvider for CatalogSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.catalog.names();
        names.push(JOBS_TABLE.to_string());
        names.push(CHECKPOINTS_TABLE.to_string());
        names.push(DEAD_LETTERS_TABLE.to_string());
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
        if name == DEAD_LETTERS_TABLE {
            let relation = self
                .dead_letters
                .relation()
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            return Ok(Some(relation_provider(relation)));
        }
        Ok(self.catalog.readable(name).map(relation_provider))
    }

    fn table_exist(&self, name: &str) -> bool {
        name == JOBS_TABLE
            || name == CHECKPOINTS_TABLE
            || name == DEAD_LETTERS_TABLE
            || self.catalog.readable(name).is_some()
    }
}

/// How a readable relation appears to DataFusion: a logical view as a [`ViewTable`] of its
/// plan (which DataFusion inlines where it is scanned), anything else as a stream.
pub fn relation_provider(relation: Arc<RelationDef>) -> Arc<dyn TableProvider> {
    match &relation.query {
        Some(plan) => Arc::new(ViewTable::new(plan.clone(), Some(relation.ddl.clone()))),
        None => Arc::new(StreamTableProvider::new(relation)),
    }
}
