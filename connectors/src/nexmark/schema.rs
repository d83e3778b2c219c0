//! The standard schemas of the three Nexmark tables, and the [`OutputPlan`] that turns the
//! generated columns into batches of the schema a `CREATE SOURCE` declared: a subset of the
//! table's columns, matched by name without regard to case, in any order, cast when the
//! declared type differs.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::{CastOptions, can_cast_types, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;
use eddy_engine::connector::{ConnectorError, ConnectorResult};

use super::config::NexmarkTable;

/// Positions of the columns in each table's full schema, as the generator builds them.
pub mod columns {
    pub mod person {
        pub const ID: usize = 0;
        pub const NAME: usize = 1;
        pub const EMAIL_ADDRESS: usize = 2;
        pub const CREDIT_CARD: usize = 3;
        pub const CITY: usize = 4;
        pub const STATE: usize = 5;
        pub const DATE_TIME: usize = 6;
        pub const EXTRA: usize = 7;
    }

    pub mod auction {
        pub const ID: usize = 0;
        pub const ITEM_NAME: usize = 1;
        pub const DESCRIPTION: usize = 2;
        pub const INITIAL_BID: usize = 3;
        pub const RESERVE: usize = 4;
        pub const DATE_TIME: usize = 5;
        pub const EXPIRES: usize = 6;
        pub const SELLER: usize = 7;
        pub const CATEGORY: usize = 8;
        pub const EXTRA: usize = 9;
    }

    pub mod bid {
        pub const AUCTION: usize = 0;
        pub const BIDDER: usize = 1;
        pub const PRICE: usize = 2;
        pub const CHANNEL: usize = 3;
        pub const URL: usize = 4;
        pub const DATE_TIME: usize = 5;
        pub const EXTRA: usize = 6;
    }
}

const BIGINT: DataType = DataType::Int64;
const VARCHAR: DataType = DataType::Utf8;
const TIMESTAMP: DataType = DataType::Timestamp(TimeUnit::Millisecond, None);

static PERSON_COLUMNS: [(&str, DataType); 8] = [
    ("id", BIGINT),
    ("name", VARCHAR),
    ("email_address", VARCHAR),
    ("credit_card", VARCHAR),
    ("city", VARCHAR),
    ("state", VARCHAR),
    ("date_time", TIMESTAMP),
    ("extra", VARCHAR),
];

static AUCTION_COLUMNS: [(&str, DataType); 10] = [
    ("id", BIGINT),
    ("item_name", VARCHAR),
    ("description", VARCHAR),
    ("initial_bid", BIGINT),
    ("reserve", BIGINT),
    ("date_time", TIMESTAMP),
    ("expires", TIMESTAMP),
    ("seller", BIGINT),
    ("category", BIGINT),
    ("extra", VARCHAR),
];

static BID_COLUMNS: [(&str, DataType); 7] = [
    ("auction", BIGINT),
    ("bidder", BIGINT),
    ("price", BIGINT),
    ("channel", VARCHAR),
    ("url", VARCHAR),
    ("date_time", TIMESTAMP),
    ("extra", VARCHAR),
];

/// Names and types of a table's columns, in the order of [`columns`].
fn table_columns(table: NexmarkTable) -> &'static [(&'static str, DataType)] {
    match table {
        NexmarkTable::Person => &PERSON_COLUMNS,
        NexmarkTable::Auction => &AUCTION_COLUMNS,
        NexmarkTable::Bid => &BID_COLUMNS,
    }
}

/// The standard schema of `table` (the one used when `CREATE SOURCE` lists no columns).
pub fn table_schema(table: NexmarkTable) -> SchemaRef {
    let fields: Vec<Field> = table_columns(table)
        .iter()
        .map(|(name, data_type)| Field::new(*name, data_type.clone(), true))
        .collect();
    Arc::new(Schema::new(fields))
}

fn sql_type_name(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Int64 => "BIGINT",
        DataType::Utf8 => "VARCHAR",
        _ => "TIMESTAMP(3)",
    }
}

