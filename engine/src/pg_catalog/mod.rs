//! Postgres system catalogs for Eddy: what psql's meta-commands, JDBC's `DatabaseMetaData`,
//! SQLAlchemy's inspector and GUI tools query.
//!
//! `datafusion-pg-catalog` provides Postgres's own static catalog rows (`pg_type`, `pg_am`,
//! ...), most catalog functions (`format_type`, `has_*_privilege`, `pg_get_expr`, ...), the
//! `regclass`/`regtype` casts and the rewrites of client queries. Eddy adds what only it knows:
//! the tables describing its relations ([`schema`], [`information_schema`]), its functions as
//! `pg_proc` rows and the functions naming its role ([`functions`]). Catalog tables are
//! in-memory tables built at each query, so catalog queries run as ordinary batch queries.

pub mod columns;
pub mod functions;
pub mod information_schema;
pub mod relations;
pub mod rewrite;
pub mod schema;
pub mod settings;
pub mod types;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Int32Type};

use datafusion::catalog::CatalogProvider;
use datafusion::error::Result;
use datafusion::execution::context::SessionContext;
use datafusion_pg_catalog::pg_catalog::{self as pgc, PgCatalogStaticTables};

pub use relations::RelationSource;
pub use settings::SharedVars;

/// Postgres's static catalog rows, read once per process (they are the same for everyone).
fn static_tables() -> Result<Arc<PgCatalogStaticTables>> {
    static TABLES: OnceLock<Arc<PgCatalogStaticTables>> = OnceLock::new();
    if let Some(tables) = TABLES.get() {
        return Ok(Arc::clone(tables));
    }
    let tables = Arc::new(PgCatalogStaticTables::try_new()?);
    Ok(Arc::clone(TABLES.get_or_init(|| tables)))
}

/// Type OIDs by name: `pg_type.typname` of Postgres's static rows, and the SQL names
/// (`bigint`, `timestamp with time zone`, ...) of the types Eddy's columns have.
fn type_names() -> Result<Arc<HashMap<String, i32>>> {
    static NAMES: OnceLock<Arc<HashMap<String, i32>>> = OnceLock::new();
    if let Some(names) = NAMES.get() {
        return Ok(Arc::clone(names));
    }
    let mut names = HashMap::new();
    for batch in static_tables()?.pg_type.data() {
        let (Some(oids), Some(typnames)) =
            (batch.column_by_name("oid"), batch.column_by_name("typname"))
        else {
            continue;
        };
        let oids = datafusion::arrow::compute::cast(oids, &DataType::Int32)?;
        let typnames = datafusion::arrow::compute::cast(typnames, &DataType::Utf8)?;
        for (oid, name) in oids
            .as_primitive::<Int32Type>()
            .iter()
            .zip(typnames.as_string::<i32>().iter())
        {
            if let (Some(oid), Some(name)) = (oid, name) {
                names.insert(name.to_string(), oid);
            }
        }
    }
    for ty in [
        types::BOOL,
        types::BYTEA,
        types::INT8,
        types::INT2,
        types::INT4,
        types::TEXT,
        types::FLOAT4,
        types::FLOAT8,
        types::DATE,
        types::TIME,
        types::TIMESTAMP,
        types::TIMESTAMPTZ,
        types::INTERVAL,
        types::NUMERIC,
    ] {
        names.insert(ty.name.to_string(), ty.oid as i32);
    }
    Ok(Arc::clone(NAMES.get_or_init(|| Arc::new(names))))
}

/// Adds `pg_catalog` and `information_schema` to `catalog` and the catalog functions to
/// `ctx`. Call after the session's own functions are registered: `pg_proc` lists whatever the
/// context has when a query runs.
pub fn register(
    ctx: &SessionContext,
    catalog: &dyn CatalogProvider,
    relations: RelationSource,
    vars: SharedVars,
) -> Result<()> {
    let functions = functions::FunctionSource::of_context(ctx);
    catalog.register_schema(
        "pg_catalog",
        Arc::new(schema::PgCatalogSchema::new(
            relations.clone(),
            functions.clone(),
            vars,
            static_tables()?,
        )?),
    )?;
    catalog.register_schema(
        "information_schema",
        Arc::new(information_schema::InformationSchema::new(
            relations.clone(),
        )),
    )?;
    // The functions of `datafusion-pg-catalog` that fit Eddy as they are.
    ctx.register_udf(pgc::create_current_schemas_udf());
    ctx.register_udf(pgc::format_type::create_format_type_udf());
    ctx.register_udf(pgc::pg_get_expr_udf::create_pg_get_expr_udf());
    for name in [
        "has_table_privilege",
        "has_schema_privilege",
        "has_database_privilege",
        "has_any_column_privilege",
        "has_column_privilege",
        "has_function_privilege",
    ] {
        ctx.register_udf(pgc::has_privilege_udf::create_has_privilege_udf(name));
    }
    ctx.register_udf(pgc::create_pg_get_partkeydef_udf());
    ctx.register_udf(pgc::create_pg_relation_is_publishable_udf());
    ctx.register_udf(pgc::create_pg_get_statisticsobjdef_columns_udf());
    ctx.register_udf(pgc::create_pg_backend_pid_udf());
    ctx.register_udf(pgc::create_pg_relation_size_udf());
    ctx.register_udf(pgc::create_pg_total_relation_size_udf());
    ctx.register_udf(pgc::create_pg_stat_get_numscans());
    ctx.register_udf(pgc::create_pg_get_constraintdef());
    ctx.register_udf(pgc::create_pg_get_partition_ancestors_udf());
    ctx.register_udf(pgc::quote_ident_udf::create_quote_ident_udf());
    ctx.register_udf(pgc::quote_ident_udf::create_parse_ident_udf());
    ctx.register_udf(pgc::array_bounds_udf::create_array_upper_udf());
    ctx.register_udf(pgc::array_bounds_udf::create_array_lower_udf());
    ctx.register_udtf(
        "pg_get_keywords",
        Arc::clone(&static_tables()?.pg_get_keywords) as _,
    );
    pgc::generate_series_arg_coercion::CoerceIntArgsToBigInt::widen(ctx);
    // Eddy's own, registered last so that they win over any of the same name.
    functions::register(ctx, relations, functions, type_names()?);
    Ok(())
}
