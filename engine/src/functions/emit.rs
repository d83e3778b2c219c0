//! The marker the SQL front end puts in the GROUP BY list where `EMIT ON UPDATE` was written
//! ([`EMIT_ON_UPDATE_MARKER`], see `sql::emit_syntax`): a volatile function that DataFusion's
//! optimizer keeps as a group key (it is not a constant it may drop), for the streaming
//! planner to find and take out of the aggregate. Evaluated in a batch query (over
//! materialized views only) it is one constant key, so the query's result is unchanged.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::plan::EMIT_ON_UPDATE_MARKER;

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct EmitOnUpdateMarker {
    signature: Signature,
}

impl EmitOnUpdateMarker {
    pub fn new() -> Self {
        Self {
            signature: Signature::exact(vec![], Volatility::Volatile),
        }
    }
}

impl Default for EmitOnUpdateMarker {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for EmitOnUpdateMarker {
    fn name(&self) -> &str {
        EMIT_ON_UPDATE_MARKER
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))
    }
}
