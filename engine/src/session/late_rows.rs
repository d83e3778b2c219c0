//! A job's `WITH (late.rows = 'name')`: finding, checking or creating the push table its late
//! rows go to (see [`crate::late_rows`]).

use std::sync::Arc;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;

use super::Session;
use super::ddl::relation_name;
use crate::catalog::RelationKind;
use crate::error::{EngineError, EngineResult};
use crate::late_rows::{
    LATE_ROWS_OPTION, LateRowTable, late_rows_columns_text, late_rows_ddl, same_columns,
};
use crate::sql::parser::{EddyStatement, parse_sql};

impl Session {
    /// The late-row table of job `job` for its option `late.rows = 'value'` (none without
    /// the option): created (and saved in the catalog, before the job) if absent. An existing
    /// relation must be a push table with exactly the late-row columns (42809 otherwise), and
    /// the job must not read it (`depends_on`, the relations it reads: its late rows would
    /// come back to it). The table joins `depends_on`, so it cannot be dropped while the job
    /// writes it.
    pub(crate) async fn late_row_table(
        &mut self,
        job: &str,
        value: Option<&str>,
        depends_on: &mut Vec<String>,
    ) -> EngineResult<Option<Arc<LateRowTable>>> {
        let Some(value) = value else {
            return Ok(None);
        };
        let name = late_rows_name(value)?;
        if name == job {
            return Err(EngineError::InvalidParameterValue(format!(
                "option {LATE_ROWS_OPTION} of \"{job}\" names the job itself: name a table"
            )));
        }
        if depends_on.contains(&name) {
            return Err(EngineError::InvalidParameterValue(format!(
                "option {LATE_ROWS_OPTION} of \"{job}\" names \"{name}\", which the job reads: \
                 its late rows would come back to it"
            )));
        }
        let ddl = late_rows_ddl(&name);
        let wrong = |what: &str| {
            EngineError::WrongObjectType(format!(
                "\"{name}\" is {what} and cannot take the late rows of \"{job}\": a late-row \
                 table is a push table with exactly the columns ({}); name another table, or \
                 a new one (the job creates it)",
                late_rows_columns_text()
            ))
        };
        if is_system(&name) {
            return Err(wrong("a system table"));
        }
        let create = late_rows_create(&ddl)?;
        if self.engine.catalog.get(&name).is_none() {
            self.create_source(&create, &ddl, true).await?;
            tracing::info!(job = %job, table = %name, "late-row table created");
        }
        let relation = self.engine.catalog.get(&name).ok_or_else(|| {
            EngineError::Internal(format!("the late-row table \"{name}\" is gone"))
        })?;
        let table = match (relation.kind, &relation.table) {
            (RelationKind::Table, Some(table)) => Arc::clone(table),
            (RelationKind::Source, _) => return Err(wrong("a source")),
            (RelationKind::View, _) => return Err(wrong("a materialized view")),
            (RelationKind::LogicalView, _) => return Err(wrong("a view")),
            (RelationKind::Sink, _) => return Err(wrong("a sink")),
            (RelationKind::Table, None) => return Err(wrong("a table without rows")),
        };
        // The columns a table made by the statement has, as this engine plans the types.
        let expected = self.schema_of_columns(&create).await?;
        if !same_columns(&relation.schema, &expected) {
            return Err(wrong("a table with other columns"));
        }
        let late = LateRowTable::new(job, table, Arc::clone(&self.engine.late_row_clock));
        depends_on.push(name);
        Ok(Some(Arc::new(late)))
    }
}

/// The `CREATE TABLE` statement `ddl` (a late-row table's), parsed.
fn late_rows_create(ddl: &str) -> EngineResult<Box<crate::sql::parser::CreateSource>> {
    let statement = parse_sql(ddl)?.into_iter().next();
    match statement.map(|s| s.statement) {
        Some(EddyStatement::CreateSource(create)) => Ok(create),
        _ => Err(EngineError::Internal(format!(
            "the late-row table's statement did not parse as CREATE TABLE: {ddl}"
        ))),
    }
}

/// Whether `name` is a system table's (which `push_table` refuses with its own message).
fn is_system(name: &str) -> bool {
    name == crate::jobs::JOBS_TABLE
        || name == crate::checkpoints::CHECKPOINTS_TABLE
        || name == crate::dead_letters::DEAD_LETTERS_TABLE
}

/// The table an option value names, read as SQL names are (`late` and `LATE` are one table,
/// `"Late"` another); anything but one name is 22023.
fn late_rows_name(value: &str) -> EngineResult<String> {
    let invalid = || {
        EngineError::InvalidParameterValue(format!(
            "invalid value for option {LATE_ROWS_OPTION}: '{value}' (the name of a table)"
        ))
    };
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect)
        .try_with_sql(value)
        .map_err(|_| invalid())?;
    let name = parser.parse_object_name(false).map_err(|_| invalid())?;
    if parser.peek_token().token != Token::EOF {
        return Err(invalid());
    }
    relation_name(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_values_are_read_as_names() {
        assert_eq!(late_rows_name("late").unwrap(), "late");
        assert_eq!(late_rows_name("LATE").unwrap(), "late");
        assert_eq!(late_rows_name("\"Late\"").unwrap(), "Late");
        assert!(matches!(
            late_rows_name("late rows"),
            Err(EngineError::InvalidParameterValue(_))
        ));
        assert!(matches!(
            late_rows_name(""),
            Err(EngineError::InvalidParameterValue(_))
        ));
    }
}
