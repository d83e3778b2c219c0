//! The datagen reader: sequences, ranges, nulls, splits, restore and pacing.

use std::sync::Arc;

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use eddy_engine::connector::{
    ConnectorError, ConnectorOptions, SourceConnector, SourceContext, SourceMetrics, SourceSplit,
};
use futures::StreamExt;

use super::DatagenConnector;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("small", DataType::Int32, true),
        Field::new("name", DataType::Utf8, true),
        Field::new(
            "ts",
            DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, None),
            true,
        ),
    ]))
}

fn options(pairs: &[(&str, &str)]) -> ConnectorOptions {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn read(options: ConnectorOptions, split: SourceSplit, start_row: u64) -> Vec<Vec<String>> {
    DatagenConnector.validate(&schema(), &options).unwrap();
    let reader = DatagenConnector
        .open(SourceContext {
            source_name: "g".to_string(),
            schema: schema(),
            projection: None,
            options,
            metrics: Arc::new(SourceMetrics::default()),
            batch_size: 7,
            split,
            parallelism: 1,
            start_row,
            start_position: None,
            metadata: Vec::new(),
        })
        .unwrap();
    assert!(reader.bounded);
    let batches: Vec<_> = reader.stream.map(|b| b.unwrap()).collect().await;
    let mut rows = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            rows.push(
                (0..3)
                    .map(|c| {
                        let column = b.column(c);
                        if column.is_null(r) {
                            "NULL".to_string()
                        } else {
                            datafusion::arrow::util::display::array_value_to_string(column, r)
                                .unwrap()
                        }
                    })
                    .collect(),
            );
        }
    }
    rows
}

fn bounded() -> ConnectorOptions {
    options(&[
        ("connector", "datagen"),
        ("rows-per-second", "0"),
        ("fields.id.kind", "sequence"),
        ("fields.id.start", "10"),
        ("fields.id.end", "29"),
        ("fields.small.min", "-3"),
        ("fields.small.max", "3"),
        ("fields.small.null-rate", "0.25"),
        ("fields.name.length", "4"),
        ("fields.ts.max-past", "5 s"),
    ])
}

#[tokio::test]
async fn sequences_end_the_source_and_random_values_stay_in_their_ranges() {
    let rows = read(bounded(), SourceSplit::WHOLE, 0).await;
    let ids: Vec<i64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert_eq!(ids, (10..30).collect::<Vec<_>>());
    let smalls: Vec<&String> = rows.iter().map(|r| &r[1]).collect();
    assert!(
        smalls.iter().any(|s| *s == "NULL"),
        "null-rate 0.25 over 20 rows"
    );
    assert!(
        smalls
            .iter()
            .filter(|s| **s != "NULL")
            .all(|s| (-3..=3).contains(&s.parse::<i64>().unwrap()))
    );
    assert!(rows.iter().all(|r| r[2].len() == 4));
    // The same seed gives the same rows; another seed others.
    assert_eq!(read(bounded(), SourceSplit::WHOLE, 0).await, rows);
    let mut seeded = bounded();
    seeded.insert("seed".to_string(), "7".to_string());
    assert_ne!(read(seeded, SourceSplit::WHOLE, 0).await, rows);

    // Two readers make the same rows between them; a restored reader continues at its row.
    let mut split: Vec<Vec<String>> = Vec::new();
    for index in 0..2 {
        split.extend(read(bounded(), SourceSplit { index, count: 2 }, 0).await);
    }
    split.sort_by_key(|r| r[0].parse::<i64>().unwrap());
    assert_eq!(split, rows);
    assert_eq!(read(bounded(), SourceSplit::WHOLE, 15).await, rows[15..]);
}

#[tokio::test]
async fn number_of_rows_bounds_a_random_source_and_the_rate_paces_it() {
    let open = |rate: &str, rows: &str| {
        let opts = options(&[
            ("connector", "datagen"),
            ("rows-per-second", rate),
            ("number-of-rows", rows),
        ]);
        DatagenConnector
            .open(SourceContext {
                source_name: "g".to_string(),
                schema: schema(),
                projection: Some(vec![1]),
                options: opts,
                metrics: Arc::new(SourceMetrics::default()),
                batch_size: 100,
                split: SourceSplit::WHOLE,
                parallelism: 1,
                start_row: 0,
                start_position: None,
                metadata: Vec::new(),
            })
            .unwrap()
    };
    let unpaced: Vec<_> = open("0", "10").stream.map(|b| b.unwrap()).collect().await;
    assert_eq!(
        unpaced.iter().map(|b| b.num_rows()).collect::<Vec<_>>(),
        [10]
    );
    // At 4 rows a second the first row is due at once and the third half a second later:
    // they cannot all come in the first batch.
    let paced: Vec<_> = open("4", "3").stream.map(|b| b.unwrap()).collect().await;
    assert_eq!(paced.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
    assert!(paced.len() >= 2, "{} batches", paced.len());
}

#[test]
fn mistakes_are_reported() {
    let check = |pairs: &[(&str, &str)], needle: &str| {
        let mut o = options(&[("connector", "datagen")]);
        o.extend(options(pairs));
        let e = DatagenConnector.validate(&schema(), &o).unwrap_err();
        assert!(e.to_string().contains(needle), "{e}");
        e
    };
    check(&[("fields.nope.min", "1")], "no column 'nope'");
    check(&[("fields.id.kind", "sequence")], "needs fields.id.start");
    check(
        &[("fields.id.start", "1")],
        "needs fields.id.kind = 'sequence'",
    );
    check(
        &[("fields.small.min", "5"), ("fields.small.max", "1")],
        "is above",
    );
    check(&[("fields.id.null-rate", "2")], "between 0 and 1");
    check(&[("rows-per-sec", "1")], "unknown option");
    let e = check(&[("fields.name.var-len", "true")], "var-len");
    assert!(matches!(e, ConnectorError::Unsupported(_)));
    let list = Arc::new(Schema::new(vec![Field::new(
        "l",
        DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
        true,
    )]));
    let e = DatagenConnector
        .validate(&list, &options(&[("connector", "datagen")]))
        .unwrap_err();
    assert!(matches!(e, ConnectorError::Unsupported(_)), "{e:?}");
}