fn is_string(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// Where each declared column comes from.
#[derive(Debug, Clone)]
pub struct OutputPlan {
    schema: SchemaRef,
    /// Per declared column: its position in the table's full schema, and the type to cast to
    /// when the declared type differs from the generated one.
    sources: Vec<(usize, Option<DataType>)>,
    /// Per column of the table's full schema: whether some declared column reads it.
    wanted: Vec<bool>,
}

impl OutputPlan {
    /// Matches the declared schema against `table`'s columns; an unknown column, or a type the
    /// generated values cannot be cast to, is reported with the column's name.
    pub fn new(table: NexmarkTable, declared: &SchemaRef) -> ConnectorResult<Self> {
        let table_columns = table_columns(table);
        let mut wanted = vec![false; table_columns.len()];
        let mut sources = Vec::with_capacity(declared.fields().len());
        for field in declared.fields() {
            let Some(index) = table_columns
                .iter()
                .position(|(name, _)| name.eq_ignore_ascii_case(field.name()))
            else {
                let names: Vec<&str> = table_columns.iter().map(|(name, _)| *name).collect();
                return Err(ConnectorError::InvalidOption(format!(
                    "column '{}' is not a column of the nexmark '{table}' table; \
                     its columns are: {}",
                    field.name(),
                    names.join(", ")
                )));
            };
            let generated = &table_columns[index].1;
            let target = field.data_type();
            let castable =
                can_cast_types(generated, target) && (is_string(target) || !is_string(generated));
            if !castable {
                return Err(ConnectorError::InvalidOption(format!(
                    "column '{}' of the nexmark '{table}' table is {} and cannot be read as {target}",
                    field.name(),
                    sql_type_name(generated),
                )));
            }
            wanted[index] = true;
            sources.push((index, (generated != target).then(|| target.clone())));
        }
        Ok(Self {
            schema: Arc::clone(declared),
            sources,
            wanted,
        })
    }

    /// Per column of the table's full schema, whether it must be generated.
    pub fn wanted(&self) -> Vec<bool> {
        self.wanted.clone()
    }

    /// Selects, orders and casts generated columns into a batch of the declared schema.
    pub fn assemble(
        &self,
        columns: &[Option<ArrayRef>],
        num_rows: usize,
    ) -> ConnectorResult<RecordBatch> {
        let cast_options = CastOptions {
            safe: false,
            ..CastOptions::default()
        };
        let mut arrays = Vec::with_capacity(self.sources.len());
        for (index, cast_to) in &self.sources {
            let Some(Some(column)) = columns.get(*index) else {
                return Err(ArrowError::ComputeError(format!(
                    "nexmark column {index} was read but not generated"
                ))
                .into());
            };
            arrays.push(match cast_to {
                None => Arc::clone(column),
                Some(data_type) => cast_with_options(column, data_type, &cast_options)?,
            });
        }
        let options = RecordBatchOptions::new().with_row_count(Some(num_rows));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            arrays,
            &options,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_positions_match_the_schemas() {
        let bid = table_schema(NexmarkTable::Bid);
        assert_eq!(bid.field(columns::bid::DATE_TIME).name(), "date_time");
        assert_eq!(bid.field(columns::bid::EXTRA).name(), "extra");
        let person = table_schema(NexmarkTable::Person);
        assert_eq!(
            person.field(columns::person::CREDIT_CARD).name(),
            "credit_card"
        );
        assert_eq!(person.field(columns::person::EXTRA).name(), "extra");
        let auction = table_schema(NexmarkTable::Auction);
        assert_eq!(auction.field(columns::auction::EXPIRES).name(), "expires");
        assert_eq!(auction.field(columns::auction::EXTRA).name(), "extra");
    }

    fn declared(fields: Vec<Field>) -> SchemaRef {
        Arc::new(Schema::new(fields))
    }

    fn message(result: ConnectorResult<OutputPlan>) -> String {
        match result {
            Err(ConnectorError::InvalidOption(message)) => message,
            other => panic!("expected InvalidOption, got {other:?}"),
        }
    }

    #[test]
    fn unknown_columns_and_impossible_types_are_named() {
        let unknown = declared(vec![
            Field::new("Bidder", DataType::Int64, true),
            Field::new("colour", DataType::Utf8, true),
        ]);
        let text = message(OutputPlan::new(NexmarkTable::Bid, &unknown));
        assert!(
            text.contains("'colour'") && text.contains("auction, bidder"),
            "{text}"
        );

        let wrong_type = declared(vec![Field::new("channel", DataType::Int64, true)]);
        let text = message(OutputPlan::new(NexmarkTable::Bid, &wrong_type));
        assert!(
            text.contains("'channel'") && text.contains("VARCHAR"),
            "{text}"
        );
    }

    #[test]
    fn wanted_columns_follow_the_declaration() {
        let schema = declared(vec![
            Field::new("EXTRA", DataType::Utf8, true),
            Field::new("price", DataType::Float64, true),
        ]);
        let plan = OutputPlan::new(NexmarkTable::Bid, &schema).unwrap();
        assert_eq!(
            plan.wanted(),
            vec![false, false, true, false, false, false, true]
        );
    }
}
