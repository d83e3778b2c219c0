//! The `information_schema` views tools read: `tables`, `columns`, `schemata` and `views`,
//! built from Eddy's live catalog with Postgres type names.
//!
//! Like Materialize and RisingWave (and unlike Postgres, which leaves them out), materialized
//! views are listed in `tables` with `table_type = 'MATERIALIZED VIEW'`. `views` lists the
//! (system) views only.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result};

use super::columns::Columns;
use super::relations::{CatalogRelation, RelationSource};
use super::types::{pg_type, type_modifier};
use crate::session::{CATALOG_NAME, SCHEMA_NAME};

const TABLES: &[&str] = &["tables", "columns", "schemata", "views"];

/// The `information_schema` schema.
#[derive(Debug)]
pub struct InformationSchema {
    relations: RelationSource,
}

impl InformationSchema {
    pub fn new(relations: RelationSource) -> Self {
        Self { relations }
    }

    fn relations(&self) -> Result<Vec<CatalogRelation>> {
        self.relations
            .relations()
            .map_err(|e| DataFusionError::External(Box::new(e)))
    }

    fn tables(&self) -> Result<Arc<dyn TableProvider>> {
        let rels = self.relations()?;
        Columns::new(rels.len())
            .const_text("table_catalog", CATALOG_NAME)
            .const_text("table_schema", SCHEMA_NAME)
            .text("table_name", rels.iter().map(|r| r.name.clone()).collect())
            .text(
                "table_type",
                rels.iter().map(|r| r.table_type().to_string()).collect(),
            )
            .nulls(
                "self_referencing_column_name",
                datafusion::arrow::datatypes::DataType::Utf8,
            )
            .nulls(
                "reference_generation",
                datafusion::arrow::datatypes::DataType::Utf8,
            )
            .nulls(
                "user_defined_type_catalog",
                datafusion::arrow::datatypes::DataType::Utf8,
            )
            .nulls(
                "user_defined_type_schema",
                datafusion::arrow::datatypes::DataType::Utf8,
            )
            .nulls(
                "user_defined_type_name",
                datafusion::arrow::datatypes::DataType::Utf8,
            )
            // Rows can be inserted into push tables only.
            .text(
                "is_insertable_into",
                rels.iter().map(|r| yes_no(r.insertable)).collect(),
            )
            .const_text("is_typed", "NO")
            .nulls(
                "commit_action",
                datafusion::arrow::datatypes::DataType::Utf8,
            )
            .into_table()
    }

