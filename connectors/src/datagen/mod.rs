//! The `datagen` source (Flink's): rows of random or sequential values for the declared
//! columns, at a given rate, bounded or not.
//!
//! ```sql
//! CREATE SOURCE orders (id BIGINT, amount DOUBLE, customer VARCHAR, ts TIMESTAMP(3),
//!   WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
//! WITH (connector = 'datagen', rows-per-second = '100', number-of-rows = '1000',
//!       fields.id.kind = 'sequence', fields.id.start = '1', fields.id.end = '1000',
//!       fields.amount.min = '1', fields.amount.max = '500', fields.customer.length = '8');
//! ```
//!
//! Options ([`options`]): `rows-per-second` (default 10000; Eddy's `0` is as fast as possible),
//! `number-of-rows` (the source ends after them; without it and without a sequence column the
//! source is unbounded), `seed` (an Eddy option, default 0), and per column
//! `fields.<column>.kind` = `random` (default) or `sequence`, with `min`/`max` (numbers;
//! default the type's range for integers, 0 to 1 for other numbers), `length` (strings and
//! BYTEA, default 100), `max-past` (timestamps and dates: up to that long before the wall
//! clock; default 0, the wall clock itself), `start`/`end` (sequences: integers, or strings of
//! the numbers), `null-rate` (0 to 1).
//!
//! Row `n` of the source is a function of the seed and `n` alone (timestamps also of the wall
//! clock, as in Flink): the source splits over parallel readers, reader `i` of `k` making rows
//! `i`, `i + k`, ... at `1/k` of the rate, and a reader restored from a checkpoint continues at
//! its next row.

pub mod options;

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, StringArray,
    TimestampNanosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use eddy_engine::connector::{
    ConnectorOptions, ConnectorResult, SourceConnector, SourceContext, SourceReader,
};
use futures::StreamExt;
use tokio::time::Instant;

use self::options::{DatagenOptions, FieldKind, FieldSpec, is_text};
use crate::nexmark::random::Rng;

/// Longest time a paced reader holds back rows that are due.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// The `datagen` source connector.
#[derive(Debug, Clone, Copy, Default)]
pub struct DatagenConnector;

impl SourceConnector for DatagenConnector {
    fn name(&self) -> &'static str {
        "datagen"
    }

    fn validate(&self, schema: &SchemaRef, options: &ConnectorOptions) -> ConnectorResult<()> {
        if schema.fields().is_empty() {
            return Err(eddy_engine::connector::ConnectorError::InvalidOption(
                "a datagen source needs its columns declared".to_string(),
            ));
        }
        DatagenOptions::parse(options, schema).map(|_| ())
    }

    fn splittable(&self, _options: &ConnectorOptions) -> bool {
        true
    }

    fn open(&self, ctx: SourceContext) -> ConnectorResult<SourceReader> {
        let options = DatagenOptions::parse(&ctx.options, &ctx.schema)?;
        let columns: Vec<usize> = match &ctx.projection {
            Some(p) => p.clone(),
            None => (0..ctx.schema.fields().len()).collect(),
        };
        let output = ctx.output_schema()?;
        let split = ctx.split;
        let count = split.count.max(1) as u64;
        let total = options.total_rows();
        // This reader's rows: `index`, `index + count`, ... below the total.
        let rows = total.map(|t| t.saturating_sub(split.index as u64).div_ceil(count));
        let reader = Reader {
            rate: options
                .rows_per_second
                .map(|r| (r as f64 / count as f64).max(f64::MIN_POSITIVE)),
            options,
            columns,
            output,
            index: split.index as u64,
            count,
            next: ctx.start_row,
            end: rows,
            batch_size: ctx.batch_size.max(1),
            started: None,
            last_batch: None,
            metrics: ctx.metrics,
        };
        let stream = futures::stream::unfold(reader, |mut reader| async move {
            let batch = reader.next_batch().await?;
            Some((batch, reader))
        })
        .boxed();
        Ok(SourceReader {
            stream,
            bounded: rows.is_some(),
            position: None,
            partitions: None,
        })
    }
}

struct Reader {
    options: DatagenOptions,
    /// The declared columns the query reads, in output order.
    columns: Vec<usize>,
    output: SchemaRef,
    index: u64,
    count: u64,
    /// The next row of this reader (0: its first).
    next: u64,
    /// This reader's number of rows, if the source ends.
    end: Option<u64>,
    /// Rows per second of this reader (`None`: unpaced).
    rate: Option<f64>,
    batch_size: usize,
    /// When pacing started, and the row it started at.
    started: Option<(Instant, u64)>,
    /// When the last batch went out (paced readers).
    last_batch: Option<Instant>,
    metrics: Arc<eddy_engine::connector::SourceMetrics>,
}

impl Reader {
    async fn next_batch(&mut self) -> Option<ConnectorResult<RecordBatch>> {
        let left = self
            .end
            .map_or(u64::MAX, |end| end.saturating_sub(self.next));
        if left == 0 {
            return None;
        }
        let mut rows = left.min(self.batch_size as u64);
        if let Some(rate) = self.rate {
            let (since, first) = *self.started.get_or_insert((Instant::now(), self.next));
            let last = *self.last_batch.get_or_insert_with(Instant::now);
            loop {
                // Rows due so far: the first at once, then one every 1/rate seconds.
                let due = (since.elapsed().as_secs_f64() * rate) as u64 + 1;
                let ready = (first + due).saturating_sub(self.next).min(rows);
                // A full batch, or whatever is due once the flush interval has passed.
                if ready >= rows || (ready > 0 && last.elapsed() >= FLUSH_INTERVAL) {
                    rows = ready;
                    break;
                }
                let full_at = (self.next + rows - first) as f64 / rate;
                let until_full = (full_at - since.elapsed().as_secs_f64()).max(0.001);
                let until_flush = FLUSH_INTERVAL.saturating_sub(last.elapsed()).as_secs_f64();
                let wait = until_full.min(until_flush.max(0.001));
                tokio::time::sleep(Duration::from_secs_f64(wait)).await;
            }
            self.last_batch = Some(Instant::now());
        }
        let first = self.next;
        self.next += rows;
        let result = self.generate(first, rows);
        if let Ok(batch) = &result {
            self.metrics.add_rows(batch.num_rows() as u64);
        }
        Some(result)
    }

