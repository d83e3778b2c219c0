//! The catalog: every source and table the user declared, shared by all sessions.
//!
//! A [`RelationDef`] holds what a `CREATE SOURCE` / `CREATE TABLE` resolved to: the Arrow
//! schema, the watermark definition, the connector options, and the statement text itself.
//! Persistence is the server's business: after every change the engine hands the list of DDL
//! statements to a [`CatalogStore`], and on start the server replays them.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use datafusion::arrow::datatypes::SchemaRef;

use crate::connector::ConnectorOptions;
use crate::error::{EngineError, EngineResult};
use crate::table::TableLog;
use crate::view::ViewStore;

/// Whether a relation is read from a connector or fed by `INSERT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RelationKind {
    /// `CREATE SOURCE`, or a Flink-style `CREATE TABLE ... WITH (connector = ...)`.
    Source,
    /// `CREATE TABLE` without a connector: an append-only stream fed by INSERT and COPY.
    Table,
    /// `CREATE MATERIALIZED VIEW`: the results a background job maintains.
    View,
    /// `CREATE SINK`: a background job exporting a query's rows (not readable).
    Sink,
    /// `CREATE VIEW`: a named query, not materialized: inlined wherever it is read.
    LogicalView,
}

/// `WATERMARK FOR column AS expr`, resolved against the relation's schema.
#[derive(Debug, Clone)]
pub struct WatermarkSpec {
    /// The event-time column (a timestamp column of the schema).
    pub column: String,
    /// The watermark expression as SQL text, e.g. `date_time - INTERVAL '4' SECOND`.
    pub expr_sql: String,
}

/// A declared source or table.
#[derive(Debug)]
pub struct RelationDef {
    pub name: String,
    pub kind: RelationKind,
    pub schema: SchemaRef,
    pub watermark: Option<WatermarkSpec>,
    /// The connector name for sources; `None` for push tables.
    pub connector: Option<String>,
    pub options: ConnectorOptions,
    /// A source's columns filled from message metadata (`METADATA FROM`).
    pub metadata: Vec<crate::connector::MetadataColumn>,
    /// `PRIMARY KEY (...)`: the columns (indices into `schema`) that identify a row of an
    /// upsert source. Empty for every other relation.
    pub primary_key: Vec<usize>,
    /// True for a source whose messages are upserts and deletes by `primary_key`
    /// ([`crate::connector::SourceConnector::upserts`]): queries read it as a changelog.
    pub upsert: bool,
    /// The `CREATE` statement that made this relation, replayed on restart.
    pub ddl: String,
    /// The rows of a push table.
    pub table: Option<Arc<TableLog>>,
    /// The rows of a materialized view.
    pub view: Option<Arc<ViewStore>>,
    /// The relations a view reads (which cannot be dropped while it exists).
    pub depends_on: Vec<String>,
    /// A logical view's query, planned (not optimized) when it was created, with the view's
    /// column names: DataFusion inlines it into every query that reads the view.
    pub query: Option<datafusion::logical_expr::LogicalPlan>,
    /// A system table the engine writes (`eddy_dead_letters`), never in the catalog: a push
    /// table that a batch `SELECT` reads as a snapshot of its rows so far and a continuous
    /// query follows, as it does a materialized view. Users cannot write it.
    pub system: bool,
}

impl RelationDef {
    /// True for a materialized view whose rows are a changelog (an updating result).
    pub fn is_updating_view(&self) -> bool {
        self.view
            .as_ref()
            .is_some_and(|v| v.mode() == crate::view::ViewMode::Updating)
    }
}

/// Where the server keeps the catalog between restarts.
pub trait CatalogStore: Send + Sync {
    /// Saves the DDL of every relation, in creation order.
    fn save(&self, ddl: &[String]) -> std::io::Result<()>;
}

/// The relations of one server, by (normalised) name.
#[derive(Default)]
pub struct Catalog {
    relations: RwLock<BTreeMap<String, (u64, Arc<RelationDef>)>>,
    store: Option<Arc<dyn CatalogStore>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}

impl Catalog {
    pub fn new(store: Option<Arc<dyn CatalogStore>>) -> Self {
        Self {
            relations: RwLock::default(),
            store,
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<RelationDef>> {
        self.read().get(name).map(|(_, r)| Arc::clone(r))
    }

    /// A relation queries may read: every kind but a sink.
    pub fn readable(&self, name: &str) -> Option<Arc<RelationDef>> {
        self.get(name).filter(|r| r.kind != RelationKind::Sink)
    }

    /// The views that read relation `name`.
    pub fn dependents(&self, name: &str) -> Vec<String> {
        self.read()
            .values()
            .filter(|(_, r)| r.depends_on.iter().any(|d| d == name))
            .map(|(_, r)| r.name.clone())
            .collect()
    }

    /// All relations, in name order.
    pub fn list(&self) -> Vec<Arc<RelationDef>> {
        self.read().values().map(|(_, r)| Arc::clone(r)).collect()
    }

    /// All relations with their creation number (unique while the server runs; what the
    /// Postgres catalogs derive a relation's OID from), in name order.
    pub fn list_numbered(&self) -> Vec<(u64, Arc<RelationDef>)> {
        self.read()
            .values()
            .map(|(order, r)| (*order, Arc::clone(r)))
            .collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// Adds a relation; fails if the name is taken.
    pub fn insert(&self, relation: RelationDef) -> EngineResult<()> {
        {
            let mut relations = self.write();
            if relations.contains_key(&relation.name) {
                return Err(EngineError::DuplicateRelation(relation.name));
            }
            let order = relations.values().map(|(o, _)| *o + 1).max().unwrap_or(0);
            relations.insert(relation.name.clone(), (order, Arc::new(relation)));
        }
        self.persist()
    }

    /// Removes a relation, returning it if it existed.
    pub fn remove(&self, name: &str) -> EngineResult<Option<Arc<RelationDef>>> {
        let removed = self.write().remove(name).map(|(_, r)| r);
        if removed.is_some() {
            self.persist()?;
        }
        Ok(removed)
    }

    fn persist(&self) -> EngineResult<()> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let mut entries: Vec<(u64, String)> = self
            .read()
            .values()
            .map(|(order, r)| (*order, r.ddl.clone()))
            .collect();
        entries.sort();
        let ddl: Vec<String> = entries.into_iter().map(|(_, d)| d).collect();
        store.save(&ddl)?;
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, (u64, Arc<RelationDef>)>> {
        self.relations.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, (u64, Arc<RelationDef>)>> {
        self.relations.write().unwrap_or_else(|e| e.into_inner())
    }
}
