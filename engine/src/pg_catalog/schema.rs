//! The `pg_catalog` schema: tables built from Eddy's live catalog at each query (relations,
//! columns, namespaces, the database, the role, functions, settings), and every other table
//! from `datafusion-pg-catalog` (Postgres's own rows for `pg_type`, `pg_am`, ...; empty
//! `pg_index`, `pg_constraint`, `pg_inherits`).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion_pg_catalog::pg_catalog::PgCatalogSchemaProvider;
use datafusion_pg_catalog::pg_catalog::catalog_info::CatalogInfo;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::oid_field::kind;

use super::columns::Columns;
use super::functions::FunctionSource;
use super::relations::{
    CatalogRelation, EDDY_DATABASE, EDDY_ROLE, INFORMATION_SCHEMA_NAMESPACE, PG_CATALOG_NAMESPACE,
    PUBLIC_NAMESPACE, RelationSource,
};
use super::settings::SharedVars;
use super::types::{pg_type, type_modifier};
use crate::session::{CATALOG_NAME, SCHEMA_NAME};

/// Tables this module builds; every other name goes to `datafusion-pg-catalog`.
const OWN_TABLES: &[&str] = &[
    "pg_class",
    "pg_attribute",
    "pg_namespace",
    "pg_database",
    "pg_roles",
    "pg_user",
    "pg_proc",
    "pg_settings",
    "pg_matviews",
    "pg_views",
    "pg_description",
    "pg_auth_members",
];

/// The `pg_catalog` schema of one session.
#[derive(Debug)]
pub struct PgCatalogSchema {
    relations: RelationSource,
    functions: FunctionSource,
    vars: SharedVars,
    fallback: PgCatalogSchemaProvider<EddyCatalogInfo, EmptyContextProvider>,
}

impl PgCatalogSchema {
    pub fn new(
        relations: RelationSource,
        functions: FunctionSource,
        vars: SharedVars,
        static_tables: Arc<datafusion_pg_catalog::pg_catalog::PgCatalogStaticTables>,
    ) -> Result<Self> {
        let fallback = PgCatalogSchemaProvider::try_new(
            EddyCatalogInfo(relations.clone()),
            static_tables,
            EmptyContextProvider,
        )?;
        Ok(Self {
            relations,
            functions,
            vars,
            fallback,
        })
    }

    fn relations(&self) -> Result<Vec<CatalogRelation>> {
        self.relations
            .relations()
            .map_err(|e| DataFusionError::External(Box::new(e)))
    }

    /// A table of the fallback's schema without its rows (Postgres's own rows would describe
    /// objects Eddy does not have).
    async fn emptied(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(table) = self.fallback.table(name).await? else {
            return Ok(None);
        };
        Ok(Some(Arc::new(MemTable::try_new(
            table.schema(),
            vec![vec![]],
        )?)))
    }

    fn pg_class(&self) -> Result<Arc<dyn TableProvider>> {
        let rels = self.relations()?;
        let n = rels.len();
        Columns::new(n)
            .own_oid(rels.iter().map(|r| r.oid).collect())
            .text("relname", rels.iter().map(|r| r.name.clone()).collect())
            .oid(
                "relnamespace",
                kind::REGNAMESPACE,
                vec![PUBLIC_NAMESPACE; n],
            )
            .oid("reltype", kind::REGTYPE, vec![0; n])
            .oid("reloftype", kind::REGTYPE, vec![0; n])
            .oid("relowner", kind::OID, vec![EDDY_ROLE; n])
            .oid("relam", kind::OID, vec![0; n])
            .const_int32("relfilenode", 0)
            .const_int32("reltablespace", 0)
            .const_int32("relpages", 0)
            .float32("reltuples", vec![-1.0; n])
            .const_int32("relallvisible", 0)
            .oid("reltoastrelid", kind::REGCLASS, vec![0; n])
            .const_bool("relhasindex", false)
            .const_bool("relisshared", false)
            .const_text("relpersistence", "p")
            .text(
                "relkind",
                rels.iter().map(|r| r.relkind.to_string()).collect(),
            )
            .int16(
                "relnatts",
                rels.iter()
                    .map(|r| r.schema.fields().len() as i16)
                    .collect(),
            )
            .const_int16("relchecks", 0)
            .const_bool("relhasrules", false)
            .const_bool("relhastriggers", false)
            .const_bool("relhassubclass", false)
            .const_bool("relrowsecurity", false)
            .const_bool("relforcerowsecurity", false)
            .const_bool("relispopulated", true)
            .const_text("relreplident", "d")
            .const_bool("relispartition", false)
            .oid("relrewrite", kind::OID, vec![0; n])
            .const_int32("relfrozenxid", 0)
            .const_int32("relminmxid", 0)
            .null_text_array("relacl")
            .null_text_array("reloptions")
            .nulls("relpartbound", DataType::Utf8)
            .into_table()
    }

