//! `COPY`: `COPY (query) TO STDOUT` streams a query's rows as COPY data; `COPY t FROM STDIN`
//! appends rows to a push table.
//!
//! COPY FROM is all-or-nothing, as in Postgres: the first bad value fails the whole COPY with
//! its line number and nothing is appended.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray, new_null_array};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};

use super::ddl::{normalize_ident, relation_name};
use super::{Session, StatementResult, TransactionState};
use crate::error::{EngineError, EngineResult};
use crate::table::TableLog;

/// The data format of a COPY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyFormat {
    /// Postgres text format: tab-separated, `\N` for NULL, backslash escapes.
    Text { delimiter: char, null: String },
    /// CSV: unquoted empty (or the `NULL` string) is NULL.
    Csv {
        delimiter: char,
        null: String,
        header: bool,
        quote: char,
    },
    /// Postgres binary COPY format.
    Binary,
}

/// The options of a COPY statement, after defaults.
pub type CopyOptions = CopyFormat;

/// A `COPY t FROM STDIN` waiting for its data.
#[derive(Debug, Clone)]
pub struct CopyIn {
    pub table_name: String,
    table: Arc<TableLog>,
    /// Indices into the table schema of the columns the data holds, in data order.
    columns: Vec<usize>,
    pub format: CopyFormat,
}

impl CopyIn {
    /// Number of columns in each data row.
    pub fn num_columns(&self) -> usize {
        self.columns.len()
    }

    /// The table columns the data holds, in data order (what binary COPY data decodes to).
    pub fn data_fields(&self) -> Vec<datafusion::arrow::datatypes::FieldRef> {
        self.columns
            .iter()
            .map(|&i| Arc::clone(&self.table.schema().fields()[i]))
            .collect()
    }
}

