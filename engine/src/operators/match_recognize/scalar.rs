//! A scalar evaluator for the DEFINE conditions that depend on the match (`LAST(B.price, 1)`,
//! `A.price`), in their common shapes: comparisons, `+ - *`, `AND`/`OR`/`NOT`, `IS [NOT]
//! NULL` over integer, float and boolean values and literals.
//!
//! Such a condition is asked once per candidate row and thread of the matcher, over one or a
//! few points; building Arrow arrays and a batch for DataFusion to evaluate costs far more
//! than the condition (a profile of the V-shape written with logical navigation showed a
//! third of its time in malloc and free). Here the condition is compiled once into a small
//! tree and evaluated on the channels' values read straight from the partition's rows, with
//! SQL's three-valued logic. Anything else (decimals, strings, functions, division, an
//! aggregate or `CLASSIFIER()` channel) is not compiled, and a value the tree cannot take (an
//! unsigned integer beyond `i64`, an overflowing product) sends that evaluation back to
//! DataFusion: the results are DataFusion's in every case.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::{Expr, Operator};

/// A value of the evaluator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// The static type of a node: what its non-NULL values are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An integer no wider than 64 bits; `wide` when it is `BIGINT` (or a literal), the only
    /// integers arithmetic is compiled for (DataFusion computes narrower ones in their width).
    Int {
        wide: bool,
    },
    Float,
    Bool,
    /// A NULL literal: any type.
    Null,
}

