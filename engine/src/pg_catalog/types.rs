//! Arrow types as Postgres types: the one mapping the catalogs (`pg_attribute.atttypid`,
//! `information_schema.columns.data_type`) and the wire protocol (RowDescription OIDs) share.

use datafusion::arrow::datatypes::{DataType, TimeUnit};

/// A Postgres type a column is presented as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgType {
    /// `pg_type.oid`.
    pub oid: u32,
    /// The SQL name (`format_type` without modifier, as `information_schema` spells it).
    pub name: &'static str,
    /// `pg_type.typname` (information_schema's `udt_name`).
    pub typname: &'static str,
    /// `pg_type.typlen`: bytes of a fixed-size value, -1 for variable length.
    pub len: i16,
}

pub const BOOL: PgType = PgType {
    oid: 16,
    name: "boolean",
    typname: "bool",
    len: 1,
};
pub const BYTEA: PgType = PgType {
    oid: 17,
    name: "bytea",
    typname: "bytea",
    len: -1,
};
pub const INT8: PgType = PgType {
    oid: 20,
    name: "bigint",
    typname: "int8",
    len: 8,
};
pub const INT2: PgType = PgType {
    oid: 21,
    name: "smallint",
    typname: "int2",
    len: 2,
};
pub const INT4: PgType = PgType {
    oid: 23,
    name: "integer",
    typname: "int4",
    len: 4,
};
pub const TEXT: PgType = PgType {
    oid: 25,
    name: "text",
    typname: "text",
    len: -1,
};
pub const FLOAT4: PgType = PgType {
    oid: 700,
    name: "real",
    typname: "float4",
    len: 4,
};
pub const FLOAT8: PgType = PgType {
    oid: 701,
    name: "double precision",
    typname: "float8",
    len: 8,
};
pub const DATE: PgType = PgType {
    oid: 1082,
    name: "date",
    typname: "date",
    len: 4,
};
pub const TIME: PgType = PgType {
    oid: 1083,
    name: "time without time zone",
    typname: "time",
    len: 8,
};
pub const TIMESTAMP: PgType = PgType {
    oid: 1114,
    name: "timestamp without time zone",
    typname: "timestamp",
    len: 8,
};
pub const TIMESTAMPTZ: PgType = PgType {
    oid: 1184,
    name: "timestamp with time zone",
    typname: "timestamptz",
    len: 8,
};
pub const INTERVAL: PgType = PgType {
    oid: 1186,
    name: "interval",
    typname: "interval",
    len: 16,
};
pub const NUMERIC: PgType = PgType {
    oid: 1700,
    name: "numeric",
    typname: "numeric",
    len: -1,
};

/// The Postgres type a column of `data_type` is sent and described as. Types without a
/// Postgres counterpart (lists, structs, maps) are sent as their text form.
pub fn pg_type(data_type: &DataType) -> PgType {
    match data_type {
        DataType::Boolean => BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => INT2,
        DataType::Int32 | DataType::UInt16 => INT4,
        DataType::Int64 | DataType::UInt32 => INT8,
        DataType::UInt64
        | DataType::Decimal32(_, _)
        | DataType::Decimal64(_, _)
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => NUMERIC,
        DataType::Float16 | DataType::Float32 => FLOAT4,
        DataType::Float64 => FLOAT8,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => TEXT,
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => BYTEA,
        DataType::Date32 | DataType::Date64 => DATE,
        DataType::Time32(_) | DataType::Time64(_) => TIME,
        DataType::Timestamp(_, None) => TIMESTAMP,
        DataType::Timestamp(_, Some(_)) => TIMESTAMPTZ,
        DataType::Interval(_) | DataType::Duration(_) => INTERVAL,
        _ => TEXT,
    }
}

/// `pg_attribute.atttypmod`: the declared precision of timestamps and times (`TIMESTAMP(3)`)
/// and of decimals (`NUMERIC(10, 2)`), -1 where the type has none or the default.
pub fn type_modifier(data_type: &DataType) -> i32 {
    let fraction_digits = |unit: &TimeUnit| match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        // Microseconds are Postgres's default precision; it has no nanoseconds.
        TimeUnit::Microsecond | TimeUnit::Nanosecond => -1,
    };
    match data_type {
        DataType::Timestamp(unit, _) => fraction_digits(unit),
        DataType::Time32(unit) | DataType::Time64(unit) => fraction_digits(unit),
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => ((i32::from(*p) << 16) | i32::from(*s)) + 4,
        _ => -1,
    }
}

/// The type as `format_type(oid, typmod)` and psql's `\d` print it, e.g.
/// `timestamp(3) without time zone`, `numeric(10,2)`.
pub fn display_name(data_type: &DataType) -> String {
    let ty = pg_type(data_type);
    let typmod = type_modifier(data_type);
    match (ty.oid, typmod) {
        (_, -1) => ty.name.to_string(),
        (1114, p) => format!("timestamp({p}) without time zone"),
        (1184, p) => format!("timestamp({p}) with time zone"),
        (1083, p) => format!("time({p}) without time zone"),
        (1700, m) => format!("numeric({},{})", (m - 4) >> 16, (m - 4) & 0xffff),
        _ => ty.name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_precision_survives() {
        let ts3 = DataType::Timestamp(TimeUnit::Millisecond, None);
        assert_eq!(pg_type(&ts3).oid, 1114);
        assert_eq!(display_name(&ts3), "timestamp(3) without time zone");
        let tstz = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        assert_eq!(display_name(&tstz), "timestamp with time zone");
        assert_eq!(display_name(&DataType::Decimal128(10, 2)), "numeric(10,2)");
        assert_eq!(display_name(&DataType::Utf8), "text");
        assert_eq!(display_name(&DataType::Int64), "bigint");
    }
}
