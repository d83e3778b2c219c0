//! Writes the Parquet seed corpus (small files of the types the file source reads), so that
//! it can be rebuilt: `eddy-fuzz make-parquet-seeds sql-tests/fuzz/corpus/parquet`.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::file::properties::WriterProperties;
use eddy_fuzz::FuzzError;

fn batch(rows: usize, with_nulls: bool) -> Result<RecordBatch, FuzzError> {
    let n = |i: usize| !(with_nulls && i % 3 == 1);
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "a",
            Arc::new(Int64Array::from_iter(
                (0..rows).map(|i| n(i).then_some(i as i64 * 7 - 3)),
            )) as ArrayRef,
        ),
        (
            "b",
            Arc::new(StringArray::from_iter(
                (0..rows).map(|i| n(i).then(|| format!("s{i}"))),
            )),
        ),
        (
            "ts",
            Arc::new(TimestampMillisecondArray::from_iter(
                (0..rows).map(|i| n(i).then_some(1_704_067_200_000 + i as i64 * 1000)),
            )),
        ),
        (
            "d",
            Arc::new(Float64Array::from_iter(
                (0..rows).map(|i| n(i).then_some(i as f64 / 4.0)),
            )),
        ),
        (
            "f",
            Arc::new(BooleanArray::from_iter(
                (0..rows).map(|i| n(i).then_some(i % 2 == 0)),
            )),
        ),
    ];
    RecordBatch::try_from_iter(columns).map_err(|e| FuzzError::Usage(e.to_string()))
}

pub fn write_parquet_seeds(dir: &Path) -> Result<crate::driver::Outcome, FuzzError> {
    std::fs::create_dir_all(dir).map_err(|e| FuzzError::io(dir, e))?;
    let cases = [
        ("one_row.parquet", 1, false, 1024, true),
        ("nulls.parquet", 10, true, 1024, true),
        ("row_groups.parquet", 12, false, 4, true),
        ("plain.parquet", 5, false, 1024, false),
    ];
    for (name, rows, nulls, group, dictionary) in cases {
        let path = dir.join(name);
        let file = std::fs::File::create(&path).map_err(|e| FuzzError::io(&path, e))?;
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(group))
            .set_dictionary_enabled(dictionary)
            .build();
        let b = batch(rows, nulls)?;
        let mut writer = ArrowWriter::try_new(file, b.schema(), Some(props))
            .map_err(|e| FuzzError::Usage(e.to_string()))?;
        writer
            .write(&b)
            .map_err(|e| FuzzError::Usage(e.to_string()))?;
        writer
            .close()
            .map_err(|e| FuzzError::Usage(e.to_string()))?;
    }
    Ok(crate::driver::Outcome::Passed)
}
