//! Tests of the nexmark source through the connector interface: what a query reading it sees.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMillisecondType,
};
use datafusion::arrow::util::display::array_value_to_string;
use eddy_engine::connector::{
    ConnectorError, ConnectorOptions, SourceConnector, SourceContext, SourceMetrics, SourceSplit,
};
use futures::StreamExt;

use super::NexmarkConnector;
use super::config::NexmarkTable;
use super::generator_config::{
    AUCTION_ID_LEAD, FIRST_AUCTION_ID, FIRST_PERSON_ID, PERSON_ID_LEAD, count_before, event_of,
    last_base0_auction_id, last_base0_person_id,
};

fn options(pairs: &[(&str, &str)]) -> ConnectorOptions {
    let mut options: ConnectorOptions = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    options.insert("connector".into(), "nexmark".into());
    options
}

fn default_schema(options: &ConnectorOptions) -> SchemaRef {
    NexmarkConnector
        .default_schema(options)
        .unwrap()
        .expect("nexmark knows its schema")
}

/// Reads a bounded source to its end; returns the batches and the metrics' row count.
async fn read_all(
    schema: SchemaRef,
    options: ConnectorOptions,
    batch_size: usize,
) -> (Vec<RecordBatch>, u64) {
    NexmarkConnector.validate(&schema, &options).unwrap();
    let metrics = Arc::new(SourceMetrics::default());
    let reader = NexmarkConnector
        .open(SourceContext {
            source_name: "test".into(),
            start_row: 0,
            start_position: None,
            metadata: Vec::new(),
            schema,
            options,
            metrics: Arc::clone(&metrics),
            batch_size,
            split: SourceSplit::WHOLE,
            parallelism: 1,
            projection: None,
        })
        .unwrap();
    assert!(reader.bounded);
    let batches: Vec<RecordBatch> = reader.stream.map(|batch| batch.unwrap()).collect().await;
    (batches, metrics.rows())
}

async fn read_table(pairs: &[(&str, &str)], batch_size: usize) -> RecordBatch {
    let options = options(pairs);
    let schema = default_schema(&options);
    let (batches, _) = read_all(Arc::clone(&schema), options, batch_size).await;
    for batch in &batches {
        assert_eq!(batch.schema(), schema);
        assert!(batch.num_rows() > 0 && batch.num_rows() <= batch_size);
    }
    concat_batches(&schema, &batches).unwrap()
}

fn int64s(batch: &RecordBatch, column: &str) -> Vec<i64> {
    let column = batch.column_by_name(column).unwrap();
    column.as_primitive::<Int64Type>().values().to_vec()
}

fn millis(batch: &RecordBatch, column: &str) -> Vec<i64> {
    let column = batch.column_by_name(column).unwrap();
    column
        .as_primitive::<TimestampMillisecondType>()
        .values()
        .to_vec()
}