    fn pg_attribute(&self) -> Result<Arc<dyn TableProvider>> {
        let rels = self.relations()?;
        let columns: Vec<(&CatalogRelation, usize)> = rels
            .iter()
            .flat_map(|r| (0..r.schema.fields().len()).map(move |i| (r, i)))
            .collect();
        let field = |(r, i): &(&CatalogRelation, usize)| Arc::clone(&r.schema.fields()[*i]);
        Columns::new(columns.len())
            .oid(
                "attrelid",
                kind::REGCLASS,
                columns.iter().map(|(r, _)| r.oid).collect(),
            )
            .text(
                "attname",
                columns.iter().map(|c| field(c).name().clone()).collect(),
            )
            .oid(
                "atttypid",
                kind::REGTYPE,
                columns
                    .iter()
                    .map(|c| pg_type(field(c).data_type()).oid as i32)
                    .collect(),
            )
            .const_int32("attstattarget", -1)
            .int16(
                "attlen",
                columns
                    .iter()
                    .map(|c| pg_type(field(c).data_type()).len)
                    .collect(),
            )
            .int16(
                "attnum",
                columns.iter().map(|(_, i)| *i as i16 + 1).collect(),
            )
            .const_int32("attndims", 0)
            .const_int32("attcacheoff", -1)
            .int32(
                "atttypmod",
                columns
                    .iter()
                    .map(|c| type_modifier(field(c).data_type()))
                    .collect(),
            )
            .bool(
                "attbyval",
                columns
                    .iter()
                    .map(|c| (1..=8).contains(&pg_type(field(c).data_type()).len))
                    .collect(),
            )
            .const_text("attalign", "d")
            .const_text("attstorage", "p")
            .const_text("attcompression", "")
            .bool(
                "attnotnull",
                columns.iter().map(|c| !field(c).is_nullable()).collect(),
            )
            .const_bool("atthasdef", false)
            .const_bool("atthasmissing", false)
            .const_text("attidentity", "")
            .const_text("attgenerated", "")
            .const_bool("attisdropped", false)
            .const_bool("attislocal", true)
            .const_int32("attinhcount", 0)
            .oid("attcollation", kind::OID, vec![0; columns.len()])
            .null_text_array("attacl")
            .null_text_array("attoptions")
            .null_text_array("attfdwoptions")
            .nulls("attmissingval", DataType::Utf8)
            .into_table()
    }

    fn pg_namespace(&self) -> Result<Arc<dyn TableProvider>> {
        let namespaces = [
            (PG_CATALOG_NAMESPACE, "pg_catalog"),
            (PUBLIC_NAMESPACE, SCHEMA_NAME),
            (INFORMATION_SCHEMA_NAMESPACE, "information_schema"),
        ];
        Columns::new(namespaces.len())
            .own_oid(namespaces.iter().map(|(oid, _)| *oid).collect())
            .text(
                "nspname",
                namespaces.iter().map(|(_, n)| n.to_string()).collect(),
            )
            .oid("nspowner", kind::OID, vec![EDDY_ROLE; namespaces.len()])
            .null_text_array("nspacl")
            .into_table()
    }

    fn pg_database(&self) -> Result<Arc<dyn TableProvider>> {
        Columns::new(1)
            .own_oid(vec![EDDY_DATABASE])
            .const_text("datname", CATALOG_NAME)
            .oid("datdba", kind::OID, vec![EDDY_ROLE])
            // 6 is UTF8 (pg_encoding_to_char).
            .const_int32("encoding", 6)
            .const_text("datlocprovider", "c")
            .const_bool("datistemplate", false)
            .const_bool("datallowconn", true)
            .const_int32("datconnlimit", -1)
            .const_int32("datfrozenxid", 0)
            .const_int32("datminmxid", 1)
            .oid("dattablespace", kind::OID, vec![1663])
            .const_text("datcollate", "C")
            .const_text("datctype", "C")
            .nulls("daticulocale", DataType::Utf8)
            .nulls("datcollversion", DataType::Utf8)
            .null_text_array("datacl")
            .into_table()
    }

