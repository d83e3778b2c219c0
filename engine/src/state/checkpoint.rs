//! Operator snapshots as bytes: each tagged batch as an Arrow IPC stream of its own (schemas
//! differ between tables), length-prefixed, one after the other. The schema metadata that
//! names a batch's table (and a shared batch's id) travels inside the IPC schema.

use std::io::Cursor;

use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;

use super::{StateSnapshot, corrupt};
use crate::error::EngineResult;

/// The bytes of a snapshot.
pub fn encode(snapshot: &StateSnapshot) -> EngineResult<Vec<u8>> {
    encode_batches(snapshot.batches())
}

/// The bytes of some of a snapshot's batches (a checkpoint writes shared batches apart).
pub fn encode_batches<'a>(
    batches: impl IntoIterator<Item = &'a RecordBatch>,
) -> EngineResult<Vec<u8>> {
    let mut out = Vec::new();
    for batch in batches {
        let mut bytes = Vec::new();
        {
            let mut writer = StreamWriter::try_new(&mut bytes, &batch.schema())?;
            writer.write(batch)?;
            writer.finish()?;
        }
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}

/// A snapshot from the bytes [`encode`] made; anything else is refused.
pub fn decode(bytes: &[u8]) -> EngineResult<StateSnapshot> {
    let mut batches = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<8>()
            .ok_or_else(|| corrupt("a truncated length"))?;
        let len = usize::try_from(u64::from_le_bytes(*len))
            .ok()
            .filter(|l| *l <= tail.len())
            .ok_or_else(|| corrupt("a length beyond the end"))?;
        let reader = StreamReader::try_new(Cursor::new(&tail[..len]), None)
            .map_err(|e| corrupt(e.to_string()))?;
        for batch in reader {
            batches.push(batch.map_err(|e| corrupt(e.to_string()))?);
        }
        rest = &tail[len..];
    }
    Ok(StateSnapshot::from_batches(batches))
}

/// The snapshot as it comes back from a checkpoint: encoded and decoded. Operator tests use
/// it so that what they restore went through the same bytes a restart reads.
pub fn round_trip(snapshot: &StateSnapshot) -> EngineResult<StateSnapshot> {
    decode(&encode(snapshot)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn snapshots_survive_the_bytes_and_torn_bytes_are_refused() {
        let mut s = StateSnapshot::new();
        s.add_values("meta", &[("watermark", Some(7))]).unwrap();
        let rows = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("k", DataType::Int64, false),
                Field::new("v", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a"), None])),
            ],
        )
        .unwrap();
        s.add("rows", rows.clone()).unwrap();
        s.add_shared("segments", 42, rows.clone()).unwrap();
        let bytes = encode(&s).unwrap();
        let back = decode(&bytes).unwrap();
        assert_eq!(back.values("meta").unwrap()["watermark"], Some(7));
        assert_eq!(back.table("rows")[0].columns(), rows.columns());
        let shared = back.shared("segments").unwrap();
        assert_eq!(shared.len(), 1);
        assert_eq!(shared[0].0, 42);
        assert_eq!(shared[0].1.columns(), rows.columns());
        assert!(
            back.shared("rows").unwrap().is_empty(),
            "rows are not shared"
        );
        assert!(decode(&bytes[..bytes.len() - 3]).is_err());
        assert!(decode(&bytes[..5]).is_err());
    }
}
