//! `RetractableExtreme`: `min` and `max` over a changelog, whose rows may be retracted in any
//! order.
//!
//! DataFusion's own retractable min/max (the sliding accumulators of window frames) assume
//! rows leave in the order they came, which a changelog does not promise. This accumulator
//! keeps every distinct non-NULL value with how many rows hold it, ordered (Arrow's row format,
//! whose bytes sort as the values do), so the extreme is the first or last entry whatever was
//! retracted. Its state (for checkpoints) is two lists: the distinct values and their counts.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::utils::SingleRowListArrayBuilder;
use datafusion::common::{Result, ScalarValue, internal_err};
use datafusion::logical_expr::Accumulator;

/// `min` or `max` of one group, over rows that may be retracted.
#[derive(Debug)]
pub struct RetractableExtreme {
    data_type: DataType,
    max: bool,
    converter: RowConverter,
    /// Each distinct value (row format) and how many rows hold it.
    counts: BTreeMap<Box<[u8]>, i64>,
}

impl RetractableExtreme {
    /// `max` when `max`, else `min`, of values of `data_type`.
    pub fn try_new(data_type: &DataType, max: bool) -> Result<Self> {
        Ok(Self {
            data_type: data_type.clone(),
            max,
            converter: RowConverter::new(vec![SortField::new(data_type.clone())])?,
            counts: BTreeMap::new(),
        })
    }

    /// Adds `by` (1 or -1) to the count of each non-NULL value of `values`, `times[i]` times.
    fn add(&mut self, values: &ArrayRef, by: i64, times: Option<&Int64Array>) -> Result<()> {
        let rows = self.converter.convert_columns(&[Arc::clone(values)])?;
        for i in 0..values.len() {
            if values.is_null(i) {
                continue;
            }
            let n = by * times.map_or(1, |t| t.value(i));
            let row = rows.row(i);
            let key = row.as_ref();
            let count = match self.counts.get_mut(key) {
                Some(count) => count,
                None => self.counts.entry(key.into()).or_insert(0),
            };
            *count += n;
            if *count <= 0 {
                self.counts.remove(key);
            }
        }
        Ok(())
    }

    /// The distinct values, in order.
    fn values(&self) -> Result<ArrayRef> {
        let parser = self.converter.parser();
        let rows = self.counts.keys().map(|k| parser.parse(k));
        let mut columns = self.converter.convert_rows(rows)?;
        Ok(columns.remove(0))
    }
}

impl Accumulator for RetractableExtreme {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.add(&values[0], 1, None)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.add(&values[0], -1, None)
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let key = if self.max {
            self.counts.keys().next_back()
        } else {
            self.counts.keys().next()
        };
        let Some(key) = key else {
            return ScalarValue::try_from(&self.data_type);
        };
        let parser = self.converter.parser();
        let column = self.converter.convert_rows([parser.parse(key)])?;
        ScalarValue::try_from_array(&column[0], 0)
    }

    /// The distinct values and their counts, as two lists.
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let counts: ArrayRef =
            Arc::new(Int64Array::from_iter_values(self.counts.values().copied()));
        Ok(vec![
            ScalarValue::List(Arc::new(
                SingleRowListArrayBuilder::new(self.values()?).build_list_array(),
            )),
            ScalarValue::List(Arc::new(
                SingleRowListArrayBuilder::new(counts).build_list_array(),
            )),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (Some(values), Some(counts)) = (
            states[0].as_list_opt::<i32>(),
            states[1].as_list_opt::<i32>(),
        ) else {
            return internal_err!("the state of a retractable min/max is not two lists");
        };
        for row in 0..values.len() {
            if values.is_null(row) || counts.is_null(row) {
                continue;
            }
            let times = counts.value(row);
            let Some(times) = times.as_primitive_opt::<Int64Type>() else {
                return internal_err!("the counts of a retractable min/max are not BIGINT");
            };
            self.add(&values.value(row), 1, Some(times))?;
        }
        Ok(())
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self
                .counts
                .keys()
                .map(|k| k.len() + std::mem::size_of::<i64>() + 32)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;

    use super::*;

    fn values(v: &[Option<i64>]) -> Vec<ArrayRef> {
        vec![Arc::new(Int64Array::from(v.to_vec()))]
    }

    #[test]
    fn the_extreme_follows_retractions_in_any_order() {
        let mut max = RetractableExtreme::try_new(&DataType::Int64, true).unwrap();
        let mut min = RetractableExtreme::try_new(&DataType::Int64, false).unwrap();
        for a in [&mut max, &mut min] {
            assert_eq!(a.evaluate().unwrap(), ScalarValue::Int64(None));
            a.update_batch(&values(&[Some(5), Some(9), None, Some(9), Some(1)]))
                .unwrap();
        }
        assert_eq!(max.evaluate().unwrap(), ScalarValue::Int64(Some(9)));
        assert_eq!(min.evaluate().unwrap(), ScalarValue::Int64(Some(1)));
        // One 9 of two goes: still 9. The 1 (the oldest but one) goes: min moves to 5.
        max.retract_batch(&values(&[Some(9)])).unwrap();
        min.retract_batch(&values(&[Some(1)])).unwrap();
        assert_eq!(max.evaluate().unwrap(), ScalarValue::Int64(Some(9)));
        assert_eq!(min.evaluate().unwrap(), ScalarValue::Int64(Some(5)));
        max.retract_batch(&values(&[Some(9)])).unwrap();
        assert_eq!(max.evaluate().unwrap(), ScalarValue::Int64(Some(5)));
    }

    #[test]
    fn the_state_rebuilds_the_counts() {
        let mut max = RetractableExtreme::try_new(&DataType::Int64, true).unwrap();
        max.update_batch(&values(&[Some(3), Some(7), Some(7)]))
            .unwrap();
        let state = max.state().unwrap();
        let arrays: Vec<ArrayRef> = state.iter().map(|s| s.to_array().unwrap()).collect();
        let mut restored = RetractableExtreme::try_new(&DataType::Int64, true).unwrap();
        restored.merge_batch(&arrays).unwrap();
        restored.retract_batch(&values(&[Some(7)])).unwrap();
        assert_eq!(restored.evaluate().unwrap(), ScalarValue::Int64(Some(7)));
        restored.retract_batch(&values(&[Some(7)])).unwrap();
        assert_eq!(restored.evaluate().unwrap(), ScalarValue::Int64(Some(3)));
    }
}
