//! The marker the SQL front end puts where `FOR SYSTEM_TIME AS OF` was written
//! ([`AS_OF_MARKER`], see `sql::temporal_syntax`): a volatile boolean function that DataFusion's
//! optimizer leaves in place for the streaming planner to find. Evaluated anywhere (a batch
//! query over a materialized view), it is refused. And `PROCTIME()`, which a lookup join's
//! `AS OF` may name.

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{Result, ScalarValue, not_impl_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::plan::temporal::AS_OF_MARKER;

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct AsOfMarker {
    signature: Signature,
}

impl AsOfMarker {
    pub fn new() -> Self {
        Self {
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Volatile),
        }
    }
}

impl Default for AsOfMarker {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for AsOfMarker {
    fn name(&self) -> &str {
        AS_OF_MARKER
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        not_impl_err!(
            "FOR SYSTEM_TIME AS OF outside a continuous join: it names the versioned or lookup \
             table a stream joins (`FROM s JOIN t FOR SYSTEM_TIME AS OF s.ts ON ...`)"
        )
    }
}

/// `PROCTIME()`: the wall clock, as Flink's processing-time attribute. A column defined as
/// `PROCTIME()` may name the time of a lookup join (`FOR SYSTEM_TIME AS OF b.p_time`) and be
/// the time of a window, which then runs on processing time (`operators::processing_time`
/// stamps the column again where the window reads it).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Proctime {
    signature: Signature,
}

impl Proctime {
    pub fn new() -> Self {
        Self {
            signature: Signature::exact(vec![], Volatility::Volatile),
        }
    }
}

impl Default for Proctime {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for Proctime {
    fn name(&self) -> &str {
        "proctime"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(TimeUnit::Millisecond, None))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Ok(ColumnarValue::Scalar(ScalarValue::TimestampMillisecond(
            Some(now),
            None,
        )))
    }
}
