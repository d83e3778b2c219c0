//! `eddy_fault(kind [, value])`: a test-only function that injects faults, so that tests can
//! check that a panic fails only its own query or job ([`crate::panics`]).
//!
//! It exists only in an engine started with [`EngineConfig::test_faults`] (the server's
//! hidden `--enable-test-faults` flag); anywhere else it is an unknown function (42883). Per
//! row, by `kind`:
//!
//! | kind | effect |
//! |---|---|
//! | `'panic'` | panics where it is evaluated: in the operator that computes it (a projection, a filter), or in a source task when it is part of a `WATERMARK FOR` expression |
//! | `'encoder'` | (one-argument form) returns [`ENCODER_FAULT`], a text the server's result encoder panics on when test faults are on |
//! | anything else, NULL | returns `value` (one-argument form: `kind` itself) |
//!
//! It is volatile, so the planner never evaluates it ahead of the dataflow.
//!
//! [`EngineConfig::test_faults`]: crate::session::EngineConfig::test_faults

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The function's SQL name.
pub const NAME: &str = "eddy_fault";

/// The text `eddy_fault('encoder')` returns: the server's result encoder panics on it when
/// test faults are on.
pub const ENCODER_FAULT: &str = "eddy_fault: a value the result encoder panics on";

/// The message of the panic `eddy_fault('panic')` raises.
pub const INJECTED_PANIC: &str = "eddy_fault: injected panic";

/// The function, to register in a session's context.
pub fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(FaultFunction {
        signature: Signature::user_defined(Volatility::Volatile),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct FaultFunction {
    signature: Signature,
}

impl ScalarUDFImpl for FaultFunction {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        match args {
            [_] => Ok(vec![DataType::Utf8]),
            [_, value] => Ok(vec![DataType::Utf8, value.clone()]),
            _ => plan_err!("function {NAME} takes a kind and an optional value"),
        }
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(args.get(1).cloned().unwrap_or(DataType::Utf8))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let kind = &args.args[0];
        let is = |wanted: &str| match kind {
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(k))) => rows > 0 && k == wanted,
            ColumnarValue::Scalar(_) => false,
            ColumnarValue::Array(a) => a
                .as_string_opt::<i32>()
                .is_some_and(|s| s.iter().any(|k| k == Some(wanted))),
        };
        if is("panic") {
            // The fault this function exists for.
            panic!("{INJECTED_PANIC}");
        }
        if let Some(value) = args.args.get(1) {
            return Ok(value.clone());
        }
        fn encoder(k: Option<&str>) -> Option<&str> {
            match k {
                Some("encoder") => Some(ENCODER_FAULT),
                other => other,
            }
        }
        Ok(match kind {
            ColumnarValue::Scalar(ScalarValue::Utf8(k)) => {
                ColumnarValue::Scalar(ScalarValue::Utf8(encoder(k.as_deref()).map(str::to_string)))
            }
            ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::Utf8(None)),
            ColumnarValue::Array(a) => match a.as_string_opt::<i32>() {
                Some(s) => {
                    let out: StringArray = s.iter().map(encoder).collect();
                    ColumnarValue::Array(Arc::new(out))
                }
                None => ColumnarValue::Array(Arc::new(StringArray::new_null(a.len()))),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Field;
    use datafusion::config::ConfigOptions;

    fn invoke(args: Vec<ColumnarValue>, rows: usize) -> ColumnarValue {
        let arg_fields = args
            .iter()
            .map(|a| Arc::new(Field::new("a", a.data_type(), true)))
            .collect();
        udf()
            .invoke_with_args(ScalarFunctionArgs {
                args,
                arg_fields,
                number_rows: rows,
                return_field: Arc::new(Field::new("r", DataType::Utf8, true)),
                config_options: Arc::new(ConfigOptions::default()),
            })
            .unwrap()
    }

    #[test]
    fn panics_only_on_a_panic_row_and_marks_encoder_values() {
        let kinds: Arc<dyn Array> =
            Arc::new(StringArray::from(vec![Some("ok"), Some("encoder"), None]));
        let ColumnarValue::Array(out) = invoke(vec![ColumnarValue::Array(kinds)], 3) else {
            panic!("an array");
        };
        let out = out.as_string::<i32>();
        assert_eq!(out.value(0), "ok");
        assert_eq!(out.value(1), ENCODER_FAULT);
        assert!(out.is_null(2));
        // A literal 'panic' evaluated on no row does not panic.
        let kind = || ColumnarValue::Scalar(ScalarValue::Utf8(Some("panic".to_string())));
        invoke(vec![kind()], 0);
        let panicked = std::panic::catch_unwind(|| invoke(vec![kind()], 1));
        let payload = panicked.expect_err("a panic row panics");
        assert_eq!(
            crate::panics::panic_message(&*payload),
            INJECTED_PANIC.to_string()
        );
    }
}
