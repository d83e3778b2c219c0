//! The `eddy_dead_letters` system table: the malformed rows of sources with
//! `format.on-error = 'dead-letter'`.
//!
//! One append-only [`TableLog`] per engine, opened on first use (a read or a dead letter) and,
//! with a data directory, kept at `<data-dir>/system/dead_letters.arrows`, synced on every
//! append like a push table. Each row says which job (a view's or sink's name, or an ad-hoc
//! query's text) read which source, where the bad row was, why it was refused, what it was
//! (`raw`, as text: bytes that are not UTF-8 are replaced by U+FFFD, and text past
//! [`MAX_RAW_BYTES`] is cut) and when it was recorded. `recorded_at` only grows (it is taken
//! under the table's lock and never goes back with the clock), and it is the table's watermark
//! column, so a window over the table never sees a late row.
//!
//! Only the engine writes it. A batch `SELECT` reads the rows recorded so far; a continuous
//! query (`COPY (SELECT ...) TO STDOUT`, a materialized view) follows it as it grows, as it
//! does a materialized view.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{ArrayRef, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;

use crate::catalog::{RelationDef, RelationKind, WatermarkSpec};
use crate::connector::{ConnectorError, ConnectorResult, DeadLetterSink, MalformedRow};
use crate::error::EngineResult;
use crate::table::TableLog;

/// The name of the system table.
pub const DEAD_LETTERS_TABLE: &str = "eddy_dead_letters";

/// The longest `raw` text kept; a longer row is cut there (at a character boundary) and
/// marked with `...`.
pub const MAX_RAW_BYTES: usize = 64 * 1024;

/// The columns of `eddy_dead_letters`.
pub fn dead_letters_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("job", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("raw", DataType::Utf8, true),
        Field::new("error", DataType::Utf8, false),
        Field::new("position", DataType::Utf8, false),
        Field::new(
            "recorded_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]))
}

/// The dead-letter table of one engine.
#[derive(Debug)]
pub struct DeadLetters {
    data_dir: Option<PathBuf>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    relation: Option<Arc<RelationDef>>,
    /// The last `recorded_at` written (microseconds since the epoch).
    last_recorded: i64,
}

impl DeadLetters {
    /// The table of an engine whose data directory is `data_dir` (`None`: in memory only).
    pub fn new(data_dir: Option<PathBuf>) -> Self {
        Self {
            data_dir,
            state: Mutex::default(),
        }
    }

    /// The table as a relation queries read (a push table marked `system`), opened (and its
    /// file loaded) on first use.
    pub fn relation(&self) -> EngineResult<Arc<RelationDef>> {
        let mut state = self.lock();
        Self::opened(&mut state, self.data_dir.as_ref())
    }

    fn opened(state: &mut State, data_dir: Option<&PathBuf>) -> EngineResult<Arc<RelationDef>> {
        if let Some(relation) = &state.relation {
            return Ok(Arc::clone(relation));
        }
        let schema = dead_letters_schema();
        let table = match data_dir {
            Some(dir) => TableLog::open(
                Arc::clone(&schema),
                &dir.join("system").join("dead_letters.arrows"),
            )?,
            None => TableLog::in_memory(Arc::clone(&schema)),
        };
        let relation = Arc::new(RelationDef {
            name: DEAD_LETTERS_TABLE.to_string(),
            kind: RelationKind::Table,
            schema,
            watermark: Some(WatermarkSpec {
                column: "recorded_at".to_string(),
                expr_sql: "recorded_at".to_string(),
            }),
            connector: None,
            options: Default::default(),
            metadata: Vec::new(),
            primary_key: Vec::new(),
            upsert: false,
            ddl: format!(
                "CREATE TABLE {DEAD_LETTERS_TABLE} (job VARCHAR NOT NULL, source VARCHAR NOT \
                 NULL, raw VARCHAR, error VARCHAR NOT NULL, position VARCHAR NOT NULL, \
                 recorded_at TIMESTAMP WITH TIME ZONE NOT NULL)"
            ),
            table: Some(Arc::new(table)),
            view: None,
            depends_on: Vec::new(),
            query: None,
            system: true,
        });
        state.relation = Some(Arc::clone(&relation));
        Ok(relation)
    }

    /// The dead-letter sink of one job (or ad-hoc query) named `job`.
    pub fn sink(self: &Arc<Self>, job: &str) -> Arc<dyn DeadLetterSink> {
        Arc::new(JobDeadLetters {
            job: job.to_string(),
            letters: Arc::clone(self),
        })
    }

    /// Appends the malformed rows of `source` read by `job`, synced to disk when the table has
    /// a file.
    pub fn append(&self, job: &str, source: &str, rows: Vec<MalformedRow>) -> EngineResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut state = self.lock();
        let relation = Self::opened(&mut state, self.data_dir.as_ref())?;
        let Some(table) = &relation.table else {
            return Err(crate::error::EngineError::Internal(
                "the dead-letter table has no rows".to_string(),
            ));
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        let recorded = now.max(state.last_recorded);
        state.last_recorded = recorded;
        let n = rows.len();
        let mut raws = Vec::with_capacity(n);
        let mut errors = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        for row in rows {
            raws.push(row.raw.as_deref().map(raw_text));
            errors.push(row.reason);
            positions.push(row.position);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![job; n])),
            Arc::new(StringArray::from(vec![source; n])),
            Arc::new(StringArray::from(raws)),
            Arc::new(StringArray::from(errors)),
            Arc::new(StringArray::from(positions)),
            Arc::new(TimestampMicrosecondArray::from(vec![recorded; n]).with_timezone("UTC")),
        ];
        // Under the lock: rows reach the table in the order of their `recorded_at`.
        table.append(RecordBatch::try_new(dead_letters_schema(), columns)?)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A row's bytes as the `raw` text: invalid UTF-8 replaced, cut at [`MAX_RAW_BYTES`].
fn raw_text(bytes: &[u8]) -> String {
    let cut = bytes.len() > MAX_RAW_BYTES;
    let mut text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_RAW_BYTES)]).into_owned();
    if cut {
        // The cut may have split a character, which the lossy decoding shows as U+FFFD.
        if text.ends_with('\u{FFFD}') {
            text.pop();
        }
        text.push_str("...");
    }
    text
}

