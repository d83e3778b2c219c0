//! DataFusion's functions as `pg_proc` rows, and the Postgres functions that psql, drivers and
//! GUI tools call which `datafusion-pg-catalog` does not provide (or provides for another
//! server: its `pg_get_userbyid` names `postgres`).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, StringArray};
use datafusion::arrow::datatypes::{DataType, Int32Type, Int64Type};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::execution::SessionState;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

use super::relations::{EDDY_ROLE, RelationSource};
use super::types::display_name;

/// OID of the first function in `pg_proc` (functions are numbered in name order).
const FIRST_FUNCTION_OID: i32 = 100_000;

/// One DataFusion function as `pg_proc` and psql's `\df` show it.
#[derive(Debug, Clone)]
pub struct FunctionInfo {
    pub oid: i32,
    pub name: String,
    /// `prokind`: `f` scalar, `a` aggregate, `w` window.
    pub kind: &'static str,
    /// `provolatile`: `i`, `s` or `v`.
    pub volatility: &'static str,
    /// The accepted arguments, in DataFusion's words (`pg_get_function_arguments`).
    pub arguments: String,
    /// The result type for the first accepted argument types, where DataFusion can tell it
    /// without the arguments' values (`pg_get_function_result`).
    pub result: String,
}

fn volatility(v: Volatility) -> &'static str {
    match v {
        Volatility::Immutable => "i",
        Volatility::Stable => "s",
        Volatility::Volatile => "v",
    }
}

/// The accepted arguments in DataFusion's words, and one list of argument types to ask the
/// result type for (none when the signature gives no example to ask with).
fn arguments(signature: &Signature) -> (String, Option<Vec<DataType>>) {
    let ts = &signature.type_signature;
    let text = ts.to_string_repr().join(" or ");
    // Array and user-defined signatures check their arguments only when planned.
    let example = match ts {
        TypeSignature::Nullary => Some(Vec::new()),
        TypeSignature::Exact(_)
        | TypeSignature::Uniform(..)
        | TypeSignature::Numeric(_)
        | TypeSignature::String(_)
        | TypeSignature::Any(_)
        | TypeSignature::Comparable(_)
        | TypeSignature::OneOf(_) => ts.get_example_types().into_iter().find(|e| !e.is_empty()),
        _ => None,
    };
    (text, example)
}

/// The result type's name for `example` arguments. Some functions check their arguments only
/// when planned and index them blindly here (`array_repeat`), so a panic means "unknown".
fn result_type(
    example: Option<Vec<DataType>>,
    return_type: impl Fn(&[DataType]) -> datafusion::error::Result<DataType>,
) -> String {
    let Some(example) = example else {
        return String::new();
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| return_type(&example)))
        .ok()
        .and_then(Result::ok)
        .map(|t| display_name(&t))
        .unwrap_or_default()
}

/// Every function of a session: scalar, aggregate and window, in name order.
pub fn functions(state: &SessionState) -> Vec<FunctionInfo> {
    let mut list: Vec<FunctionInfo> = Vec::new();
    for udf in state.scalar_functions().values() {
        let (arguments, example) = arguments(udf.signature());
        let result = result_type(example, |t| udf.inner().return_type(t));
        list.push(FunctionInfo {
            oid: 0,
            name: udf.name().to_string(),
            kind: "f",
            volatility: volatility(udf.signature().volatility),
            arguments,
            result,
        });
    }
    for udaf in state.aggregate_functions().values() {
        let (arguments, example) = arguments(udaf.signature());
        let result = result_type(example, |t| udaf.inner().return_type(t));
        list.push(FunctionInfo {
            oid: 0,
            name: udaf.name().to_string(),
            kind: "a",
            volatility: volatility(udaf.signature().volatility),
            arguments,
            result,
        });
    }
    for udwf in state.window_functions().values() {
        let (arguments, _) = arguments(udwf.signature());
        list.push(FunctionInfo {
            oid: 0,
            name: udwf.name().to_string(),
            kind: "w",
            volatility: volatility(udwf.signature().volatility),
            arguments,
            result: String::new(),
        });
    }
    list.sort_by(|a, b| (&a.name, a.kind).cmp(&(&b.name, b.kind)));
    list.dedup_by(|a, b| a.name == b.name && a.kind == b.kind);
    for (i, f) in list.iter_mut().enumerate() {
        f.oid = FIRST_FUNCTION_OID + i as i32;
    }
    list
}

