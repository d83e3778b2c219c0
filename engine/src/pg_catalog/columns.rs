//! A small builder for the in-memory catalog tables: a column at a time, then a `MemTable`.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Int16Array, Int32Array, Int64Array, StringArray,
    new_null_array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use datafusion_pg_catalog::pg_catalog::oid_field::{OID_ALIAS_KEY, kind};

/// The columns of one catalog table, all of the same length.
pub struct Columns {
    rows: usize,
    fields: Vec<Field>,
    arrays: Vec<ArrayRef>,
}

impl Columns {
    pub fn new(rows: usize) -> Self {
        Self {
            rows,
            fields: Vec::new(),
            arrays: Vec::new(),
        }
    }

    fn push(mut self, field: Field, array: ArrayRef) -> Self {
        self.fields.push(field);
        self.arrays.push(array);
        self
    }

    /// An OID column: `Int32`, marked (for the rewrites of `datafusion-pg-catalog`) with the
    /// object kind it refers to.
    pub fn oid(self, name: &str, refers_to: &str, values: Vec<i32>) -> Self {
        let field = Field::new(name, DataType::Int32, false).with_metadata(HashMap::from([(
            OID_ALIAS_KEY.to_string(),
            refers_to.to_string(),
        )]));
        self.push(field, Arc::new(Int32Array::from(values)))
    }

    /// An OID column of the row itself.
    pub fn own_oid(self, values: Vec<i32>) -> Self {
        self.oid("oid", kind::OID, values)
    }

    pub fn int16(self, name: &str, values: Vec<i16>) -> Self {
        self.push(
            Field::new(name, DataType::Int16, false),
            Arc::new(Int16Array::from(values)),
        )
    }

    pub fn int32(self, name: &str, values: Vec<i32>) -> Self {
        self.push(
            Field::new(name, DataType::Int32, false),
            Arc::new(Int32Array::from(values)),
        )
    }

    pub fn int64(self, name: &str, values: Vec<Option<i64>>) -> Self {
        self.push(
            Field::new(name, DataType::Int64, true),
            Arc::new(Int64Array::from(values)),
        )
    }

    pub fn float32(self, name: &str, values: Vec<f32>) -> Self {
        self.push(
            Field::new(name, DataType::Float32, false),
            Arc::new(Float32Array::from(values)),
        )
    }

    pub fn bool(self, name: &str, values: Vec<bool>) -> Self {
        self.push(
            Field::new(name, DataType::Boolean, false),
            Arc::new(BooleanArray::from(values)),
        )
    }

    /// The same value in every row.
    pub fn const_bool(self, name: &str, value: bool) -> Self {
        let n = self.rows;
        self.bool(name, vec![value; n])
    }

    pub fn const_int32(self, name: &str, value: i32) -> Self {
        let n = self.rows;
        self.int32(name, vec![value; n])
    }

    pub fn const_int16(self, name: &str, value: i16) -> Self {
        let n = self.rows;
        self.int16(name, vec![value; n])
    }

    pub fn const_text(self, name: &str, value: &str) -> Self {
        let n = self.rows;
        self.text(name, vec![value.to_string(); n])
    }

    pub fn text(self, name: &str, values: Vec<String>) -> Self {
        self.push(
            Field::new(name, DataType::Utf8, false),
            Arc::new(StringArray::from(values)),
        )
    }

    pub fn opt_text(self, name: &str, values: Vec<Option<String>>) -> Self {
        self.push(
            Field::new(name, DataType::Utf8, true),
            Arc::new(StringArray::from(values)),
        )
    }

    /// A column that is NULL in every row (ACLs, options, values Eddy does not keep).
    pub fn nulls(self, name: &str, data_type: DataType) -> Self {
        let array = new_null_array(&data_type, self.rows);
        self.push(Field::new(name, data_type, true), array)
    }

    /// A NULL `text[]` column.
    pub fn null_text_array(self, name: &str) -> Self {
        self.nulls(
            name,
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        )
    }

    pub fn into_batch(self) -> Result<RecordBatch> {
        Ok(RecordBatch::try_new_with_options(
            Arc::new(Schema::new(self.fields)),
            self.arrays,
            &RecordBatchOptions::new().with_row_count(Some(self.rows)),
        )?)
    }

    pub fn into_table(self) -> Result<Arc<dyn TableProvider>> {
        let batch = self.into_batch()?;
        Ok(Arc::new(MemTable::try_new(
            batch.schema(),
            vec![vec![batch]],
        )?))
    }
}