fn copy_format(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> EngineResult<CopyFormat> {
    let mut format = "text".to_string();
    let mut delimiter = None;
    let mut null = None;
    let mut header = false;
    let mut quote = '"';
    for o in options {
        match o {
            CopyOption::Format(f) => format = f.value.to_ascii_lowercase(),
            CopyOption::Delimiter(d) => delimiter = Some(*d),
            CopyOption::Null(n) => null = Some(n.clone()),
            CopyOption::Header(h) => header = *h,
            CopyOption::Quote(q) => quote = *q,
            other => {
                return Err(EngineError::Unsupported(format!("COPY option {other}")));
            }
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Binary => format = "binary".to_string(),
            CopyLegacyOption::Delimiter(d) => delimiter = Some(*d),
            CopyLegacyOption::Null(n) => null = Some(n.clone()),
            CopyLegacyOption::Csv(csv) => {
                format = "csv".to_string();
                for c in csv {
                    match c {
                        CopyLegacyCsvOption::Header => header = true,
                        CopyLegacyCsvOption::Quote(q) => quote = *q,
                        other => {
                            return Err(EngineError::Unsupported(format!("COPY option {other}")));
                        }
                    }
                }
            }
            other => return Err(EngineError::Unsupported(format!("COPY option {other}"))),
        }
    }
    match format.as_str() {
        "text" => {
            if header {
                return Err(EngineError::Plan {
                    message: "COPY HEADER is available only in CSV mode".to_string(),
                    position: None,
                });
            }
            Ok(CopyFormat::Text {
                delimiter: delimiter.unwrap_or('\t'),
                null: null.unwrap_or_else(|| "\\N".to_string()),
            })
        }
        "csv" => Ok(CopyFormat::Csv {
            delimiter: delimiter.unwrap_or(','),
            null: null.unwrap_or_default(),
            header,
            quote,
        }),
        "binary" => Ok(CopyFormat::Binary),
        other => Err(EngineError::Plan {
            message: format!("COPY format \"{other}\" not recognized"),
            position: None,
        }),
    }
}

impl Session {
    pub(crate) async fn copy(
        &mut self,
        stmt: &Statement,
        sql: &str,
        params: &[ScalarValue],
    ) -> EngineResult<StatementResult> {
        let Statement::Copy {
            source,
            to,
            target,
            options,
            legacy_options,
            ..
        } = stmt
        else {
            return Err(EngineError::Internal("not a COPY statement".to_string()));
        };
        let format = copy_format(options, legacy_options)?;
        match (to, target) {
            (true, CopyTarget::Stdout) => {
                let query = match source {
                    CopySource::Query(q) => Statement::Query(q.clone()),
                    CopySource::Table {
                        table_name,
                        columns,
                    } => {
                        let cols = if columns.is_empty() {
                            "*".to_string()
                        } else {
                            columns
                                .iter()
                                .map(|c| c.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        };
                        let text = format!("SELECT {cols} FROM {table_name}");
                        match crate::sql::parser::parse_sql(&text)?.pop().map(|s| s.statement) {
                            Some(crate::sql::parser::EddyStatement::Sql(s)) => *s,
                            _ => return Err(EngineError::Internal("COPY table rewrite".into())),
                        }
                    }
                };
                let output = self.run_query(query, sql, params, true).await?;
                Ok(StatementResult::CopyOut(output, format))
            }
            (false, CopyTarget::Stdin) => {
                let CopySource::Table {
                    table_name,
                    columns,
                } = source
                else {
                    return Err(EngineError::Internal("COPY FROM without a table".to_string()));
                };
                let name = relation_name(table_name)?;
                let (relation, table) = self.push_table(&name, "copy into")?;
                let columns = if columns.is_empty() {
                    (0..relation.schema.fields().len()).collect()
                } else {
                    columns
                        .iter()
                        .map(|c| {
                            let c = normalize_ident(c);
                            relation.schema.index_of(&c).map_err(|_| {
                                EngineError::UnknownColumn {
                                    message: format!(
                                        "column \"{c}\" of relation \"{name}\" does not exist"
                                    ),
                                    position: None,
                                }
                            })
                        })
                        .collect::<EngineResult<Vec<_>>>()?
                };
                Ok(StatementResult::CopyIn(CopyIn {
                    table_name: name,
                    table,
                    columns,
                    format,
                }))
            }
            (true, _) => Err(EngineError::Unsupported(
                "COPY TO a file or program (use COPY ... TO STDOUT)".to_string(),
            )),
            (false, _) => Err(EngineError::Unsupported(
                "COPY FROM a file or program (use COPY ... FROM STDIN, or CREATE SOURCE with the file connector)"
                    .to_string(),
            )),
        }
    }

    /// Appends the data of a finished `COPY FROM STDIN`; returns the number of rows.
    pub fn copy_in(&mut self, copy: &CopyIn, data: &[u8]) -> EngineResult<usize> {
        let text = std::str::from_utf8(data).map_err(|e| {
            EngineError::InvalidInput(format!("invalid byte sequence for encoding \"UTF8\": {e}"))
        })?;
        let rows = match &copy.format {
            CopyFormat::Text { delimiter, null } => parse_text(text, *delimiter, null)?,
            CopyFormat::Csv {
                delimiter,
                null,
                header,
                quote,
            } => parse_csv(text, *delimiter, null, *header, *quote)?,
            CopyFormat::Binary => {
                return Err(EngineError::Internal(
                    "binary COPY data must be decoded by the protocol layer".into(),
                ));
            }
        };
        let batch = rows_to_batch(&rows, copy)?;
        self.append_copied(copy, batch)
    }

    /// Appends rows of a binary `COPY FROM STDIN` that the protocol layer decoded into
    /// `columns` (one array per data column, typed as [`CopyIn::data_fields`]).
    pub fn copy_in_columns(
        &mut self,
        copy: &CopyIn,
        columns: Vec<ArrayRef>,
        num_rows: usize,
    ) -> EngineResult<usize> {
        let mut arrays: Vec<Option<ArrayRef>> = vec![None; copy.table.schema().fields().len()];
        for (&table_index, column) in copy.columns.iter().zip(columns) {
            arrays[table_index] = Some(column);
        }
        let batch = assemble(copy, arrays, num_rows)?;
        self.append_copied(copy, batch)
    }

    fn append_copied(&mut self, copy: &CopyIn, batch: RecordBatch) -> EngineResult<usize> {
        let n = batch.num_rows();
        if self.transaction == TransactionState::InBlock {
            self.pending_inserts.push((Arc::clone(&copy.table), batch));
        } else {
            copy.table.append(batch)?;
        }
        Ok(n)
    }
}

/// A parsed data row: its line number and its fields (`None` = NULL).
type Row = (usize, Vec<Option<String>>);

fn parse_text(text: &str, delimiter: char, null: &str) -> EngineResult<Vec<Row>> {
    let mut rows = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line == "\\." {
            break;
        }
        if line.is_empty() && i + 1 == text.split('\n').count() {
            continue;
        }
        let mut fields = Vec::new();
        for raw in line.split(delimiter) {
            if raw == null {
                fields.push(None);
                continue;
            }
            let mut value = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    value.push(c);
                    continue;
                }
                match chars.next() {
                    Some('t') => value.push('\t'),
                    Some('n') => value.push('\n'),
                    Some('r') => value.push('\r'),
                    Some('b') => value.push('\u{8}'),
                    Some('f') => value.push('\u{c}'),
                    Some('v') => value.push('\u{b}'),
                    Some(other) => value.push(other),
                    None => value.push('\\'),
                }
            }
            fields.push(Some(value));
        }
        rows.push((i + 1, fields));
    }
    Ok(rows)
}