/// Reads a session's functions when a catalog query runs (from the session state shared with
/// the context, weakly, so that the catalog does not keep a closed session alive).
#[derive(Clone)]
pub struct FunctionSource(Arc<dyn Fn() -> Vec<FunctionInfo> + Send + Sync>);

impl FunctionSource {
    pub fn of_context(ctx: &SessionContext) -> Self {
        let state = ctx.state_weak_ref();
        Self(Arc::new(move || {
            state
                .upgrade()
                .map(|s| functions(&s.read()))
                .unwrap_or_default()
        }))
    }

    pub fn functions(&self) -> Vec<FunctionInfo> {
        (self.0)()
    }
}

impl std::fmt::Debug for FunctionSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FunctionSource")
    }
}

/// The OIDs of an argument as i64s (psql passes OIDs as `oid`, i.e. int4, or as text).
fn oids(arg: &ArrayRef) -> Result<Vec<Option<i64>>, DataFusionError> {
    Ok(match arg.data_type() {
        DataType::Int32 => arg
            .as_primitive::<Int32Type>()
            .iter()
            .map(|v| v.map(i64::from))
            .collect(),
        DataType::Int64 => arg.as_primitive::<Int64Type>().iter().collect(),
        DataType::Null => vec![None; arg.len()],
        _ => {
            let text = datafusion::arrow::compute::cast(arg, &DataType::Utf8)?;
            text.as_string::<i32>()
                .iter()
                .map(|v| v.and_then(|s| s.trim().parse().ok()))
                .collect()
        }
    })
}

type Body = dyn Fn(&[ArrayRef]) -> Result<ArrayRef, DataFusionError> + Send + Sync;

/// A catalog function: a name, the argument lists it accepts, its result type and its body
/// (over arrays of equal length).
struct CatalogFunction {
    name: String,
    signature: Signature,
    result: DataType,
    body: Arc<Body>,
}

impl std::fmt::Debug for CatalogFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogFunction")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PartialEq for CatalogFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.signature == other.signature
    }
}

impl Eq for CatalogFunction {}