#[derive(Debug, Clone)]
enum Node {
    Channel(usize),
    Literal(Val),
    Compare(Operator, Box<Node>, Box<Node>),
    Arith(Operator, Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    IsNull(Box<Node>),
    IsNotNull(Box<Node>),
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub struct ScalarCondition {
    root: Node,
}

impl ScalarCondition {
    /// Compiles `expr` over the channel schema `schema`, if every part of it has a scalar form
    /// and its result is boolean.
    pub fn compile(expr: &Expr, schema: &DFSchema) -> Option<Self> {
        let (root, kind) = compile(expr, schema)?;
        matches!(kind, Kind::Bool | Kind::Null).then_some(Self { root })
    }

    /// Whether the condition holds (NULL: it does not) with channel `i` worth `channel(i)`;
    /// `None` when a value falls outside what the evaluator takes.
    pub fn holds(&self, channel: &mut impl FnMut(usize) -> Option<Val>) -> Option<bool> {
        Some(eval(&self.root, channel)? == Val::Bool(true))
    }
}

fn compile(expr: &Expr, schema: &DFSchema) -> Option<(Node, Kind)> {
    Some(match expr {
        Expr::Alias(a) => compile(&a.expr, schema)?,
        Expr::Column(c) => {
            let index = schema.index_of_column(c).ok()?;
            (
                Node::Channel(index),
                kind_of(schema.field(index).data_type())?,
            )
        }
        Expr::Literal(value, _) => {
            let val = literal(value)?;
            let kind = match val {
                Val::Null => Kind::Null,
                Val::Int(_) => Kind::Int { wide: true },
                Val::Float(_) => Kind::Float,
                Val::Bool(_) => Kind::Bool,
            };
            (Node::Literal(val), kind)
        }
        Expr::Not(e) => {
            let (node, kind) = compile(e, schema)?;
            boolean(kind)?;
            (Node::Not(Box::new(node)), Kind::Bool)
        }
        Expr::IsNull(e) => (Node::IsNull(Box::new(compile(e, schema)?.0)), Kind::Bool),
        Expr::IsNotNull(e) => (Node::IsNotNull(Box::new(compile(e, schema)?.0)), Kind::Bool),
        Expr::BinaryExpr(b) => {
            let (left, lk) = compile(&b.left, schema)?;
            let (right, rk) = compile(&b.right, schema)?;
            let (l, r) = (Box::new(left), Box::new(right));
            match b.op {
                Operator::And | Operator::Or => {
                    boolean(lk)?;
                    boolean(rk)?;
                    let node = if b.op == Operator::And {
                        Node::And(l, r)
                    } else {
                        Node::Or(l, r)
                    };
                    (node, Kind::Bool)
                }
                Operator::Eq
                | Operator::NotEq
                | Operator::Lt
                | Operator::LtEq
                | Operator::Gt
                | Operator::GtEq => {
                    let comparable = match (lk, rk) {
                        (Kind::Null, _) | (_, Kind::Null) => true,
                        (Kind::Bool, Kind::Bool) => true,
                        (Kind::Bool, _) | (_, Kind::Bool) => false,
                        _ => true,
                    };
                    comparable.then_some((Node::Compare(b.op, l, r), Kind::Bool))?
                }
                Operator::Plus | Operator::Minus | Operator::Multiply => {
                    let kind = match (lk, rk) {
                        (Kind::Int { wide: true }, Kind::Int { wide: true }) => {
                            Kind::Int { wide: true }
                        }
                        (Kind::Float, Kind::Int { .. } | Kind::Float)
                        | (Kind::Int { .. }, Kind::Float) => Kind::Float,
                        _ => return None,
                    };
                    (Node::Arith(b.op, l, r), kind)
                }
                _ => return None,
            }
        }
        _ => return None,
    })
}

fn boolean(kind: Kind) -> Option<()> {
    matches!(kind, Kind::Bool | Kind::Null).then_some(())
}

fn kind_of(data_type: &DataType) -> Option<Kind> {
    use DataType::*;
    Some(match data_type {
        Int64 => Kind::Int { wide: true },
        Int8 | Int16 | Int32 | UInt8 | UInt16 | UInt32 => Kind::Int { wide: false },
        Float32 | Float64 => Kind::Float,
        Boolean => Kind::Bool,
        _ => return None,
    })
}

fn literal(value: &ScalarValue) -> Option<Val> {
    use ScalarValue::*;
    Some(match value {
        Null => Val::Null,
        Boolean(v) => v.map_or(Val::Null, Val::Bool),
        Int64(v) => v.map_or(Val::Null, Val::Int),
        Int32(v) => v.map_or(Val::Null, |v| Val::Int(v.into())),
        Int16(v) => v.map_or(Val::Null, |v| Val::Int(v.into())),
        Int8(v) => v.map_or(Val::Null, |v| Val::Int(v.into())),
        UInt32(v) => v.map_or(Val::Null, |v| Val::Int(v.into())),
        UInt16(v) => v.map_or(Val::Null, |v| Val::Int(v.into())),
        UInt8(v) => v.map_or(Val::Null, |v| Val::Int(v.into())),
        Float64(v) => v.map_or(Val::Null, Val::Float),
        Float32(v) => v.map_or(Val::Null, |v| Val::Float(v.into())),
        _ => return None,
    })
}

/// The value of `array` at `index` (`None`: a type or value the evaluator does not take).
pub fn value_at(array: &ArrayRef, index: usize) -> Option<Val> {
    if array.is_null(index) {
        return Some(Val::Null);
    }
    Some(match array.data_type() {
        DataType::Int64 => Val::Int(array.as_primitive::<Int64Type>().value(index)),
        DataType::Int32 => Val::Int(array.as_primitive::<Int32Type>().value(index).into()),
        DataType::Int16 => Val::Int(array.as_primitive::<Int16Type>().value(index).into()),
        DataType::Int8 => Val::Int(array.as_primitive::<Int8Type>().value(index).into()),
        DataType::UInt32 => Val::Int(array.as_primitive::<UInt32Type>().value(index).into()),
        DataType::UInt16 => Val::Int(array.as_primitive::<UInt16Type>().value(index).into()),
        DataType::UInt8 => Val::Int(array.as_primitive::<UInt8Type>().value(index).into()),
        DataType::UInt64 => {
            Val::Int(i64::try_from(array.as_primitive::<UInt64Type>().value(index)).ok()?)
        }
        DataType::Float64 => Val::Float(array.as_primitive::<Float64Type>().value(index)),
        DataType::Float32 => Val::Float(array.as_primitive::<Float32Type>().value(index).into()),
        DataType::Boolean => Val::Bool(array.as_boolean().value(index)),
        _ => return None,
    })
}

fn eval(node: &Node, channel: &mut impl FnMut(usize) -> Option<Val>) -> Option<Val> {
    Some(match node {
        Node::Channel(i) => channel(*i)?,
        Node::Literal(v) => *v,
        Node::Not(e) => match eval(e, channel)? {
            Val::Bool(b) => Val::Bool(!b),
            _ => Val::Null,
        },
        Node::IsNull(e) => Val::Bool(eval(e, channel)? == Val::Null),
        Node::IsNotNull(e) => Val::Bool(eval(e, channel)? != Val::Null),
        Node::And(l, r) => match (eval(l, channel)?, eval(r, channel)?) {
            (Val::Bool(false), _) | (_, Val::Bool(false)) => Val::Bool(false),
            (Val::Bool(true), Val::Bool(true)) => Val::Bool(true),
            _ => Val::Null,
        },
        Node::Or(l, r) => match (eval(l, channel)?, eval(r, channel)?) {
            (Val::Bool(true), _) | (_, Val::Bool(true)) => Val::Bool(true),
            (Val::Bool(false), Val::Bool(false)) => Val::Bool(false),
            _ => Val::Null,
        },
        Node::Compare(op, l, r) => {
            let ordering = match (eval(l, channel)?, eval(r, channel)?) {
                (Val::Null, _) | (_, Val::Null) => return Some(Val::Null),
                (Val::Int(a), Val::Int(b)) => a.cmp(&b),
                (Val::Bool(a), Val::Bool(b)) => a.cmp(&b),
                (a, b) => {
                    let (a, b) = (as_float(a)?, as_float(b)?);
                    // DataFusion orders floats totally (NaN above everything, equal to NaN).
                    a.total_cmp(&b)
                }
            };
            use std::cmp::Ordering::*;
            Val::Bool(match op {
                Operator::Eq => ordering == Equal,
                Operator::NotEq => ordering != Equal,
                Operator::Lt => ordering == Less,
                Operator::LtEq => ordering != Greater,
                Operator::Gt => ordering == Greater,
                Operator::GtEq => ordering != Less,
                _ => return None,
            })
        }
        Node::Arith(op, l, r) => match (eval(l, channel)?, eval(r, channel)?) {
            (Val::Null, _) | (_, Val::Null) => Val::Null,
            (Val::Int(a), Val::Int(b)) => Val::Int(match op {
                Operator::Plus => a.checked_add(b)?,
                Operator::Minus => a.checked_sub(b)?,
                Operator::Multiply => a.checked_mul(b)?,
                _ => return None,
            }),
            (a, b) => {
                let (a, b) = (as_float(a)?, as_float(b)?);
                Val::Float(match op {
                    Operator::Plus => a + b,
                    Operator::Minus => a - b,
                    Operator::Multiply => a * b,
                    _ => return None,
                })
            }
        },
    })
}

fn as_float(v: Val) -> Option<f64> {
    match v {
        Val::Int(i) => Some(i as f64),
        Val::Float(f) => Some(f),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::logical_expr::{col, lit};

    fn schema() -> DFSchema {
        DFSchema::try_from(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("n", DataType::Int32, true),
        ]))
        .unwrap()
    }

    fn holds(expr: Expr, values: [Val; 4]) -> Option<bool> {
        ScalarCondition::compile(&expr, &schema())
            .expect("compiled")
            .holds(&mut |i| Some(values[i]))
    }

    #[test]
    fn the_v_shape_conditions_follow_sql_s_three_valued_logic() {
        // (LAST(B.price, 1) IS NULL AND B.price < A.price) OR B.price < LAST(B.price, 1),
        // with a = B.price and b = the other price.
        let cond = (col("b").is_null().and(col("a").lt(lit(10i64)))).or(col("a").lt(col("b")));
        assert_eq!(
            holds(cond.clone(), [Val::Int(5), Val::Null, Val::Null, Val::Null]),
            Some(true)
        );
        assert_eq!(
            holds(
                cond.clone(),
                [Val::Int(5), Val::Float(4.5), Val::Null, Val::Null]
            ),
            Some(false)
        );
        assert_eq!(
            holds(cond, [Val::Null, Val::Float(4.5), Val::Null, Val::Null]),
            Some(false),
            "NULL is not true"
        );
        let arith = (col("a") * lit(2i64)).gt_eq(col("b") + lit(1i64));
        assert_eq!(
            holds(
                arith.clone(),
                [Val::Int(3), Val::Float(5.0), Val::Null, Val::Null]
            ),
            Some(true)
        );
        assert_eq!(
            holds(
                arith,
                [Val::Int(i64::MAX), Val::Float(5.0), Val::Null, Val::Null]
            ),
            None,
            "an overflow goes back to DataFusion"
        );
    }

    #[test]
    fn shapes_it_does_not_take_are_not_compiled() {
        let s = schema();
        assert!(ScalarCondition::compile(&col("s").eq(lit("x")), &s).is_none());
        assert!(ScalarCondition::compile(&(col("a") / lit(2i64)).gt(lit(1i64)), &s).is_none());
        assert!(ScalarCondition::compile(&(col("n") + lit(1i64)).gt(lit(1i64)), &s).is_none());
        assert!(
            ScalarCondition::compile(&(col("a") + lit(1i64)), &s).is_none(),
            "not boolean"
        );
        assert!(ScalarCondition::compile(&col("n").gt(lit(1i64)), &s).is_some());
    }
}
