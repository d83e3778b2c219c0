//! An updating query's changelog as keyed upserts, for the `upsert-kafka` sink.
//!
//! A topic read as a table keeps, per key, the value of the key's last message; a message with
//! a null value (a tombstone) deletes the key. So each change of a batch becomes: `+` a message
//! with its key and value, `-` a tombstone of its key. Only each key's last change in the batch
//! is written, at the position of that change: an update, which the engine emits as the old
//! row's `-` immediately followed by the new row's `+` in the same batch, becomes one message
//! with the new value, and a `-` that no `+` of the same key follows in the batch (a deleted
//! group, or one a `HAVING` no longer keeps) becomes a tombstone. Earlier values of a key in
//! the batch are superseded and never written.
//!
//! The key is the message key's bytes, so rows whose `key.fields` are equal are one key: the
//! key must identify a row of the result (the query's `GROUP BY` columns), as Flink's PRIMARY
//! KEY does.

use std::collections::HashMap;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::record_batch::RecordBatch;
use eddy_engine::connector::{ConnectorError, ConnectorResult};

/// What to write for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upsert {
    /// The row's value under its key.
    Value(usize),
    /// A tombstone for the key of this row.
    Delete(usize),
}

/// Splits a changelog batch (a leading `op` column, then the rows) into its ops and rows.
pub(crate) fn split_changelog(batch: &RecordBatch) -> ConnectorResult<(Vec<bool>, RecordBatch)> {
    let ops = batch
        .columns()
        .first()
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| ConnectorError::Io("a changelog batch without its op column".to_string()))?;
    let inserts = (0..ops.len())
        .map(|i| match (ops.is_valid(i), ops.value(i)) {
            (true, "+") => Ok(true),
            (true, "-") => Ok(false),
            _ => Err(ConnectorError::Io(format!(
                "a changelog row with op '{}' (expected '+' or '-')",
                ops.value(i)
            ))),
        })
        .collect::<ConnectorResult<Vec<bool>>>()?;
    let rows = batch.project(&(1..batch.num_columns()).collect::<Vec<_>>())?;
    Ok((inserts, rows))
}

/// The messages for a batch whose row `i` has key `keys[i]` and is an insert when
/// `inserts[i]` (every row is, for an append-only input): each key's last change, in the
/// order of those last changes.
pub(crate) fn last_change_per_key(keys: &[&[u8]], inserts: &[bool]) -> Vec<Upsert> {
    let mut last: HashMap<&[u8], usize> = HashMap::with_capacity(keys.len());
    for (row, key) in keys.iter().enumerate() {
        last.insert(key, row);
    }
    keys.iter()
        .enumerate()
        .filter(|(row, key)| last.get(**key) == Some(row))
        .map(|(row, _)| {
            if inserts[row] {
                Upsert::Value(row)
            } else {
                Upsert::Delete(row)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};

    use super::*;

    fn keys<'a>(names: &[&'a str]) -> Vec<&'a [u8]> {
        names.iter().map(|k| k.as_bytes()).collect()
    }

    #[test]
    fn an_update_is_one_message_and_a_lone_delete_a_tombstone() {
        // a: updated (- then +); b: new; c: deleted; d: inserted, updated twice.
        let keys = keys(&["a", "a", "b", "c", "d", "d", "d", "d", "d"]);
        let inserts = [false, true, true, false, true, false, true, false, true];
        assert_eq!(
            last_change_per_key(&keys, &inserts),
            vec![
                Upsert::Value(1),
                Upsert::Value(2),
                Upsert::Delete(3),
                Upsert::Value(8)
            ]
        );
        // A group a HAVING stops keeping: its `-` alone.
        assert_eq!(
            last_change_per_key(&keys[..1], &inserts[..1]),
            vec![Upsert::Delete(0)]
        );
        // Append-only rows: the last row of each key.
        assert_eq!(
            last_change_per_key(&self::keys(&["x", "y", "x"]), &[true, true, true]),
            vec![Upsert::Value(1), Upsert::Value(2)]
        );
    }

    #[test]
    fn a_changelog_batch_splits_into_ops_and_rows() {
        let batch = RecordBatch::try_from_iter([
            (
                "__op",
                Arc::new(StringArray::from(vec!["-", "+"])) as ArrayRef,
            ),
            ("n", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
        ])
        .unwrap();
        let (inserts, rows) = split_changelog(&batch).unwrap();
        assert_eq!(inserts, vec![false, true]);
        assert_eq!(rows.num_columns(), 1);
        assert_eq!(rows.schema().field(0).name(), "n");

        let bad = RecordBatch::try_from_iter([(
            "__op",
            Arc::new(StringArray::from(vec!["*"])) as ArrayRef,
        )])
        .unwrap();
        assert!(split_changelog(&bad).is_err());
    }
}
