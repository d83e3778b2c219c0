//! Result encoding inside a panic guard: a panic while a batch is encoded (DataRows, COPY
//! data) fails the statement with `XX000` "internal error in the result encoder: ...", and the
//! session carries on.
//!
//! For tests, a server started with test faults has the guard panic before encoding a batch
//! that holds the text `eddy_fault('encoder')` returns
//! ([`eddy_engine::functions::fault::ENCODER_FAULT`]).

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use eddy_engine::error::EngineError;
use eddy_engine::functions::fault::ENCODER_FAULT;

/// Where encoding panics are reported as happening.
const PLACE: &str = "the result encoder";

/// Runs the result encoder of one connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncoderGuard {
    /// Panic on the test fault's value.
    test_faults: bool,
}

impl EncoderGuard {
    pub fn new(test_faults: bool) -> Self {
        Self { test_faults }
    }

    /// Runs `encode` over `batch`; a panic in it (or the test fault) becomes
    /// [`EngineError::Panic`], an encoding error [`EngineError::Data`].
    pub fn encode<T, E: std::fmt::Display>(
        &self,
        batch: &RecordBatch,
        encode: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, EngineError> {
        eddy_engine::panics::catch(PLACE, || {
            if self.test_faults && holds_fault(batch) {
                // The fault the test asked for.
                panic!("{ENCODER_FAULT}");
            }
            encode()
        })?
        .map_err(|e| EngineError::Data(e.to_string()))
    }
}

/// Whether a text column of `batch` holds the encoder fault's value.
fn holds_fault(batch: &RecordBatch) -> bool {
    batch.columns().iter().any(|column| {
        column.data_type() == &DataType::Utf8
            && column
                .as_string::<i32>()
                .iter()
                .any(|v| v == Some(ENCODER_FAULT))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::StringArray;

    use super::*;

    #[test]
    fn the_fault_value_panics_only_with_test_faults_and_becomes_an_internal_error() {
        let batch = RecordBatch::try_from_iter([(
            "a",
            Arc::new(StringArray::from(vec!["x", ENCODER_FAULT])) as _,
        )])
        .unwrap();
        let encoded = EncoderGuard::new(false).encode(&batch, || Ok::<_, String>(2));
        assert_eq!(encoded.ok(), Some(2));
        let error = EncoderGuard::new(true)
            .encode(&batch, || Ok::<_, String>(2))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("internal error in the result encoder: {ENCODER_FAULT}")
        );
        let error = EncoderGuard::new(false)
            .encode(&batch, || Err::<u8, _>("bad interval"))
            .unwrap_err();
        assert!(matches!(error, EngineError::Data(m) if m == "bad interval"));
    }
}
