//! Postgres compatibility functions that drivers and tools call on connect.
//!
//! SQLAlchemy and JDBC parse `version()` for "PostgreSQL X.Y"; GUI tools ask for
//! `current_database()` and `current_schema()`. DataFusion's own `version()` names DataFusion,
//! so Eddy registers these over it.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};

/// Registers the compatibility functions in a session's context.
pub fn register(ctx: &SessionContext) {
    let constants = [
        (
            "version",
            format!(
                "PostgreSQL {} (Eddy {}, a streaming SQL engine on Apache DataFusion)",
                crate::SERVER_VERSION,
                env!("CARGO_PKG_VERSION")
            ),
        ),
        ("current_database", "eddy".to_string()),
        ("current_schema", super::SCHEMA_NAME.to_string()),
    ];
    for (name, value) in constants {
        let value = ScalarValue::Utf8(Some(value));
        ctx.register_udf(create_udf(
            name,
            vec![],
            DataType::Utf8,
            Volatility::Stable,
            Arc::new(move |_| Ok(ColumnarValue::Scalar(value.clone()))),
        ));
    }
}
