//! `CREATE SOURCE`, `CREATE TABLE`, `DROP` (of every kind) and `SHOW SOURCES | TABLES`.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::sql::sqlparser::ast::{Ident, ObjectName};

use super::{CommandTag, QueryOutput, Session, StatementResult};
use crate::catalog::RelationKind;
use crate::catalog::{RelationDef, WatermarkSpec};
use crate::connector::{ConnectorOptions, OnError};
use crate::error::{EngineError, EngineResult, plan_error};
use crate::sql::parser::{CreateSource, DropRelation, ShowObjectKind};
use crate::table::TableLog;

/// The catalog name of an identifier: unquoted names are lower-cased, as Postgres does.
pub(crate) fn normalize_ident(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_ascii_lowercase(),
    }
}

/// The catalog name of a relation (`public.bids` and `bids` are the same).
pub(crate) fn relation_name(name: &ObjectName) -> EngineResult<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| match p.as_ident() {
            Some(ident) => Ok(normalize_ident(ident)),
            None => Err(plan_error(format!("invalid relation name {name}"))),
        })
        .collect::<EngineResult<_>>()?;
    match parts.as_slice() {
        [name] => Ok(name.clone()),
        [schema, name] if schema == super::SCHEMA_NAME => Ok(name.clone()),
        [catalog, schema, name]
            if catalog == super::CATALOG_NAME && schema == super::SCHEMA_NAME =>
        {
            Ok(name.clone())
        }
        _ => Err(EngineError::Unsupported(format!(
            "schemas other than \"{}\" (in {name})",
            super::SCHEMA_NAME
        ))),
    }
}