    fn pg_roles(&self) -> Result<Arc<dyn TableProvider>> {
        Columns::new(1)
            .const_text("rolname", "eddy")
            .const_bool("rolsuper", true)
            .const_bool("rolinherit", true)
            .const_bool("rolcreaterole", true)
            .const_bool("rolcreatedb", true)
            .const_bool("rolcanlogin", true)
            .const_bool("rolreplication", false)
            .const_int32("rolconnlimit", -1)
            .const_text("rolpassword", "********")
            .nulls(
                "rolvaliduntil",
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            )
            .const_bool("rolbypassrls", true)
            .null_text_array("rolconfig")
            .own_oid(vec![EDDY_ROLE])
            .into_table()
    }

    fn pg_user(&self) -> Result<Arc<dyn TableProvider>> {
        Columns::new(1)
            .const_text("usename", "eddy")
            .oid("usesysid", kind::OID, vec![EDDY_ROLE])
            .const_bool("usecreatedb", true)
            .const_bool("usesuper", true)
            .const_bool("userepl", false)
            .const_bool("usebypassrls", true)
            .const_text("passwd", "********")
            .nulls(
                "valuntil",
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            )
            .null_text_array("useconfig")
            .into_table()
    }

    fn pg_proc(&self) -> Result<Arc<dyn TableProvider>> {
        let functions = self.functions.functions();
        let n = functions.len();
        Columns::new(n)
            .own_oid(functions.iter().map(|f| f.oid).collect())
            .text(
                "proname",
                functions.iter().map(|f| f.name.clone()).collect(),
            )
            .oid(
                "pronamespace",
                kind::REGNAMESPACE,
                vec![PG_CATALOG_NAMESPACE; n],
            )
            .oid("proowner", kind::OID, vec![EDDY_ROLE; n])
            // 12 is the `internal` language.
            .oid("prolang", kind::OID, vec![12; n])
            .float32("procost", vec![1.0; n])
            .float32("prorows", vec![0.0; n])
            .oid("provariadic", kind::REGTYPE, vec![0; n])
            .oid("prosupport", kind::REGPROC, vec![0; n])
            .text(
                "prokind",
                functions.iter().map(|f| f.kind.to_string()).collect(),
            )
            .const_bool("prosecdef", false)
            .const_bool("proleakproof", false)
            .const_bool("proisstrict", false)
            .const_bool("proretset", false)
            .text(
                "provolatile",
                functions.iter().map(|f| f.volatility.to_string()).collect(),
            )
            .const_text("proparallel", "s")
            .const_int16("pronargs", 0)
            .const_int16("pronargdefaults", 0)
            .oid("prorettype", kind::REGTYPE, vec![0; n])
            .const_text("proargtypes", "")
            .null_text_array("proallargtypes")
            .null_text_array("proargmodes")
            .null_text_array("proargnames")
            .nulls("proargdefaults", DataType::Utf8)
            .null_text_array("protrftypes")
            .text("prosrc", functions.iter().map(|f| f.name.clone()).collect())
            .nulls("probin", DataType::Utf8)
            .nulls("prosqlbody", DataType::Utf8)
            .null_text_array("proconfig")
            .null_text_array("proacl")
            .into_table()
    }

    fn pg_settings(&self) -> Result<Arc<dyn TableProvider>> {
        let vars = self.vars.snapshot();
        let (names, values): (Vec<String>, Vec<String>) =
            vars.all().map(|(k, v)| (k.clone(), v.clone())).unzip();
        let n = names.len();
        Columns::new(n)
            .text("name", names)
            .text("setting", values.clone())
            .nulls("unit", DataType::Utf8)
            .const_text("category", "Eddy")
            .nulls("short_desc", DataType::Utf8)
            .nulls("extra_desc", DataType::Utf8)
            .const_text("context", "user")
            .const_text("vartype", "string")
            .const_text("source", "session")
            .nulls("min_val", DataType::Utf8)
            .nulls("max_val", DataType::Utf8)
            .null_text_array("enumvals")
            .opt_text("boot_val", vec![None; n])
            .text("reset_val", values)
            .nulls("sourcefile", DataType::Utf8)
            .nulls("sourceline", DataType::Int32)
            .const_bool("pending_restart", false)
            .into_table()
    }