    /// Rows `first..first + rows` of this reader.
    fn generate(&self, first: u64, rows: u64) -> ConnectorResult<RecordBatch> {
        let numbers: Vec<u64> = (first..first + rows)
            .map(|r| self.index + r * self.count)
            .collect();
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let columns = self
            .columns
            .iter()
            .zip(self.output.fields())
            .map(|(&c, field)| {
                column(
                    &self.options.fields[c],
                    field.data_type(),
                    self.options.seed ^ (c as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                    &numbers,
                    now,
                )
            })
            .collect::<ConnectorResult<Vec<_>>>()?;
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.output),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(numbers.len())),
        )?)
    }
}

/// The integer range of `data_type` (capped to BIGINT's).
fn integer_range(data_type: &DataType) -> (i64, i64) {
    match data_type {
        DataType::Int8 => (i8::MIN.into(), i8::MAX.into()),
        DataType::Int16 => (i16::MIN.into(), i16::MAX.into()),
        DataType::Int32 => (i32::MIN.into(), i32::MAX.into()),
        DataType::UInt8 => (0, u8::MAX.into()),
        DataType::UInt16 => (0, u16::MAX.into()),
        DataType::UInt32 => (0, u32::MAX.into()),
        DataType::UInt64 => (0, i64::MAX),
        _ => (i64::MIN, i64::MAX),
    }
}

/// One column's values for the source's rows `numbers`, as `data_type`.
fn column(
    spec: &FieldSpec,
    data_type: &DataType,
    seed: u64,
    numbers: &[u64],
    now: i64,
) -> ConnectorResult<ArrayRef> {
    // Each row's stream: its null draw first, then its value's draws.
    let mut streams: Vec<(Rng, bool)> = numbers
        .iter()
        .map(|&n| {
            let mut rng = Rng::for_event(seed, n);
            let null = rng.unit_f64() < spec.null_rate;
            (rng, null)
        })
        .collect();
    let natural: ArrayRef = match &spec.kind {
        FieldKind::Sequence { start, .. } => {
            let values = numbers
                .iter()
                .zip(&streams)
                .map(|(&n, (_, null))| (!null).then(|| start.saturating_add(n as i64)));
            if is_text(data_type) {
                Arc::new(StringArray::from_iter(
                    values.map(|v| v.map(|v| v.to_string())),
                ))
            } else {
                Arc::new(Int64Array::from_iter(values))
            }
        }
        FieldKind::Random {
            min,
            max,
            length,
            max_past,
        } => {
            let values = streams
                .iter_mut()
                .map(|(rng, null)| (!*null).then_some(rng));
            if data_type.is_integer() {
                let (lo, hi) = integer_range(data_type);
                let lo = min.map_or(lo, |m| (m.ceil() as i64).max(lo));
                let hi = max.map_or(hi, |m| (m.floor() as i64).min(hi));
                let span = (i128::from(hi) - i128::from(lo) + 1) as u128;
                Arc::new(Int64Array::from_iter(values.map(|rng| {
                    rng.map(|rng| {
                        let draw = u128::from(rng.next_u64());
                        (i128::from(lo) + ((draw * span) >> 64) as i128) as i64
                    })
                })))
            } else if data_type.is_floating() || matches!(data_type, DataType::Decimal128(..)) {
                let (lo, hi) = (min.unwrap_or(0.0), max.unwrap_or(1.0));
                Arc::new(Float64Array::from_iter(
                    values.map(|rng| rng.map(|rng| lo + rng.unit_f64() * (hi - lo))),
                ))
            } else if is_text(data_type) {
                const HEX: &[u8] = b"0123456789abcdef";
                Arc::new(StringArray::from_iter(values.map(|rng| {
                    rng.map(|rng| {
                        (0..*length)
                            .map(|_| HEX[rng.below(16) as usize] as char)
                            .collect::<String>()
                    })
                })))
            } else if matches!(data_type, DataType::Binary) {
                Arc::new(BinaryArray::from_iter(values.map(|rng| {
                    rng.map(|rng| {
                        (0..*length)
                            .map(|_| rng.below(256) as u8)
                            .collect::<Vec<_>>()
                    })
                })))
            } else if matches!(data_type, DataType::Boolean) {
                Arc::new(BooleanArray::from_iter(
                    values.map(|rng| rng.map(|rng| rng.below(2) == 1)),
                ))
            } else {
                // Timestamps and dates: up to `max_past` before now.
                let past = max_past.as_nanos().min(i64::MAX as u128) as u64;
                Arc::new(TimestampNanosecondArray::from_iter(values.map(|rng| {
                    rng.map(|rng| now - rng.below(past.saturating_add(1)) as i64)
                })))
            }
        }
    };
    let target = match data_type {
        // A timestamp is made in nanoseconds without a zone: the declared unit and zone next.
        DataType::Timestamp(_, Some(_)) if natural.data_type() != data_type => {
            let utc = cast(
                &natural,
                &DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            )?;
            return Ok(cast(&utc, data_type)?);
        }
        other => other,
    };
    Ok(cast(&natural, target)?)
}

#[cfg(test)]
mod tests;
