//! The relations the Postgres catalogs describe, read from Eddy's live catalog at each query.
//!
//! Sources and push tables are ordinary tables (`relkind = 'r'`), materialized views are
//! materialized views (`'m'`), and the system tables `eddy_jobs` and `eddy_checkpoints` are
//! views (`'v'`). Sinks are not relations (nothing can read them) and appear in none of the
//! catalogs; `SHOW SINKS` lists them. Every relation lives in the `public` schema of the `eddy`
//! database and is owned by the `eddy` role.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;

use crate::catalog::{Catalog, RelationKind};
use crate::checkpoints::CHECKPOINTS_TABLE;
use crate::error::EngineResult;
use crate::jobs::{JOBS_TABLE, JobManager};

/// `pg_namespace.oid` of `pg_catalog`, as in every Postgres cluster (the static catalog rows,
/// e.g. `pg_type.typnamespace`, refer to it).
pub const PG_CATALOG_NAMESPACE: i32 = 11;
/// `pg_namespace.oid` of `public`, as in Postgres.
pub const PUBLIC_NAMESPACE: i32 = 2200;
/// `pg_namespace.oid` of `information_schema`.
pub const INFORMATION_SCHEMA_NAMESPACE: i32 = 13000;
/// `pg_roles.oid` of the `eddy` role: the bootstrap superuser's OID in Postgres.
pub const EDDY_ROLE: i32 = 10;
/// `pg_database.oid` of the `eddy` database.
pub const EDDY_DATABASE: i32 = 16384;
/// OIDs of the two system views.
const JOBS_OID: i32 = 16385;
const CHECKPOINTS_OID: i32 = 16386;
/// A user relation's OID is this plus its creation number.
const FIRST_RELATION_OID: i64 = 16400;

/// One relation as the catalogs show it.
#[derive(Debug, Clone)]
pub struct CatalogRelation {
    pub oid: i32,
    pub name: String,
    /// `pg_class.relkind`: `r`, `m` or `v`.
    pub relkind: &'static str,
    pub schema: SchemaRef,
    /// The `CREATE` statement (views and materialized views).
    pub definition: Option<String>,
    /// True for a push table (`INSERT` and `COPY FROM` add rows).
    pub insertable: bool,
}

impl CatalogRelation {
    /// `information_schema.tables.table_type`.
    pub fn table_type(&self) -> &'static str {
        match self.relkind {
            "m" => "MATERIALIZED VIEW",
            "v" => "VIEW",
            _ => "BASE TABLE",
        }
    }
}

/// Where the catalogs read relations from.
#[derive(Debug, Clone)]
pub struct RelationSource {
    pub catalog: Arc<Catalog>,
    pub jobs: Arc<JobManager>,
}

impl RelationSource {
    /// Every relation, in name order.
    pub fn relations(&self) -> EngineResult<Vec<CatalogRelation>> {
        let mut relations: Vec<CatalogRelation> = self
            .catalog
            .list_numbered()
            .into_iter()
            .filter_map(|(number, r)| {
                let relkind = match r.kind {
                    RelationKind::Source | RelationKind::Table => "r",
                    RelationKind::View => "m",
                    RelationKind::LogicalView => "v",
                    RelationKind::Sink => return None,
                };
                let oid = i32::try_from(FIRST_RELATION_OID + number as i64).ok()?;
                Some(CatalogRelation {
                    oid,
                    name: r.name.clone(),
                    relkind,
                    schema: Arc::clone(&r.schema),
                    definition: (relkind == "m" || relkind == "v").then(|| view_query(&r.ddl)),
                    insertable: r.kind == RelationKind::Table,
                })
            })
            .collect();
        for (oid, name, schema) in [
            (JOBS_OID, JOBS_TABLE, self.jobs.report()?.schema()),
            (
                CHECKPOINTS_OID,
                CHECKPOINTS_TABLE,
                self.jobs.checkpoints_report()?.schema(),
            ),
        ] {
            relations.push(CatalogRelation {
                oid,
                name: name.to_string(),
                relkind: "v",
                schema,
                definition: Some(format!("SHOW {}", name.trim_start_matches("eddy_"))),
                insertable: false,
            });
        }
        relations.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(relations)
    }
}

/// The query of a `CREATE [MATERIALIZED] VIEW` statement, as `pg_get_viewdef` shows it.
fn view_query(ddl: &str) -> String {
    use datafusion::sql::sqlparser::ast::Statement;
    let parsed = crate::sql::parser::parse_sql(ddl)
        .ok()
        .and_then(|mut s| s.pop());
    match parsed.map(|s| s.statement) {
        Some(crate::sql::parser::EddyStatement::Sql(s)) => match *s {
            Statement::CreateView(v) => format!("{};", v.query),
            _ => ddl.to_string(),
        },
        _ => ddl.to_string(),
    }
}