impl Session {
    /// Declares a source or table. `validate` is false when replaying the catalog on restart.
    pub(crate) async fn create_source(
        &mut self,
        create: &CreateSource,
        sql: &str,
        validate: bool,
    ) -> EngineResult<StatementResult> {
        let name = relation_name(&create.name)?;
        let mut options: ConnectorOptions = create.options.iter().cloned().collect();
        let connector = options.remove("connector");
        let kind = match (create.kind, &connector) {
            (RelationKind::Table, None) => RelationKind::Table,
            (
                RelationKind::Source
                | RelationKind::View
                | RelationKind::Sink
                | RelationKind::LogicalView,
                None,
            ) => {
                return Err(plan_error(format!(
                    "CREATE SOURCE {name} needs WITH (connector = '...'); connectors: {}",
                    self.connector_list()
                )));
            }
            (_, Some(_)) => RelationKind::Source,
        };
        let tag = match create.kind {
            RelationKind::Source
            | RelationKind::View
            | RelationKind::Sink
            | RelationKind::LogicalView => "CREATE SOURCE",
            RelationKind::Table => "CREATE TABLE",
        };
        if let Some(exists) = self.already_exists(&name, create.if_not_exists, tag) {
            return exists;
        }
        if kind == RelationKind::Table && !options.is_empty() {
            return Err(plan_error(format!(
                "a table without a connector takes no options (got {})",
                options.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        // `format.on-error` is the engine's, for every source: connectors never see it.
        let (_, connector_options) = OnError::split_options(&options)?;
        let connector_impl = match &connector {
            Some(c) => Some(Arc::clone(self.engine.connectors.source(c).ok_or_else(
                || {
                    plan_error(format!(
                        "unknown connector '{c}'; connectors: {}",
                        self.connector_list()
                    ))
                },
            )?)),
            None => None,
        };
        let schema = if create.columns.is_empty() {
            match &connector_impl {
                Some(c) => c.default_schema(&connector_options)?.ok_or_else(|| {
                    plan_error(format!(
                        "connector '{}' needs the columns to be declared",
                        c.name()
                    ))
                })?,
                None => {
                    return Err(plan_error(format!(
                        "table {name} needs at least one column"
                    )));
                }
            }
        } else {
            self.schema_of_columns(create).await?
        };
        let watermark = match &create.watermark {
            Some(w) => Some(self.watermark_spec(&name, &schema, w)?),
            None => None,
        };
        let metadata = metadata_columns(create, &schema, connector_impl.as_deref())?;
        let primary_key = primary_key_columns(create, &schema, &metadata)?;
        let upsert = connector_impl.as_ref().is_some_and(|c| c.upserts());
        if upsert {
            let connector = connector.as_deref().unwrap_or_default();
            if primary_key.is_empty() {
                return Err(plan_error(format!(
                    "connector '{connector}' reads upserts of rows identified by a key: declare \
                     it in the columns, PRIMARY KEY (column, ...) NOT ENFORCED"
                )));
            }
            if options.contains_key("key.fields") {
                return Err(plan_error(format!(
                    "the key fields of a '{connector}' source are its PRIMARY KEY columns: \
                     leave out option 'key.fields'"
                )));
            }
            let fields: Vec<&str> = primary_key
                .iter()
                .map(|c| schema.field(*c).name().as_str())
                .collect();
            options.insert("key.fields".to_string(), fields.join(";"));
        } else if !primary_key.is_empty() {
            return Err(EngineError::Unsupported(
                "PRIMARY KEY on a source other than an upsert source (connector \
                 'upsert-kafka'), or on a table"
                    .to_string(),
            ));
        }
        if let Some(c) = &connector_impl
            && validate
        {
            // The connector checks the columns it reads from the data.
            let read: Vec<usize> = (0..schema.fields().len())
                .filter(|i| !metadata.iter().any(|m| m.column == *i))
                .collect();
            // The options as they are now (an upsert source's `key.fields` added).
            let (_, connector_options) = OnError::split_options(&options)?;
            c.validate(&Arc::new(schema.project(&read)?), &connector_options)?;
        }
        let table = match kind {
            RelationKind::Table => Some(Arc::new(match &self.engine.config.data_dir {
                Some(dir) => TableLog::open(
                    Arc::clone(&schema),
                    &dir.join("tables").join(format!("{name}.arrows")),
                )?,
                None => TableLog::in_memory(Arc::clone(&schema)),
            })),
            RelationKind::Source
            | RelationKind::View
            | RelationKind::Sink
            | RelationKind::LogicalView => None,
        };
        self.engine.catalog.insert(RelationDef {
            name,
            kind,
            schema,
            watermark,
            connector: connector_impl.map(|c| c.name().to_string()),
            options,
            metadata,
            primary_key,
            upsert,
            ddl: sql.to_string(),
            table,
            view: None,
            depends_on: Vec::new(),
            query: None,
            system: false,
        })?;
        Ok(StatementResult::Command(CommandTag::new(tag)))
    }

    /// What `CREATE` of a relation named `name` returns when the name is taken (a notice with
    /// `IF NOT EXISTS`, else 42P07; the system table `eddy_jobs` is always taken); `None` when
    /// it is free.
    pub(crate) fn already_exists(
        &self,
        name: &str,
        if_not_exists: bool,
        tag: &str,
    ) -> Option<EngineResult<StatementResult>> {
        if name == crate::jobs::JOBS_TABLE
            || name == crate::checkpoints::CHECKPOINTS_TABLE
            || name == crate::dead_letters::DEAD_LETTERS_TABLE
        {
            // The system table of jobs is always there.
            return Some(Err(EngineError::DuplicateRelation(name.to_string())));
        }
        self.engine.catalog.get(name)?;
        Some(if if_not_exists {
            Ok(StatementResult::Notice {
                message: format!("relation \"{name}\" already exists, skipping"),
                then: CommandTag::new(tag),
            })
        } else {
            Err(EngineError::DuplicateRelation(name.to_string()))
        })
    }

    /// The push table `name` (and its definition), for statements that add rows to it.
    pub(crate) fn push_table(
        &self,
        name: &str,
        action: &str,
    ) -> EngineResult<(Arc<RelationDef>, Arc<TableLog>)> {
        if name == crate::dead_letters::DEAD_LETTERS_TABLE {
            return Err(EngineError::WrongObjectType(format!(
                "cannot {action} system table \"{name}\": only sources with \
                 format.on-error = 'dead-letter' write it"
            )));
        }
        let relation =
            self.engine
                .catalog
                .get(name)
                .ok_or_else(|| EngineError::UnknownRelation {
                    name: name.to_string(),
                    position: None,
                })?;
        let table = relation.table.clone().ok_or_else(|| {
            EngineError::WrongObjectType(format!(
                "cannot {action} source \"{name}\": rows come from its connector"
            ))
        })?;
        Ok((relation, table))
    }

    fn connector_list(&self) -> String {
        let names = self.engine.connectors.source_names();
        if names.is_empty() {
            "none registered".to_string()
        } else {
            names.join(", ")
        }
    }

    /// Resolves declared column types with DataFusion's own SQL type mapping.
    pub(crate) async fn schema_of_columns(&self, create: &CreateSource) -> EngineResult<SchemaRef> {
        let columns: Vec<String> = create
            .columns
            .iter()
            .map(|c| {
                let mut c = c.clone();
                c.name = Ident::with_quote('"', normalize_ident(&c.name));
                c.to_string()
            })
            .collect();
        let ddl = format!("CREATE TABLE eddy_column_types ({})", columns.join(", "));
        let plan = self
            .ctx
            .state()
            .create_logical_plan(&ddl)
            .await
            .map_err(|e| EngineError::from_datafusion(e, &ddl))?;
        match plan {
            LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(t)) => {
                let schema = t.input.schema().as_arrow().clone();
                let mut seen = std::collections::HashSet::new();
                for f in schema.fields() {
                    if !seen.insert(f.name().clone()) {
                        return Err(plan_error(format!(
                            "column \"{}\" specified more than once",
                            f.name()
                        )));
                    }
                }
                Ok(Arc::new(schema))
            }
            _ => Err(EngineError::Internal(
                "column list did not plan as a table definition".to_string(),
            )),
        }
    }

    fn watermark_spec(
        &self,
        name: &str,
        schema: &SchemaRef,
        w: &crate::sql::parser::WatermarkDef,
    ) -> EngineResult<WatermarkSpec> {
        let column = normalize_ident(&w.column);
        let field = schema
            .field_with_name(&column)
            .map_err(|_| EngineError::UnknownColumn {
                message: format!("WATERMARK column \"{column}\" is not a column of {name}"),
                position: None,
            })?;
        if !matches!(field.data_type(), DataType::Timestamp(_, _)) {
            return Err(plan_error(format!(
                "WATERMARK column \"{column}\" must be a TIMESTAMP, not {}",
                field.data_type()
            )));
        }
        let expr_sql = w.expr.to_string();
        let df_schema = DFSchema::try_from_qualified_schema(name, schema.as_ref())?;
        let expr = self
            .ctx
            .state()
            .create_logical_expr(&expr_sql, &df_schema)
            .map_err(|e| EngineError::from_datafusion(e, &expr_sql))?;
        let (_, field) = datafusion::logical_expr::ExprSchemable::to_field(&expr, &df_schema)?;
        let data_type = field.data_type().clone();
        if !matches!(data_type, DataType::Timestamp(_, _)) {
            return Err(plan_error(format!(
                "WATERMARK expression must be a TIMESTAMP, not {data_type}"
            )));
        }
        Ok(WatermarkSpec { column, expr_sql })
    }

    pub(crate) async fn drop_relation(
        &mut self,
        drop: &DropRelation,
    ) -> EngineResult<StatementResult> {
        let tag = match drop.kind {
            RelationKind::Source => "DROP SOURCE",
            RelationKind::Table => "DROP TABLE",
            RelationKind::View => "DROP MATERIALIZED VIEW",
            RelationKind::Sink => "DROP SINK",
            RelationKind::LogicalView => "DROP VIEW",
        };
        let mut notices = Vec::new();
        let names = drop
            .names
            .iter()
            .map(relation_name)
            .collect::<EngineResult<Vec<_>>>()?;
        // Check every name before dropping any, as Postgres does.
        for name in &names {
            if name == crate::dead_letters::DEAD_LETTERS_TABLE {
                return Err(EngineError::WrongObjectType(format!(
                    "cannot drop system table \"{name}\""
                )));
            }
            match self.engine.catalog.get(name) {
                None if drop.if_exists => {
                    let what = if drop.kind == RelationKind::Sink {
                        "sink"
                    } else {
                        "relation"
                    };
                    notices.push(format!("{what} \"{name}\" does not exist, skipping"))
                }
                None if drop.kind == RelationKind::Sink => {
                    return Err(EngineError::UnknownObject(format!(
                        "sink \"{name}\" does not exist"
                    )));
                }
                None => {
                    return Err(EngineError::UnknownRelation {
                        name: name.clone(),
                        position: None,
                    });
                }
                Some(r) if (r.kind == RelationKind::Sink) != (drop.kind == RelationKind::Sink) => {
                    return Err(EngineError::WrongObjectType(
                        if r.kind == RelationKind::Sink {
                            format!("\"{name}\" is a sink: use DROP SINK")
                        } else {
                            format!("\"{name}\" is not a sink")
                        },
                    ));
                }
                Some(r)
                    if (r.kind == RelationKind::LogicalView)
                        != (drop.kind == RelationKind::LogicalView) =>
                {
                    return Err(EngineError::WrongObjectType(
                        if r.kind == RelationKind::LogicalView {
                            format!("\"{name}\" is a view: use DROP VIEW")
                        } else {
                            format!("\"{name}\" is not a view")
                        },
                    ));
                }
                Some(r) if r.kind == RelationKind::View && drop.kind != RelationKind::View => {
                    return Err(EngineError::WrongObjectType(format!(
                        "\"{name}\" is a materialized view: use DROP MATERIALIZED VIEW"
                    )));
                }
                Some(r) if r.kind != RelationKind::View && drop.kind == RelationKind::View => {
                    return Err(EngineError::WrongObjectType(format!(
                        "\"{name}\" is not a materialized view"
                    )));
                }
                Some(r) if r.kind != drop.kind && drop.kind == RelationKind::Source => {
                    return Err(EngineError::WrongObjectType(format!(
                        "\"{name}\" is a table, not a source: use DROP TABLE"
                    )));
                }
                Some(_) => {
                    let dependents: Vec<String> = self
                        .engine
                        .catalog
                        .dependents(name)
                        .into_iter()
                        .filter(|d| !names.contains(d))
                        .collect();
                    if !dependents.is_empty() && !drop.cascade {
                        let kinds: Vec<&str> =
                            dependents.iter().map(|d| self.kind_name(d)).collect();
                        let views = if dependents.len() == 1 {
                            format!("{} {} depends", kinds[0], dependents[0])
                        } else if kinds.iter().all(|k| *k == kinds[0]) {
                            format!("{}s {} depend", kinds[0], dependents.join(", "))
                        } else {
                            let named: Vec<String> = kinds
                                .iter()
                                .zip(&dependents)
                                .map(|(k, d)| format!("{k} {d}"))
                                .collect();
                            format!("{} depend", named.join(", "))
                        };
                        return Err(EngineError::DependentObjects(format!(
                            "cannot drop {name} because {views} on it (DROP ... CASCADE \
                             drops them too)"
                        )));
                    }
                }
            }
        }
        // Dependents first, each once.
        let mut order = Vec::new();
        for name in &names {
            self.drop_order(name, &mut order, &mut notices);
        }
        for name in &order {
            if let Some(r) = self.engine.catalog.remove(name)? {
                if let Some(table) = &r.table {
                    table.delete_file()?;
                }
                if matches!(r.kind, RelationKind::View | RelationKind::Sink) {
                    // A sink's open files are finished before this returns.
                    self.engine.jobs.remove(name).await;
                }
            }
        }
        if notices.is_empty() {
            Ok(StatementResult::Command(CommandTag::new(tag)))
        } else {
            Ok(StatementResult::Notice {
                message: notices.join("; "),
                then: CommandTag::new(tag),
            })
        }
    }

    /// Adds to `order` the views and sinks that read `name` (what CASCADE allows), then
    /// `name` itself.
    fn drop_order(&self, name: &str, order: &mut Vec<String>, notices: &mut Vec<String>) {
        for dependent in self.engine.catalog.dependents(name) {
            if !order.contains(&dependent) {
                notices.push(format!(
                    "drop cascades to {} {dependent}",
                    self.kind_name(&dependent)
                ));
                self.drop_order(&dependent, order, notices);
            }
        }
        if !order.iter().any(|n| n == name) {
            order.push(name.to_string());
        }
    }

    /// "materialized view", "view" or "sink": what a dependent is, for messages.
    fn kind_name(&self, name: &str) -> &'static str {
        match self.engine.catalog.get(name).map(|r| r.kind) {
            Some(RelationKind::Sink) => "sink",
            Some(RelationKind::LogicalView) => "view",
            _ => "materialized view",
        }
    }

    pub(crate) fn show_objects(&self, kind: ShowObjectKind) -> EngineResult<StatementResult> {
        let schema = show_schema(kind);
        let relations = self.engine.catalog.list();
        let wanted = match kind {
            ShowObjectKind::Sources => Some(RelationKind::Source),
            ShowObjectKind::Tables => Some(RelationKind::Table),
            ShowObjectKind::Views => return self.show_views(),
            ShowObjectKind::Jobs => return self.show_jobs(),
            ShowObjectKind::Sinks => return self.show_sinks(),
            ShowObjectKind::Checkpoints => return self.show_checkpoints(),
        };
        let rows: Vec<_> = relations
            .iter()
            .filter(|r| Some(r.kind) == wanted)
            .collect();
        let mut columns: Vec<Vec<String>> = vec![Vec::new(); schema.fields().len()];
        for r in rows {
            let column_list = column_list(&r.schema);
            let watermark = r
                .watermark
                .as_ref()
                .map(|w| w.expr_sql.clone())
                .unwrap_or_default();
            let row = if kind == ShowObjectKind::Sources {
                [
                    r.name.clone(),
                    r.connector.clone().unwrap_or_default(),
                    column_list,
                    watermark,
                ]
            } else {
                let rows = r.table.as_ref().map_or(0, |t| t.num_rows());
                [r.name.clone(), column_list, watermark, rows.to_string()]
            };
            for (column, value) in columns.iter_mut().zip(row) {
                column.push(value);
            }
        }
        show_result(&schema, columns)
    }
}

/// A relation's columns as SHOW lists them: `name Type, ...`.
pub(crate) fn column_list(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The result of a SHOW whose columns (all text) are given column by column.
pub(crate) fn show_result(
    schema: &SchemaRef,
    columns: Vec<Vec<String>>,
) -> EngineResult<StatementResult> {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    Ok(StatementResult::Rows(QueryOutput::text_columns(
        &names, columns, "SHOW",
    )?))
}

/// The columns `SHOW SOURCES | TABLES | VIEWS | SINKS` returns.
pub(crate) fn show_schema(kind: ShowObjectKind) -> SchemaRef {
    let names: &[&str] = match kind {
        ShowObjectKind::Sources => &["name", "connector", "columns", "watermark"],
        ShowObjectKind::Tables => &["name", "columns", "watermark", "rows"],
        ShowObjectKind::Views => return super::views::views_schema(),
        ShowObjectKind::Jobs => return crate::jobs::jobs_schema(),
        ShowObjectKind::Sinks => return super::sinks::sinks_schema(),
        ShowObjectKind::Checkpoints => return crate::checkpoints::checkpoints_schema(),
    };
    Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ))
}

/// The columns `create` declares `METADATA`, checked against the keys its connector offers
/// and their types.
/// The columns of `PRIMARY KEY (...)`, as indices into `schema`, in key order: declared,
/// distinct, and not metadata columns (a key is read from the message).
fn primary_key_columns(
    create: &CreateSource,
    schema: &SchemaRef,
    metadata: &[crate::connector::MetadataColumn],
) -> EngineResult<Vec<usize>> {
    let mut columns = Vec::with_capacity(create.primary_key.len());
    for ident in &create.primary_key {
        let name = normalize_ident(ident);
        let column = schema.index_of(&name).map_err(|_| {
            plan_error(format!(
                "PRIMARY KEY column {name} is not a declared column"
            ))
        })?;
        if columns.contains(&column) {
            return Err(plan_error(format!("PRIMARY KEY lists column {name} twice")));
        }
        if metadata.iter().any(|m| m.column == column) {
            return Err(plan_error(format!(
                "PRIMARY KEY column {name} is a METADATA column; key columns come from the data"
            )));
        }
        columns.push(column);
    }
    Ok(columns)
}

fn metadata_columns(
    create: &CreateSource,
    schema: &SchemaRef,
    connector: Option<&dyn crate::connector::SourceConnector>,
) -> EngineResult<Vec<crate::connector::MetadataColumn>> {
    use datafusion::arrow::compute::can_cast_types;
    let Some(first) = create.metadata.first() else {
        return Ok(Vec::new());
    };
    let Some(connector) = connector else {
        return Err(plan_error(format!(
            "column {} is declared METADATA, but a table without a connector has no metadata",
            normalize_ident(&first.column)
        )));
    };
    let offered = connector.metadata();
    let keys = || {
        offered
            .iter()
            .map(|(k, _)| format!("'{k}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = Vec::with_capacity(create.metadata.len());
    for def in &create.metadata {
        let name = normalize_ident(&def.column);
        let column = schema.index_of(&name)?;
        let Some((_, produced)) = offered.iter().find(|(k, _)| *k == def.key) else {
            return Err(
                crate::connector::ConnectorError::InvalidOption(if offered.is_empty() {
                    format!(
                        "connector '{}' has no metadata (column {name} METADATA FROM '{}')",
                        connector.name(),
                        def.key
                    )
                } else {
                    format!(
                        "connector '{}' has no metadata key '{}' (column {name}); keys: {}",
                        connector.name(),
                        def.key,
                        keys()
                    )
                })
                .into(),
            );
        };
        if produced == &datafusion::arrow::datatypes::DataType::Null {
            return Err(crate::connector::ConnectorError::Unsupported(format!(
                "the {} metadata column '{}' (not implemented yet)",
                connector.name(),
                def.key
            ))
            .into());
        }
        let declared = schema.field(column).data_type();
        if !can_cast_types(produced, declared) {
            return Err(plan_error(format!(
                "metadata '{}' is {produced}, which column {name} of type {declared} cannot hold",
                def.key
            )));
        }
        out.push(crate::connector::MetadataColumn {
            column,
            key: def.key.clone(),
        });
    }
    Ok(out)
}