impl std::hash::Hash for CatalogFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for CatalogFunction {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType, DataFusionError> {
        Ok(self.result.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue, DataFusionError> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let out = if arrays.is_empty() {
            (self.body)(&[Arc::new(datafusion::arrow::array::NullArray::new(
                args.number_rows,
            ))])?
        } else {
            (self.body)(&arrays)?
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// Registers a catalog function accepting each of `arg_lists`.
fn register_function(
    ctx: &SessionContext,
    name: &str,
    arg_lists: Vec<Vec<DataType>>,
    result: DataType,
    body: impl Fn(&[ArrayRef]) -> Result<ArrayRef, DataFusionError> + Send + Sync + 'static,
) {
    let signature = Signature::one_of(
        arg_lists.into_iter().map(TypeSignature::Exact).collect(),
        Volatility::Stable,
    );
    ctx.register_udf(ScalarUDF::new_from_impl(CatalogFunction {
        name: name.to_string(),
        signature,
        result,
        body: Arc::new(body),
    }));
}

/// A function from an OID (and other arguments, ignored) to optional text.
fn register_oid_to_text(
    ctx: &SessionContext,
    name: &str,
    arg_lists: Vec<Vec<DataType>>,
    lookup: impl Fn(i64) -> Option<String> + Send + Sync + 'static,
) {
    register_function(ctx, name, arg_lists, DataType::Utf8, move |arrays| {
        let values: StringArray = oids(&arrays[0])?
            .into_iter()
            .map(|oid| oid.and_then(&lookup))
            .collect();
        Ok(Arc::new(values))
    });
}

/// Registers the functions below in a session's context. Later registrations under one name
/// replace earlier ones, so only the last signature of each name counts: each is registered
/// once, with the widest argument list, unless noted.
pub fn register(
    ctx: &SessionContext,
    relations: RelationSource,
    functions: FunctionSource,
    type_names: Arc<std::collections::HashMap<String, i32>>,
) {
    use DataType::{Boolean, Int32, Int64, Utf8};
    // `to_regtype('name')`: the type's OID, NULL for an unknown type (psycopg and SQLAlchemy
    // probe for `hstore` and others so).
    register_function(ctx, "to_regtype", vec![vec![Utf8]], Int32, move |arrays| {
        let names = datafusion::arrow::compute::cast(&arrays[0], &Utf8)?;
        let values: datafusion::arrow::array::Int32Array = names
            .as_string::<i32>()
            .iter()
            .map(|name| {
                let name = name?.trim().to_ascii_lowercase();
                let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
                type_names.get(name).copied()
            })
            .collect();
        Ok(Arc::new(values))
    });
    // `to_regclass('name')`: a relation's OID, NULL for an unknown relation.
    let rels = relations.clone();
    register_function(ctx, "to_regclass", vec![vec![Utf8]], Int32, move |arrays| {
        let all = rels
            .relations()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let names = datafusion::arrow::compute::cast(&arrays[0], &Utf8)?;
        let values: datafusion::arrow::array::Int32Array = names
            .as_string::<i32>()
            .iter()
            .map(|name| {
                let name = name?.trim();
                let name = name.strip_prefix("public.").unwrap_or(name);
                all.iter().find(|r| r.name == name).map(|r| r.oid)
            })
            .collect();
        Ok(Arc::new(values))
    });
    // No object has a comment: COMMENT ON is not supported.
    for (name, args) in [
        ("obj_description", vec![vec![Int64], vec![Int64, Utf8]]),
        ("col_description", vec![vec![Int64, Int64]]),
        ("shobj_description", vec![vec![Int64, Utf8]]),
    ] {
        register_oid_to_text(ctx, name, args, |_| None);
    }
    // Every type, function and relation is in the search path (public, pg_catalog).
    for name in [
        "pg_type_is_visible",
        "pg_function_is_visible",
        "pg_table_is_visible",
    ] {
        register_function(ctx, name, vec![vec![Int64]], Boolean, |arrays| {
            let values: BooleanArray = oids(&arrays[0])?
                .into_iter()
                .map(|o| o.map(|_| true))
                .collect();
            Ok(Arc::new(values))
        });
    }
    register_oid_to_text(ctx, "pg_get_userbyid", vec![vec![Int64]], |oid| {
        Some(if oid == i64::from(EDDY_ROLE) {
            "eddy".to_string()
        } else {
            format!("unknown (OID={oid})")
        })
    });
    for (name, result) in [
        ("pg_get_function_result", true),
        ("pg_get_function_arguments", false),
        ("pg_get_function_identity_arguments", false),
    ] {
        let functions = functions.clone();
        register_function(ctx, name, vec![vec![Int64]], Utf8, move |arrays| {
            let all = functions.functions();
            let values: StringArray = oids(&arrays[0])?
                .into_iter()
                .map(|oid| {
                    let f = all.iter().find(|f| Some(i64::from(f.oid)) == oid)?;
                    Some(if result {
                        f.result.clone()
                    } else {
                        f.arguments.clone()
                    })
                })
                .collect();
            Ok(Arc::new(values))
        });
    }
    // A materialized view's definition is the statement that created it.
    register_oid_to_text(
        ctx,
        "pg_get_viewdef",
        vec![vec![Int64], vec![Int64, Boolean]],
        move |oid| {
            relations
                .relations()
                .ok()?
                .into_iter()
                .find(|rel| i64::from(rel.oid) == oid)
                .and_then(|rel| rel.definition)
        },
    );
    // `ARRAY(SELECT 'p' || x FROM unnest(a) x)`, as the catalog rewrite spells it (NULL: empty).
    let text_list = DataType::List(Arc::new(datafusion::arrow::datatypes::Field::new(
        "item", Utf8, true,
    )));
    register_function(
        ctx,
        "array_prefix_elements",
        vec![vec![text_list.clone(), Utf8]],
        text_list,
        |arrays| {
            use datafusion::arrow::array::{ListBuilder, StringBuilder};
            let lists = arrays[0].as_list::<i32>();
            let prefixes = arrays[1].as_string::<i32>();
            let mut out = ListBuilder::new(StringBuilder::new());
            for row in 0..lists.len() {
                if !lists.is_null(row) {
                    let prefix = if prefixes.is_null(row) {
                        ""
                    } else {
                        prefixes.value(row)
                    };
                    let items = lists.value(row);
                    let items = items.as_string::<i32>();
                    for item in items.iter() {
                        out.values()
                            .append_option(item.map(|i| format!("{prefix}{i}")));
                    }
                }
                out.append(true);
            }
            Ok(Arc::new(out.finish()))
        },
    );
    // Postgres's names of the encodings (the library's says `UTF-8`); Eddy uses UTF8 only.
    register_function(
        ctx,
        "pg_encoding_to_char",
        vec![vec![Int64]],
        Utf8,
        |arrays| {
            let values: StringArray = oids(&arrays[0])?
                .into_iter()
                .map(|code| match code? {
                    0 => Some("SQL_ASCII"),
                    6 => Some("UTF8"),
                    _ => Some(""),
                })
                .collect();
            Ok(Arc::new(values))
        },
    );
    // No column has a sequence (no SERIAL columns); every collation is visible.
    register_oid_to_text(
        ctx,
        "pg_get_serial_sequence",
        vec![vec![Utf8, Utf8]],
        |_| None,
    );
    register_function(
        ctx,
        "pg_collation_is_visible",
        vec![vec![Int64]],
        Boolean,
        |arrays| {
            let values: BooleanArray = oids(&arrays[0])?
                .into_iter()
                .map(|o| o.map(|_| true))
                .collect();
            Ok(Arc::new(values))
        },
    );
    // `json_build_object(k1, v1, ...)` as JSON text (SQLAlchemy's column reflection asks for
    // identity options so).
    ctx.register_udf(ScalarUDF::new_from_impl(JsonBuildObject(
        Signature::variadic_any(Volatility::Immutable),
    )));
    // The name of the session's user and of the server's only role.
    for name in ["session_user", "current_user", "user", "current_role"] {
        register_function(ctx, name, vec![vec![]], Utf8, |arrays| {
            Ok(Arc::new(StringArray::from(vec!["eddy"; arrays[0].len()])))
        });
    }
}

/// `json_build_object(key, value, ...)`: a JSON object text from alternating keys and values.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject(Signature);

impl ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &Signature {
        &self.0
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType, DataFusionError> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue, DataFusionError> {
        if !args.args.len().is_multiple_of(2) {
            return Err(DataFusionError::Execution(
                "argument list must have even number of elements".to_string(),
            ));
        }
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let mut out = datafusion::arrow::array::StringBuilder::new();
        for row in 0..args.number_rows {
            let mut object = serde_json::Map::new();
            for pair in arrays.chunks(2) {
                let key = ScalarValue::try_from_array(&pair[0], row)?;
                let value = ScalarValue::try_from_array(&pair[1], row)?;
                let json = match value {
                    v if v.is_null() => serde_json::Value::Null,
                    ScalarValue::Boolean(Some(b)) => serde_json::Value::Bool(b),
                    ScalarValue::Int8(Some(_))
                    | ScalarValue::Int16(Some(_))
                    | ScalarValue::Int32(Some(_))
                    | ScalarValue::Int64(Some(_))
                    | ScalarValue::UInt8(Some(_))
                    | ScalarValue::UInt16(Some(_))
                    | ScalarValue::UInt32(Some(_))
                    | ScalarValue::UInt64(Some(_))
                    | ScalarValue::Float32(Some(_))
                    | ScalarValue::Float64(Some(_)) => serde_json::from_str(&value.to_string())
                        .unwrap_or(serde_json::Value::String(value.to_string())),
                    other => serde_json::Value::String(other.to_string()),
                };
                object.insert(key.to_string(), json);
            }
            out.append_value(serde_json::Value::Object(object).to_string());
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}