fn strings(batch: &RecordBatch, column: &str) -> Vec<String> {
    let column = batch.column_by_name(column).unwrap();
    column
        .as_string::<i32>()
        .iter()
        .map(|value| value.unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn same_seed_same_rows_other_seed_other_rows() {
    for table in ["bid", "person", "auction"] {
        let run = |seed: &'static str, batch_size| async move {
            read_table(
                &[
                    ("nexmark.table", table),
                    ("events.max", "3000"),
                    ("seed", seed),
                ],
                batch_size,
            )
            .await
        };
        let first = run("42", 100).await;
        // Batching must not change the rows either.
        assert_eq!(first, run("42", 7).await, "{table}");
        assert_ne!(first, run("43", 100).await, "{table}");
    }
}

#[tokio::test]
async fn events_max_bounds_the_combined_stream() {
    // 1234 events = 24 groups of 50 (1 person, 3 auctions, 46 bids) and 34 more events:
    // 1 person, 3 auctions and 30 bids.
    let bids = read_table(&[("nexmark.table", "bids"), ("events.max", "1234")], 500).await;
    let persons = read_table(&[("nexmark.table", "person"), ("events.max", "1234")], 500).await;
    let auctions = read_table(&[("nexmark.table", "auction"), ("events.max", "1234")], 500).await;
    assert_eq!(bids.num_rows(), 24 * 46 + 30);
    assert_eq!(
        bids.num_rows() as u64,
        count_before(NexmarkTable::Bid, 1234)
    );
    assert_eq!(persons.num_rows(), 25);
    assert_eq!(auctions.num_rows(), 75);

    // Persons and auctions get consecutive ids from 1000.
    assert_eq!(int64s(&persons, "id"), (1000..1025).collect::<Vec<_>>());
    assert_eq!(int64s(&auctions, "id"), (1000..1075).collect::<Vec<_>>());

    let bid_options = options(&[("nexmark.table", "bid"), ("events.max", "1234")]);
    let (batches, rows) = read_all(default_schema(&bid_options), bid_options, 100).await;
    assert_eq!(rows, 1134, "metrics count every emitted row");
    assert_eq!(batches.len(), 12);

    let (batches, rows) = read_all(
        default_schema(&options(&[("nexmark.table", "bid")])),
        options(&[("nexmark.table", "bid"), ("events.max", "0")]),
        100,
    )
    .await;
    assert!(batches.is_empty());
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn timestamps_are_deterministic_and_non_decreasing() {
    for table in ["bid", "person", "auction"] {
        let batch = read_table(
            &[
                ("nexmark.table", table),
                ("events.max", "20000"),
                ("base.time", "5000"),
            ],
            1000,
        )
        .await;
        let times = millis(&batch, "date_time");
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{table}");
        // 10,000 events per second of event time: event n is at base + n / 10 ms.
        let table_kind = NexmarkTable::parse(table).unwrap();
        for (row, time) in times.iter().enumerate() {
            let event = event_of(table_kind, row as u64) as i64;
            assert_eq!(*time, 5000 + event / 10, "{table} row {row}");
        }
    }

    let auctions = read_table(
        &[("nexmark.table", "auction"), ("events.max", "5000")],
        1000,
    )
    .await;
    let opened = millis(&auctions, "date_time");
    let expires = millis(&auctions, "expires");
    assert!(opened.iter().zip(&expires).all(|(o, e)| o < e));
}

#[tokio::test]
async fn bids_refer_to_generated_auctions_and_people() {
    let events = 50_000;
    let max = events.to_string();
    let bids = read_table(&[("nexmark.table", "bid"), ("events.max", &max)], 4096).await;
    let auctions = read_table(&[("nexmark.table", "auction"), ("events.max", &max)], 4096).await;
    let auction_ids = int64s(&auctions, "id");
    let last_auction_id = *auction_ids.last().unwrap();

    let mut already_created = 0;
    for (row, (auction, bidder)) in int64s(&bids, "auction")
        .into_iter()
        .zip(int64s(&bids, "bidder"))
        .enumerate()
    {
        let event = event_of(NexmarkTable::Bid, row as u64);
        let last_auction = (last_base0_auction_id(event) + FIRST_AUCTION_ID) as i64;
        let last_person = (last_base0_person_id(event) + FIRST_PERSON_ID) as i64;
        assert!(auction >= FIRST_AUCTION_ID as i64, "row {row}: {auction}");
        // As in the standard generator, a cold bid may name one of the next few auctions,
        // which appear shortly after it.
        assert!(
            auction <= last_auction + AUCTION_ID_LEAD as i64,
            "row {row}"
        );
        assert!(bidder >= FIRST_PERSON_ID as i64);
        assert!(bidder <= last_person + PERSON_ID_LEAD as i64, "row {row}");
        if auction <= last_auction {
            already_created += 1;
        }
        assert!(auction <= last_auction_id + AUCTION_ID_LEAD as i64);
    }
    // Half the bids go to a hot auction, the others mostly to one of the 101 latest ones.
    let share = f64::from(already_created) / bids.num_rows() as f64;
    assert!(share > 0.93, "{share}");

    // Hot auctions: about half of the bids are for a multiple of 100 (plus the first id).
    let hot = int64s(&bids, "auction")
        .iter()
        .filter(|&&a| (a - FIRST_AUCTION_ID as i64) % 100 == 0)
        .count();
    let hot_share = hot as f64 / bids.num_rows() as f64;
    assert!((0.45..0.6).contains(&hot_share), "{hot_share}");
}

#[tokio::test]
async fn columns_look_like_nexmark() {
    let persons = read_table(&[("nexmark.table", "person"), ("events.max", "5000")], 1000).await;
    for card in strings(&persons, "credit_card") {
        assert_eq!(card.len(), 19, "{card}");
        assert!(
            card.split(' ')
                .all(|g| g.len() == 4 && g.bytes().all(|b| b.is_ascii_digit()))
        );
    }
    for email in strings(&persons, "email_address") {
        assert!(email.ends_with(".com") && email.contains('@'), "{email}");
    }
    let bids = read_table(&[("nexmark.table", "bid"), ("events.max", "5000")], 1000).await;
    let prices = int64s(&bids, "price");
    assert!(prices.iter().all(|p| (100..=100_000_000).contains(p)));
    let extra = strings(&bids, "extra");
    let average = extra.iter().map(String::len).sum::<usize>() as f64 / extra.len() as f64;
    assert!((60.0..76.0).contains(&average), "{average}");
    let channels = strings(&bids, "channel");
    assert!(channels.iter().any(|c| c == "Google"));
    assert!(channels.iter().any(|c| c.starts_with("channel-")));
    assert!(
        strings(&bids, "url")
            .iter()
            .all(|u| u.starts_with("https://www.nexmark.com/"))
    );
}

#[tokio::test]
async fn declared_schema_selects_reorders_and_casts() {
    let pairs = [("nexmark.table", "bid"), ("events.max", "2000")];
    let full = read_table(&pairs, 300).await;

    let declared: SchemaRef = Arc::new(Schema::new(vec![
        Field::new(
            "Date_Time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("price", DataType::Float64, false),
        Field::new("AUCTION", DataType::Int64, true),
    ]));
    let (batches, _) = read_all(Arc::clone(&declared), options(&pairs), 300).await;
    for batch in &batches {
        assert_eq!(batch.schema(), declared);
    }
    let narrow = concat_batches(&declared, &batches).unwrap();
    assert_eq!(narrow.num_rows(), full.num_rows());
    assert_eq!(int64s(&narrow, "AUCTION"), int64s(&full, "auction"));
    let prices: Vec<i64> = narrow
        .column(1)
        .as_primitive::<Float64Type>()
        .values()
        .iter()
        .map(|p| *p as i64)
        .collect();
    assert_eq!(prices, int64s(&full, "price"));
    let micros = narrow
        .column(0)
        .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
    let expected: Vec<i64> = millis(&full, "date_time")
        .iter()
        .map(|ms| ms * 1000)
        .collect();
    assert_eq!(micros.values().to_vec(), expected);

    // No columns at all still counts rows.
    let empty: SchemaRef = Arc::new(Schema::empty());
    let (batches, rows) = read_all(empty, options(&pairs), 300).await;
    assert_eq!(rows as usize, full.num_rows());
    assert_eq!(
        batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
        full.num_rows()
    );
}

#[tokio::test]
async fn a_column_reads_the_same_whichever_others_are_read() {
    for table in ["bid", "person", "auction"] {
        let pairs = [("nexmark.table", table), ("events.max", "3000")];
        let full = read_table(&pairs, 500).await;
        let schema = full.schema();
        // Each column alone, then the padding with the first column: a bid that does not
        // read its channel or url skips their draws before drawing the padding.
        let mut projections: Vec<Vec<usize>> =
            (0..schema.fields().len()).map(|c| vec![c]).collect();
        projections.push(vec![schema.fields().len() - 1, 0]);
        for projection in projections {
            let declared = Arc::new(schema.project(&projection).unwrap());
            let (batches, _) = read_all(Arc::clone(&declared), options(&pairs), 500).await;
            let narrow = concat_batches(&declared, &batches).unwrap();
            for (position, &column) in projection.iter().enumerate() {
                assert_eq!(
                    narrow.column(position),
                    full.column(column),
                    "{table}.{} read with {projection:?}",
                    schema.field(column).name()
                );
            }
        }
    }
}

fn invalid_option(result: Result<(), ConnectorError>) -> String {
    match result {
        Err(ConnectorError::InvalidOption(message)) => message,
        other => panic!("expected InvalidOption, got {other:?}"),
    }
}

#[test]
fn mistakes_are_reported_at_create_source() {
    let schema = default_schema(&options(&[("nexmark.table", "bid")]));
    let validate = |pairs: &[(&str, &str)]| NexmarkConnector.validate(&schema, &options(pairs));

    let message = invalid_option(validate(&[("nexmark.table", "bid"), ("events.num", "5")]));
    assert!(
        message.contains("'events.num'") && message.contains("events.max"),
        "{message}"
    );
    let message = invalid_option(validate(&[
        ("nexmark.table", "bid"),
        ("events.max", "lots"),
    ]));
    assert!(message.contains("'lots'"), "{message}");
    // A bid schema does not fit the person table.
    let message = invalid_option(validate(&[("nexmark.table", "person")]));
    assert!(
        message.contains("'auction'") && message.contains("person"),
        "{message}"
    );
    assert!(NexmarkConnector.default_schema(&options(&[])).is_err());
    assert!(validate(&[("nexmark.table", "BID"), ("events.per.second", "0")]).is_ok());
}

#[tokio::test]
async fn rate_limit_paces_emission_in_small_batches() {
    // 200 events per second: the 100th event is due after 495 ms.
    let pairs = [
        ("nexmark.table", "bid"),
        ("events.per.second", "200"),
        ("events.max", "100"),
    ];
    let started = Instant::now();
    let (batches, rows) = read_all(default_schema(&options(&pairs)), options(&pairs), 8192).await;
    let elapsed = started.elapsed();
    assert_eq!(rows, 92);
    assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
    // Rows are flushed about every 100 ms rather than held for a full batch.
    assert!(batches.len() >= 3, "{} batches", batches.len());

    // Event time follows the configured rate: event n is at base + n * 5 ms.
    let schema = default_schema(&options(&pairs));
    let all = concat_batches(&schema, &batches).unwrap();
    let times = millis(&all, "date_time");
    assert_eq!(times[0], 1_672_531_200_000 + 4 * 5);
}

#[tokio::test]
async fn a_slow_stream_delivers_rows_promptly_and_stops_when_dropped() {
    // 10 events per second: the first bid is event 4, due 400 ms after the first poll.
    let options = options(&[("nexmark.table", "bid"), ("events.per.second", "10")]);
    let schema = default_schema(&options);
    let mut reader = NexmarkConnector
        .open(SourceContext {
            source_name: "test".into(),
            start_row: 0,
            start_position: None,
            metadata: Vec::new(),
            schema,
            options,
            metrics: Arc::new(SourceMetrics::default()),
            batch_size: 8192,
            split: SourceSplit::WHOLE,
            parallelism: 1,
            projection: None,
        })
        .unwrap();
    assert!(!reader.bounded);
    let started = Instant::now();
    let first = tokio::time::timeout(Duration::from_secs(10), reader.stream.next())
        .await
        .expect("a batch long before 10 s")
        .unwrap()
        .unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(350), "{waited:?}");
    // The row is emitted when due, not held back until 8192 bids have accumulated.
    assert!((1..=3).contains(&first.num_rows()), "{}", first.num_rows());
    // Nothing runs outside the stream's polls, so dropping it stops the source.
    drop(reader);
}

/// Reads reader `index` of `count` of a bounded source to its end.
async fn read_split(
    pairs: &[(&str, &str)],
    batch_size: usize,
    index: usize,
    count: usize,
) -> Vec<RecordBatch> {
    let options = options(pairs);
    let reader = NexmarkConnector
        .open(SourceContext {
            source_name: "test".into(),
            start_row: 0,
            start_position: None,
            metadata: Vec::new(),
            schema: default_schema(&options),
            options,
            metrics: Arc::new(SourceMetrics::default()),
            batch_size,
            split: SourceSplit { index, count },
            parallelism: 1,
            projection: None,
        })
        .unwrap();
    reader.stream.map(|batch| batch.unwrap()).collect().await
}

/// Every row of `batch` as text, all columns.
fn row_texts(batch: &RecordBatch) -> Vec<String> {
    (0..batch.num_rows())
        .map(|row| {
            let values: Vec<String> = batch
                .columns()
                .iter()
                .map(|column| array_value_to_string(column, row).unwrap())
                .collect();
            values.join("|")
        })
        .collect()
}

#[tokio::test]
async fn split_readers_share_the_rows_without_sharing_a_millisecond() {
    // 50,000 events are 6.1 blocks of 8192: with 2 readers, reader 0 reads blocks 0, 2, 4
    // and 6 (a partial one), reader 1 blocks 1, 3 and 5.
    for table in ["bid", "person", "auction"] {
        let pairs = [("nexmark.table", table), ("events.max", "50000")];
        let whole = read_table(&pairs, 4096).await;
        let expected = count_before(NexmarkTable::parse(table).unwrap(), 50_000) as usize;
        assert_eq!(whole.num_rows(), expected);
        let position: HashMap<String, usize> = row_texts(&whole)
            .into_iter()
            .enumerate()
            .map(|(position, row)| (row, position))
            .collect();
        assert_eq!(position.len(), expected, "{table} rows are distinct");

        for count in [2, 3] {
            let mut seen = vec![false; expected];
            let mut reader_times: Vec<HashSet<i64>> = Vec::new();
            for index in 0..count {
                let batches = read_split(&pairs, 1000, index, count).await;
                let last = batches.len().saturating_sub(1);
                for batch in &batches[..last] {
                    assert_eq!(batch.num_rows(), 1000, "batches fill across blocks");
                }
                let schema = whole.schema();
                let rows = concat_batches(&schema, &batches).unwrap();
                assert!(rows.num_rows() > 0, "{table}: reader {index} of {count}");
                // The reader's rows are rows of the whole source, in its order.
                let positions: Vec<usize> = row_texts(&rows)
                    .iter()
                    .map(|row| *position.get(row).expect("a row of the whole source"))
                    .collect();
                assert!(
                    positions.windows(2).all(|pair| pair[0] < pair[1]),
                    "{table}: reader {index} of {count} is in event order"
                );
                for position in positions {
                    assert!(!seen[position], "{table}: row {position} read twice");
                    seen[position] = true;
                }
                let times: HashSet<i64> = millis(&rows, "date_time").into_iter().collect();
                for other in &reader_times {
                    assert!(
                        times.is_disjoint(other),
                        "{table}: a date_time in two of {count} readers"
                    );
                }
                reader_times.push(times);
            }
            assert!(
                seen.iter().all(|&seen| seen),
                "{table}: {count} readers miss rows"
            );
        }
    }
}

#[test]
fn only_unpaced_sources_split() {
    assert!(NexmarkConnector.splittable(&options(&[("nexmark.table", "bid")])));
    assert!(NexmarkConnector.splittable(&options(&[
        ("nexmark.table", "bid"),
        ("events.per.second", "0"),
    ])));
    assert!(!NexmarkConnector.splittable(&options(&[
        ("nexmark.table", "bid"),
        ("events.per.second", "1000"),
    ])));

    let options = options(&[("nexmark.table", "bid")]);
    let opened = NexmarkConnector.open(SourceContext {
        source_name: "test".into(),
        start_row: 0,
        start_position: None,
        metadata: Vec::new(),
        schema: default_schema(&options),
        options,
        metrics: Arc::new(SourceMetrics::default()),
        batch_size: 100,
        split: SourceSplit { index: 2, count: 2 },
        parallelism: 1,
        projection: None,
    });
    assert!(matches!(opened, Err(ConnectorError::Unsupported(_))));
}

/// Generation speed of unthrottled sources, in release mode, best of three runs:
/// `cargo test --release -p eddy-connectors nexmark::tests::bid_throughput -- --ignored --nocapture`
/// Events per second count the whole combined stream (`events.max`), as the benchmarks do; a
/// bid source yields 46 rows of every 50 events. `NEXMARK_BENCH=<label prefix>` runs only the
/// matching cases (`NEXMARK_BENCH='bid: auction'` for the narrow bids, e.g. under `perf`).
#[tokio::test]
#[ignore = "measurement, not a check"]
async fn bid_throughput() {
    const NARROW: &[&str] = &["auction", "bidder", "price", "date_time"];
    for (label, table, events, columns) in [
        (
            "bid: auction, bidder, price, date_time",
            "bid",
            50_000_000,
            Some(NARROW),
        ),
        ("bid: all columns", "bid", 50_000_000, None),
        ("person: all columns", "person", 100_000_000, None),
        ("auction: all columns", "auction", 20_000_000, None),
    ] {
        if std::env::var("NEXMARK_BENCH").is_ok_and(|only| !label.starts_with(&only)) {
            continue;
        }
        let events_max = events.to_string();
        let options = options(&[("nexmark.table", table), ("events.max", &events_max)]);
        let mut schema = default_schema(&options);
        if let Some(names) = columns {
            let indices: Vec<usize> = names
                .iter()
                .map(|name| schema.index_of(name).unwrap())
                .collect();
            schema = Arc::new(schema.project(&indices).unwrap());
        }
        let mut best = f64::INFINITY;
        let mut rows = 0;
        for _ in 0..3 {
            let reader = NexmarkConnector
                .open(SourceContext {
                    source_name: "bench".into(),
                    start_row: 0,
                    start_position: None,
                    metadata: Vec::new(),
                    schema: Arc::clone(&schema),
                    options: options.clone(),
                    metrics: Arc::new(SourceMetrics::default()),
                    batch_size: 8192,
                    split: SourceSplit::WHOLE,
                    parallelism: 1,
                    projection: None,
                })
                .unwrap();
            let started = Instant::now();
            rows = reader
                .stream
                .fold(
                    0,
                    |rows, batch| async move { rows + batch.unwrap().num_rows() },
                )
                .await;
            best = best.min(started.elapsed().as_secs_f64());
        }
        println!(
            "{label}: {events} events ({rows} rows) in {best:.3} s = {:.2} M events/s, \
             {:.2} M rows/s",
            events as f64 / best / 1e6,
            rows as f64 / best / 1e6
        );
    }
}

/// Reads reader `index` of `count` of a bounded source from row `start_row`, all rows in one
/// batch (with the batch sizes it produced).
async fn read_split_from(
    pairs: &[(&str, &str)],
    batch_size: usize,
    split: SourceSplit,
    start_row: u64,
) -> (RecordBatch, Vec<usize>) {
    let options = options(pairs);
    let schema = default_schema(&options);
    let reader = NexmarkConnector
        .open(SourceContext {
            source_name: "test".into(),
            start_row,
            start_position: None,
            metadata: Vec::new(),
            schema: Arc::clone(&schema),
            options,
            metrics: Arc::new(SourceMetrics::default()),
            batch_size,
            split,
            parallelism: 1,
            projection: None,
        })
        .unwrap();
    let batches: Vec<RecordBatch> = reader.stream.map(|batch| batch.unwrap()).collect().await;
    let sizes = batches.iter().map(RecordBatch::num_rows).collect();
    (concat_batches(&schema, &batches).unwrap(), sizes)
}

#[tokio::test]
async fn a_reader_started_at_a_row_produces_the_rest_of_its_split() {
    // 20,000 events are 2.4 blocks: with 2 readers reader 0 owns blocks 0 and 2, so its
    // rows cross a block it does not own.
    for table in ["bid", "person", "auction"] {
        let pairs = [("nexmark.table", table), ("events.max", "20000")];
        for count in [1, 2, 3] {
            for index in 0..count {
                let split = SourceSplit { index, count };
                let (whole, sizes) = read_split_from(&pairs, 100, split, 0).await;
                let total = whole.num_rows() as u64;
                assert!(total > 0, "{table} {index}/{count}");
                let first_batch = sizes[0] as u64;
                let mut starts = vec![0, 1, first_batch / 2, first_batch, total / 2];
                starts.extend([total - 1, total, total + 1, total + 1000]);
                // Batch boundaries (block boundaries are checked in `split`'s tests).
                let mut at = 0;
                for size in sizes.iter().take(3) {
                    at += *size as u64;
                    starts.push(at);
                }
                for start in starts {
                    let (rest, _) = read_split_from(&pairs, 100, split, start).await;
                    let skip = (start as usize).min(whole.num_rows());
                    let expected = whole.slice(skip, whole.num_rows() - skip);
                    assert_eq!(
                        row_texts(&rest),
                        row_texts(&expected),
                        "{table}: reader {index} of {count} from row {start}"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn a_restored_paced_reader_resumes_the_pace_from_its_position() {
    // 100 events per second, 1000 events: a reader restored at the bid of event 950 has 50
    // events left, about 0.5 s, whether or not it is the pace of the first 9.5 s.
    let pairs = [
        ("nexmark.table", "bid"),
        ("events.per.second", "100"),
        ("events.max", "1000"),
    ];
    let start_row = count_before(NexmarkTable::Bid, 950);
    assert_eq!(event_of(NexmarkTable::Bid, start_row), 954);
    let started = Instant::now();
    let (rest, _) = read_split_from(&pairs, 8192, SourceSplit::WHOLE, start_row).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(400),
        "a burst: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "waited for skipped events: {elapsed:?}"
    );
    // Event times are those of the uninterrupted stream: 10 ms apart from the base.
    let times = millis(&rest, "date_time");
    assert_eq!(
        rest.num_rows() as u64,
        count_before(NexmarkTable::Bid, 1000) - start_row
    );
    assert_eq!(times[0], 1_672_531_200_000 + 954 * 10);
}
