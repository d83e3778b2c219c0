//! `WindowAssignOperator`: the TUMBLE, HOP and CUMULATE table functions.
//!
//! Appends `window_start`, `window_end` and `window_time` (= end - 1 ms) to each row, copying a
//! row once per window that holds it. When the operator feeds a window aggregate directly it
//! runs in *slice* mode: each row is tagged once with its slice instead (the aggregate builds
//! windows from slices). Rows whose time is NULL belong to no window and are skipped.
//! Stateless; emits final rows; forwards watermarks unchanged.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, UInt32Array};
use datafusion::arrow::compute::{cast, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::arrow::record_batch::RecordBatch;

use super::{Operator, OperatorContext, OperatorInfo};
use crate::error::{EngineError, EngineResult};
use crate::operators::window::{MILLISECOND, Span, WindowKind, unit_nanos};

pub struct WindowAssignOperator {
    info: OperatorInfo,
    kind: WindowKind,
    time_index: usize,
    /// Nanoseconds per unit of the time column.
    time_unit_ns: i64,
    /// The type of the window columns, and nanoseconds per unit of it.
    window_type: DataType,
    window_unit_ns: i64,
    slices: bool,
}

impl WindowAssignOperator {
    pub fn try_new(
        info: OperatorInfo,
        kind: WindowKind,
        time_index: usize,
        time_type: &DataType,
        slices: bool,
    ) -> EngineResult<Self> {
        let window_type = info
            .schema
            .field(info.schema.fields().len() - 1)
            .data_type()
            .clone();
        let (DataType::Timestamp(time_unit, _), DataType::Timestamp(window_unit, _)) =
            (time_type, &window_type)
        else {
            return Err(EngineError::Internal(format!(
                "window over a {time_type} column"
            )));
        };
        Ok(Self {
            time_unit_ns: unit_nanos(*time_unit),
            window_unit_ns: unit_nanos(*window_unit),
            info,
            kind,
            time_index,
            window_type,
            slices,
        })
    }
}

impl Operator for WindowAssignOperator {
    fn info(&self) -> &OperatorInfo {
        &self.info
    }

    fn on_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        let times = cast(batch.column(self.time_index), &DataType::Int64)?;
        let times = times.as_primitive::<Int64Type>();
        let rows = batch.num_rows();
        let mut indices: Vec<u32> = Vec::with_capacity(rows);
        let mut spans: Vec<Span> = Vec::with_capacity(rows);
        for row in 0..rows {
            if times.is_null(row) {
                continue;
            }
            let Some(ts) = times.value(row).checked_mul(self.time_unit_ns) else {
                continue;
            };
            if self.slices {
                if let Some(slice) = self.kind.slice_of(ts) {
                    indices.push(row as u32);
                    spans.push(slice);
                }
            } else {
                for w in self.kind.windows_of(ts) {
                    indices.push(row as u32);
                    spans.push(w);
                }
            }
        }
        let identity =
            indices.len() == rows && indices.iter().enumerate().all(|(i, r)| *r as usize == i);
        let base = if identity {
            batch
        } else {
            take_record_batch(&batch, &UInt32Array::from(indices))?
        };
        let column = |f: &dyn Fn(&Span) -> i64| -> EngineResult<ArrayRef> {
            let values: ArrayRef = Arc::new(Int64Array::from_iter_values(
                spans.iter().map(|s| f(s) / self.window_unit_ns),
            ));
            Ok(cast(&values, &self.window_type)?)
        };
        let mut columns = base.columns().to_vec();
        columns.push(column(&|s| s.start)?);
        columns.push(column(&|s| s.end)?);
        columns.push(column(&|s| s.end - MILLISECOND)?);
        out.batch(RecordBatch::try_new(
            Arc::clone(&self.info.schema),
            columns,
        )?);
        Ok(())
    }
}