/// The dead letters of one job, appended to the engine's table.
#[derive(Debug)]
struct JobDeadLetters {
    job: String,
    letters: Arc<DeadLetters>,
}

impl DeadLetterSink for JobDeadLetters {
    fn append(&self, source: &str, rows: Vec<MalformedRow>) -> ConnectorResult<()> {
        crate::runtime::blocking(|| self.letters.append(&self.job, source, rows)).map_err(|e| {
            ConnectorError::Io(format!(
                "cannot record dead letters of source \"{source}\": {e}"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::util::pretty::pretty_format_batches;

    use super::*;

    fn row(position: &str, raw: Option<&[u8]>) -> MalformedRow {
        MalformedRow {
            position: position.to_string(),
            reason: "bad".to_string(),
            raw: raw.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn rows_are_appended_in_order_with_lossy_raw_text() {
        let letters = Arc::new(DeadLetters::new(None));
        let sink = letters.sink("v");
        sink.append("s", vec![row("f.csv:2", Some(b"a,\xff"))])
            .unwrap();
        sink.append("s", vec![row("t/0@7", None), row("f.csv:9", Some(b"x"))])
            .unwrap();
        let relation = letters.relation().unwrap();
        assert!(relation.system);
        let table = relation.table.as_ref().unwrap();
        let batches = table.batches_from(0);
        let text = pretty_format_batches(&batches).unwrap().to_string();
        assert!(
            text.contains("| v   | s      | a,\u{FFFD} | bad   | f.csv:2  |"),
            "{text}"
        );
        assert!(text.contains("|     | bad   | t/0@7    |"), "{text}");
        let times: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                b.column(5)
                    .as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    }

    #[test]
    fn long_raw_rows_are_cut() {
        let long = "é".repeat(MAX_RAW_BYTES);
        let text = raw_text(long.as_bytes());
        assert!(text.ends_with("...") && text.len() <= MAX_RAW_BYTES + 3);
        assert!(!text.contains('\u{FFFD}'));
        assert_eq!(raw_text(b"short"), "short");
    }

    #[test]
    fn the_table_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("eddy-dead-letters-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let letters = DeadLetters::new(Some(dir.clone()));
            letters
                .append("j", "s", vec![row("f:1", Some(b"x"))])
                .unwrap();
        }
        let letters = DeadLetters::new(Some(dir.clone()));
        let relation = letters.relation().unwrap();
        assert_eq!(relation.table.as_ref().unwrap().num_rows(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