    fn columns(&self) -> Result<Arc<dyn TableProvider>> {
        use datafusion::arrow::datatypes::DataType;
        let rels = self.relations()?;
        let columns: Vec<(&CatalogRelation, usize)> = rels
            .iter()
            .flat_map(|r| (0..r.schema.fields().len()).map(move |i| (r, i)))
            .collect();
        let field = |(r, i): &(&CatalogRelation, usize)| Arc::clone(&r.schema.fields()[*i]);
        let n = columns.len();
        let numeric = |dt: &DataType| -> (Option<i64>, Option<i64>) {
            match dt {
                DataType::Int8 | DataType::Int16 | DataType::UInt8 => (Some(16), Some(0)),
                DataType::Int32 | DataType::UInt16 => (Some(32), Some(0)),
                DataType::Int64 | DataType::UInt32 => (Some(64), Some(0)),
                DataType::Float16 | DataType::Float32 => (Some(24), None),
                DataType::Float64 => (Some(53), None),
                DataType::Decimal32(p, s)
                | DataType::Decimal64(p, s)
                | DataType::Decimal128(p, s)
                | DataType::Decimal256(p, s) => (Some(i64::from(*p)), Some(i64::from(*s))),
                _ => (None, None),
            }
        };
        let datetime_precision = |dt: &DataType| -> Option<i64> {
            match dt {
                DataType::Timestamp(..) | DataType::Time32(_) | DataType::Time64(_) => {
                    let m = type_modifier(dt);
                    Some(if m < 0 { 6 } else { i64::from(m) })
                }
                DataType::Date32 | DataType::Date64 => Some(0),
                _ => None,
            }
        };
        Columns::new(n)
            .const_text("table_catalog", CATALOG_NAME)
            .const_text("table_schema", SCHEMA_NAME)
            .text(
                "table_name",
                columns.iter().map(|(r, _)| r.name.clone()).collect(),
            )
            .text(
                "column_name",
                columns.iter().map(|c| field(c).name().clone()).collect(),
            )
            .int64(
                "ordinal_position",
                columns.iter().map(|(_, i)| Some(*i as i64 + 1)).collect(),
            )
            .nulls("column_default", DataType::Utf8)
            .text(
                "is_nullable",
                columns
                    .iter()
                    .map(|c| yes_no(field(c).is_nullable()))
                    .collect(),
            )
            .text(
                "data_type",
                columns
                    .iter()
                    .map(|c| pg_type(field(c).data_type()).name.to_string())
                    .collect(),
            )
            .nulls("character_maximum_length", DataType::Int64)
            .nulls("character_octet_length", DataType::Int64)
            .int64(
                "numeric_precision",
                columns
                    .iter()
                    .map(|c| numeric(field(c).data_type()).0)
                    .collect(),
            )
            .int64(
                "numeric_precision_radix",
                columns
                    .iter()
                    .map(|c| {
                        let dt = field(c).data_type().clone();
                        numeric(&dt).0.map(|_| {
                            if dt.is_floating() {
                                2
                            } else if matches!(
                                dt,
                                DataType::Decimal128(..)
                                    | DataType::Decimal256(..)
                                    | DataType::Decimal32(..)
                                    | DataType::Decimal64(..)
                            ) {
                                10
                            } else {
                                2
                            }
                        })
                    })
                    .collect(),
            )
            .int64(
                "numeric_scale",
                columns
                    .iter()
                    .map(|c| numeric(field(c).data_type()).1)
                    .collect(),
            )
            .int64(
                "datetime_precision",
                columns
                    .iter()
                    .map(|c| datetime_precision(field(c).data_type()))
                    .collect(),
            )
            .const_text("udt_catalog", CATALOG_NAME)
            .const_text("udt_schema", "pg_catalog")
            .text(
                "udt_name",
                columns
                    .iter()
                    .map(|c| pg_type(field(c).data_type()).typname.to_string())
                    .collect(),
            )
            .const_text("is_updatable", "NO")
            .into_table()
    }

    fn schemata(&self) -> Result<Arc<dyn TableProvider>> {
        let schemas = ["information_schema", "pg_catalog", SCHEMA_NAME];
        Columns::new(schemas.len())
            .const_text("catalog_name", CATALOG_NAME)
            .text(
                "schema_name",
                schemas.iter().map(|s| s.to_string()).collect(),
            )
            .const_text("schema_owner", "eddy")
            .nulls(
                "default_character_set_catalog",
                datafusion::arrow::datatypes::DataType::Utf8,
            )
            .nulls(
                "default_character_set_schema",
                datafusion::arrow::datatypes::DataType::Utf8,
            )
            .nulls(
                "default_character_set_name",
                datafusion::arrow::datatypes::DataType::Utf8,
            )
            .nulls("sql_path", datafusion::arrow::datatypes::DataType::Utf8)
            .into_table()
    }

    fn views(&self) -> Result<Arc<dyn TableProvider>> {
        let rels: Vec<CatalogRelation> = self
            .relations()?
            .into_iter()
            .filter(|r| r.relkind == "v")
            .collect();
        Columns::new(rels.len())
            .const_text("table_catalog", CATALOG_NAME)
            .const_text("table_schema", SCHEMA_NAME)
            .text("table_name", rels.iter().map(|r| r.name.clone()).collect())
            .opt_text(
                "view_definition",
                rels.iter().map(|r| r.definition.clone()).collect(),
            )
            .const_text("check_option", "NONE")
            .const_text("is_updatable", "NO")
            .const_text("is_insertable_into", "NO")
            .const_text("is_trigger_updatable", "NO")
            .const_text("is_trigger_deletable", "NO")
            .const_text("is_trigger_insertable_into", "NO")
            .into_table()
    }
}

fn yes_no(b: bool) -> String {
    if b { "YES" } else { "NO" }.to_string()
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(Some(match name {
            "tables" => self.tables()?,
            "columns" => self.columns()?,
            "schemata" => self.schemata()?,
            "views" => self.views()?,
            _ => return Ok(None),
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name)
    }
}