fn parse_csv(
    text: &str,
    delimiter: char,
    null: &str,
    header: bool,
    quote: char,
) -> EngineResult<Vec<Row>> {
    let mut rows = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    let mut first = true;
    while chars.peek().is_some() {
        let start_line = line;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut in_quotes = false;
        loop {
            let Some(c) = chars.next() else {
                if in_quotes {
                    return Err(EngineError::InvalidInput(format!(
                        "unterminated CSV quoted field (line {start_line})"
                    )));
                }
                break;
            };
            if in_quotes {
                if c == quote {
                    if chars.peek() == Some(&quote) {
                        chars.next();
                        field.push(quote);
                    } else {
                        in_quotes = false;
                    }
                } else {
                    if c == '\n' {
                        line += 1;
                    }
                    field.push(c);
                }
            } else if c == quote {
                in_quotes = true;
                quoted = true;
            } else if c == delimiter {
                fields.push(csv_value(std::mem::take(&mut field), quoted, null));
                quoted = false;
            } else if c == '\n' {
                line += 1;
                break;
            } else if c != '\r' {
                field.push(c);
            }
        }
        fields.push(csv_value(field, quoted, null));
        let terminator = fields.len() == 1 && fields[0].as_deref() == Some("\\.");
        if terminator {
            break;
        }
        let empty_line = fields.len() == 1 && fields[0].is_none() && !quoted;
        if first && header {
            first = false;
            continue;
        }
        first = false;
        if !empty_line {
            rows.push((start_line, fields));
        }
    }
    Ok(rows)
}

fn csv_value(field: String, quoted: bool, null: &str) -> Option<String> {
    if !quoted && field == null {
        None
    } else {
        Some(field)
    }
}

fn rows_to_batch(rows: &[Row], copy: &CopyIn) -> EngineResult<RecordBatch> {
    let schema: &SchemaRef = copy.table.schema();
    let width = copy.columns.len();
    for (line, fields) in rows {
        if fields.len() != width {
            return Err(EngineError::InvalidInput(format!(
                "COPY {}: line {line} has {} column(s), expected {width}",
                copy.table_name,
                fields.len()
            )));
        }
    }
    let mut arrays: Vec<Option<ArrayRef>> = vec![None; schema.fields().len()];
    let strict = CastOptions {
        safe: false,
        ..Default::default()
    };
    for (data_index, &table_index) in copy.columns.iter().enumerate() {
        let field = schema.field(table_index);
        let strings = StringArray::from(
            rows.iter()
                .map(|(_, f)| f[data_index].as_deref())
                .collect::<Vec<_>>(),
        );
        let array = match cast_with_options(&strings, field.data_type(), &strict) {
            Ok(a) => a,
            Err(_) => {
                // Find the first value that does not convert, for the message.
                let bad = rows.iter().find(|(_, f)| {
                    f[data_index].as_deref().is_some_and(|v| {
                        cast_with_options(&StringArray::from(vec![v]), field.data_type(), &strict)
                            .is_err()
                    })
                });
                let (line, value) = bad
                    .map(|(l, f)| (*l, f[data_index].clone().unwrap_or_default()))
                    .unwrap_or_default();
                return Err(EngineError::InvalidInput(format!(
                    "invalid input syntax for type {}: \"{value}\" (COPY {}, line {line}, column {})",
                    field.data_type(),
                    copy.table_name,
                    field.name()
                )));
            }
        };
        if !field.is_nullable() && array.null_count() > 0 {
            return Err(EngineError::NotNullViolation(field.name().clone()));
        }
        arrays[table_index] = Some(array);
    }
    assemble(copy, arrays, rows.len())
}

/// The table's batch from the data columns: columns the COPY did not name are NULL, and no
/// NOT NULL column may hold a NULL.
fn assemble(
    copy: &CopyIn,
    arrays: Vec<Option<ArrayRef>>,
    num_rows: usize,
) -> EngineResult<RecordBatch> {
    let schema = copy.table.schema();
    let columns = schema
        .fields()
        .iter()
        .zip(arrays)
        .map(|(f, a)| match a {
            Some(a) if !f.is_nullable() && a.null_count() > 0 => {
                Err(EngineError::NotNullViolation(f.name().clone()))
            }
            Some(a) => Ok(a),
            None if f.is_nullable() => Ok(new_null_array(f.data_type(), num_rows)),
            None => Err(EngineError::NotNullViolation(f.name().clone())),
        })
        .collect::<EngineResult<Vec<_>>>()?;
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(num_rows)),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_escapes_and_nulls() {
        let rows = parse_text("a\\tb\t\\N\nc\t2\n\\.\n", '\t', "\\N").unwrap();
        assert_eq!(
            rows,
            vec![
                (1, vec![Some("a\tb".to_string()), None]),
                (2, vec![Some("c".to_string()), Some("2".to_string())]),
            ]
        );
    }

    #[test]
    fn csv_quotes_header_and_empty() {
        let rows = parse_csv("h1,h2\n\"x,\"\"y\"\"\",\n\"\",3\n", ',', "", true, '"').unwrap();
        assert_eq!(
            rows,
            vec![
                (2, vec![Some("x,\"y\"".to_string()), None]),
                (3, vec![Some(String::new()), Some("3".to_string())]),
            ]
        );
    }
}
