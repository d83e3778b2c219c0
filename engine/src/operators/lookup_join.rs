//! `LookupJoinOperator`: a processing-time lookup join (Flink's `JOIN t FOR SYSTEM_TIME AS OF
//! PROCTIME()`). Each left row joins the rows a push table or materialized view holds when the
//! row is processed, on equal keys; INNER drops a row without a partner, LEFT pads it.
//!
//! The table is not an input: the operator reads it. A push table's rows are all rows inserted
//! so far (it is append-only, without a key); the operator indexes the batches appended since
//! it last looked before each left batch. A materialized view's rows are its current contents
//! (the latest result of an updating view); the operator re-reads them whenever the view's
//! contents changed since it last looked. Output is append-only, rows leave in input order, and
//! watermarks pass unchanged.
//!
//! State: none that a checkpoint holds. The index is a copy of the table, rebuilt from it after
//! a restart. Results depend on when rows are processed, as in Flink: a replay after a restart
//! may join a later version of the table.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array, new_null_array};
use datafusion::arrow::compute::{filter_record_batch, interleave, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;

use super::join_rows::{JoinKind, KeyEncoder, residual_mask};
use super::{Operator, OperatorContext, OperatorInfo, conform_batch};
use crate::error::{EngineError, EngineResult};
use crate::table::TableLog;
use crate::view::ViewStore;

/// The relation a lookup join reads.
pub enum LookupTable {
    Table(Arc<TableLog>),
    View(Arc<ViewStore>),
}

/// What a lookup join computes.
pub struct LookupJoinSpec {
    /// INNER or LEFT.
    pub kind: JoinKind,
    pub left_keys: KeyEncoder,
    /// Every column of the relation.
    pub right_schema: SchemaRef,
    /// Over `right_schema`.
    pub right_keys: KeyEncoder,
    /// The right columns of the output.
    pub right_columns: Vec<usize>,
    /// A condition on the relation's rows, over `right_schema`.
    pub right_filter: Option<Arc<dyn PhysicalExpr>>,
    /// A condition on the joined row, over the output schema.
    pub residual: Option<Arc<dyn PhysicalExpr>>,
}

/// The relation's rows by key.
#[derive(Default)]
struct Index {
    batches: Vec<RecordBatch>,
    rows: HashMap<Box<[u8]>, Vec<(u32, u32)>>,
    /// A table: how many of its batches are indexed; a view: its contents version when read.
    seen: Option<u64>,
}

pub struct LookupJoinOperator {
    info: OperatorInfo,
    spec: LookupJoinSpec,
    table: LookupTable,
    index: Index,
}

impl LookupJoinOperator {
    pub fn try_new(
        info: OperatorInfo,
        spec: LookupJoinSpec,
        table: LookupTable,
    ) -> EngineResult<Self> {
        if !matches!(spec.kind, JoinKind::Inner | JoinKind::Left) {
            return Err(EngineError::Internal(format!(
                "a {} lookup join",
                spec.kind
            )));
        }
        Ok(Self {
            info,
            spec,
            table,
            index: Index::default(),
        })
    }

    /// Indexes `batch`, rows of the relation, keeping those the right filter passes.
    fn add(&mut self, batch: RecordBatch) -> EngineResult<()> {
        let batch = RecordBatch::try_new(
            Arc::clone(&self.spec.right_schema),
            batch.columns().to_vec(),
        )?;
        let batch = match &self.spec.right_filter {
            Some(filter) => filter_record_batch(&batch, &residual_mask(filter, &batch)?)?,
            None => batch,
        };
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let (keys, valid) = self.spec.right_keys.encode(&batch)?;
        let id = self.index.batches.len() as u32;
        for (row, valid) in valid.into_iter().enumerate() {
            if valid {
                self.index
                    .rows
                    .entry(keys.row(row).data().into())
                    .or_default()
                    .push((id, row as u32));
            }
        }
        self.index.batches.push(batch);
        Ok(())
    }

    /// Brings the index up to the relation's current rows.
    fn refresh(&mut self) -> EngineResult<()> {
        match &self.table {
            LookupTable::Table(log) => {
                let seen = self.index.seen.unwrap_or(0);
                let fresh = log.batches_from(seen as usize);
                self.index.seen = Some(seen + fresh.len() as u64);
                for batch in fresh {
                    self.add(batch)?;
                }
            }
            LookupTable::View(view) => {
                let version = view.contents_version();
                if self.index.seen == Some(version) {
                    return Ok(());
                }
                let batches = view.snapshot()?;
                self.index = Index {
                    seen: Some(version),
                    ..Index::default()
                };
                for batch in batches {
                    self.add(batch)?;
                }
            }
        }
        Ok(())
    }

    /// The rows of `pairs` (left row, right row or padding) as output rows.
    fn assemble(
        &self,
        left: &RecordBatch,
        pairs: &[(u32, Option<(u32, u32)>)],
    ) -> EngineResult<RecordBatch> {
        let left_rows = UInt32Array::from_iter_values(pairs.iter().map(|(l, _)| *l));
        let mut columns: Vec<ArrayRef> = left
            .columns()
            .iter()
            .map(|c| Ok(take(c, &left_rows, None)?))
            .collect::<EngineResult<_>>()?;
        let padding = self.index.batches.len();
        let indices: Vec<(usize, usize)> = pairs
            .iter()
            .map(|(_, r)| r.map_or((padding, 0), |(b, r)| (b as usize, r as usize)))
            .collect();
        for &c in &self.spec.right_columns {
            let null = new_null_array(self.spec.right_schema.field(c).data_type(), 1);
            let mut sources: Vec<&dyn Array> = self
                .index
                .batches
                .iter()
                .map(|b| b.column(c).as_ref())
                .collect();
            sources.push(null.as_ref());
            columns.push(interleave(&sources, &indices)?);
        }
        conform_batch(&self.info.schema, columns)
    }
}

impl Operator for LookupJoinOperator {
    fn info(&self) -> &OperatorInfo {
        &self.info
    }

    fn on_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        self.refresh()?;
        let (keys, valid) = self.spec.left_keys.encode(&batch)?;
        let pads = self.spec.kind == JoinKind::Left;
        let mut pairs: Vec<(u32, Option<(u32, u32)>)> = Vec::new();
        for (row, valid) in valid.into_iter().enumerate() {
            let partners = valid
                .then(|| self.index.rows.get(keys.row(row).data()))
                .flatten();
            match partners {
                Some(partners) => pairs.extend(partners.iter().map(|p| (row as u32, Some(*p)))),
                None if pads => pairs.push((row as u32, None)),
                None => {}
            }
        }
        if pairs.is_empty() {
            return Ok(());
        }
        let mut joined = self.assemble(&batch, &pairs)?;
        if let Some(residual) = &self.spec.residual {
            let mask = residual_mask(residual, &joined)?;
            // Per left row, its partners that pass; a LEFT join pads a row with none.
            let mut kept: Vec<(u32, Option<(u32, u32)>)> = Vec::with_capacity(pairs.len());
            let mut i = 0;
            while i < pairs.len() {
                let row = pairs[i].0;
                let start = kept.len();
                while i < pairs.len() && pairs[i].0 == row {
                    if pairs[i].1.is_some() && mask.value(i) {
                        kept.push(pairs[i]);
                    }
                    i += 1;
                }
                if pads && kept.len() == start {
                    kept.push((row, None));
                }
            }
            if kept.is_empty() {
                return Ok(());
            }
            if kept != pairs {
                joined = self.assemble(&batch, &kept)?;
            }
        }
        out.batch(joined);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::physical_expr::expressions::Column;

    use super::*;

    fn dims() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    fn dim_rows(rows: &[(i64, &str)]) -> RecordBatch {
        RecordBatch::try_new(
            dims(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap()
    }

    fn lookup(kind: JoinKind, table: &Arc<TableLog>) -> LookupJoinOperator {
        lookup_in(kind, LookupTable::Table(Arc::clone(table)))
    }

    fn lookup_in(kind: JoinKind, table: LookupTable) -> LookupJoinOperator {
        let left = Schema::new(vec![Field::new("id", DataType::Int64, true)]);
        let output = Arc::new(Schema::new(vec![
            left.field(0).clone(),
            Field::new("name", DataType::Utf8, true),
        ]));
        let key = |name: &str| -> Arc<dyn PhysicalExpr> { Arc::new(Column::new(name, 0)) };
        LookupJoinOperator::try_new(
            OperatorInfo {
                name: "LookupJoin".to_string(),
                schema: output,
            },
            LookupJoinSpec {
                kind,
                left_keys: KeyEncoder::try_new(vec![key("id")], &[DataType::Int64]).unwrap(),
                right_schema: dims(),
                right_keys: KeyEncoder::try_new(vec![key("k")], &[DataType::Int64]).unwrap(),
                right_columns: vec![1],
                right_filter: None,
                residual: None,
            },
            table,
        )
        .unwrap()
    }

    fn ids(ids: &[i64]) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from_iter_values(ids.iter().copied()))],
        )
        .unwrap()
    }

    fn rows(out: &mut OperatorContext) -> Vec<String> {
        let mut rows = Vec::new();
        for message in out.drain() {
            if let crate::runtime::message::Message::Data(b) = message {
                let ids = b.column(0).as_primitive::<Int64Type>();
                let names = b.column(1).as_string::<i32>();
                for r in 0..b.num_rows() {
                    let name = if names.is_valid(r) {
                        names.value(r)
                    } else {
                        "NULL"
                    };
                    rows.push(format!("{}:{name}", ids.value(r)));
                }
            }
        }
        rows
    }

    #[test]
    fn each_row_sees_the_table_as_it_is_when_the_row_arrives() {
        let table = Arc::new(TableLog::in_memory(dims()));
        let mut op = lookup(JoinKind::Left, &table);
        let mut out = OperatorContext::default();
        table.append(dim_rows(&[(1, "one")])).unwrap();
        op.on_batch(0, ids(&[1, 2]), &mut out).unwrap();
        table.append(dim_rows(&[(2, "two"), (1, "uno")])).unwrap();
        op.on_batch(0, ids(&[2, 1, 3]), &mut out).unwrap();
        assert_eq!(
            rows(&mut out),
            ["1:one", "2:NULL", "2:two", "1:one", "1:uno", "3:NULL"]
        );

        let mut inner = lookup(JoinKind::Inner, &table);
        inner.on_batch(0, ids(&[3, 2]), &mut out).unwrap();
        assert_eq!(rows(&mut out), ["2:two"]);
    }

    #[tokio::test]
    async fn a_view_is_read_again_when_its_contents_change() {
        use crate::runtime::message::Message;
        use crate::view::{ViewMode, ViewStore};
        let view = Arc::new(ViewStore::try_new(dims(), ViewMode::Append, None, None).unwrap());
        let mut op = lookup_in(JoinKind::Left, LookupTable::View(Arc::clone(&view)));
        let mut out = OperatorContext::default();
        view.apply(Message::Data(dim_rows(&[(1, "one")])))
            .await
            .unwrap();
        op.on_batch(0, ids(&[1, 2]), &mut out).unwrap();
        // A watermark changes nothing the lookup reads; rows do.
        view.apply(Message::Watermark(5)).await.unwrap();
        view.apply(Message::Data(dim_rows(&[(2, "two")])))
            .await
            .unwrap();
        op.on_batch(0, ids(&[2]), &mut out).unwrap();
        assert_eq!(rows(&mut out), ["1:one", "2:NULL", "2:two"]);
    }
}