    /// `pg_matviews` (`matview = true`) or `pg_views`.
    fn views(&self, matview: bool) -> Result<Arc<dyn TableProvider>> {
        let rels: Vec<CatalogRelation> = self
            .relations()?
            .into_iter()
            .filter(|r| r.relkind == if matview { "m" } else { "v" })
            .collect();
        let n = rels.len();
        let (name_column, owner_column) = if matview {
            ("matviewname", "matviewowner")
        } else {
            ("viewname", "viewowner")
        };
        let columns = Columns::new(n)
            .const_text("schemaname", SCHEMA_NAME)
            .text(name_column, rels.iter().map(|r| r.name.clone()).collect())
            .const_text(owner_column, "eddy");
        let columns = if matview {
            columns
                .nulls("tablespace", DataType::Utf8)
                .const_bool("hasindexes", false)
                .const_bool("ispopulated", true)
        } else {
            columns
        };
        columns
            .opt_text(
                "definition",
                rels.iter().map(|r| r.definition.clone()).collect(),
            )
            .into_table()
    }
}

#[async_trait]
impl SchemaProvider for PgCatalogSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.fallback.table_names();
        names.extend(OWN_TABLES.iter().map(|t| t.to_string()));
        names.sort();
        names.dedup();
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let table = match name {
            "pg_class" => self.pg_class()?,
            "pg_attribute" => self.pg_attribute()?,
            "pg_namespace" => self.pg_namespace()?,
            "pg_database" => self.pg_database()?,
            "pg_roles" => self.pg_roles()?,
            "pg_user" => self.pg_user()?,
            "pg_proc" => self.pg_proc()?,
            "pg_settings" => self.pg_settings()?,
            "pg_matviews" => self.views(true)?,
            "pg_views" => self.views(false)?,
            // No comments (COMMENT ON is not supported) and one role, a member of none.
            "pg_description" | "pg_auth_members" => return self.emptied(name).await,
            _ => return self.fallback.table(name).await,
        };
        Ok(Some(table))
    }

    fn table_exist(&self, name: &str) -> bool {
        OWN_TABLES.contains(&name) || self.fallback.table_exist(name)
    }
}

/// Eddy's relations as `datafusion-pg-catalog` asks for them (for its `pg_tables`).
#[derive(Debug, Clone)]
pub struct EddyCatalogInfo(RelationSource);

impl EddyCatalogInfo {
    fn tables(&self, catalog: &str, schema: &str) -> Result<Option<Vec<CatalogRelation>>> {
        if catalog != CATALOG_NAME || schema != SCHEMA_NAME {
            return Ok(None);
        }
        let rels = self
            .0
            .relations()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(Some(
            rels.into_iter().filter(|r| r.relkind == "r").collect(),
        ))
    }

    fn table(&self, catalog: &str, schema: &str, name: &str) -> Result<Option<CatalogRelation>> {
        Ok(self
            .tables(catalog, schema)?
            .and_then(|t| t.into_iter().find(|r| r.name == name)))
    }
}

#[async_trait]
impl CatalogInfo for EddyCatalogInfo {
    async fn catalog_names(&self) -> Result<Vec<String>> {
        Ok(vec![CATALOG_NAME.to_string()])
    }

    async fn schema_names(&self, catalog_name: &str) -> Result<Option<Vec<String>>> {
        Ok((catalog_name == CATALOG_NAME).then(|| vec![SCHEMA_NAME.to_string()]))
    }

    async fn table_names(&self, catalog: &str, schema: &str) -> Result<Option<Vec<String>>> {
        Ok(self
            .tables(catalog, schema)?
            .map(|t| t.into_iter().map(|r| r.name).collect()))
    }

    async fn table_schema(
        &self,
        catalog: &str,
        schema: &str,
        name: &str,
    ) -> Result<Option<SchemaRef>> {
        Ok(self.table(catalog, schema, name)?.map(|r| r.schema))
    }

    async fn table_type(
        &self,
        catalog: &str,
        schema: &str,
        name: &str,
    ) -> Result<Option<TableType>> {
        Ok(self.table(catalog, schema, name)?.map(|_| TableType::Base))
    }
}
