//! Bad events through the server: `format.on-error` on file sources. `'skip'` delivers the
//! good rows and counts the bad ones in `SHOW JOBS`; `'fail'` fails the query (22P02, naming
//! the line) and the job; `'dead-letter'` delivers the good rows and records each bad line in
//! `eddy_dead_letters`, which SQL reads as a snapshot and follows with COPY, which survives a
//! restart, and which a restored job does not fill twice. Users cannot write the table, and a
//! bad option value is 22023.

use std::time::Duration;

use tokio_postgres::Client;

mod common;
use common::{connect_with_socket, start_checkpointing, temp_dir, text_rows as rows};

/// Lines 2 (a bad number), 3 (a field missing) and 5 (NULL in the NOT NULL auction) are bad.
const BIDS: &str = "1,web,2024-01-01 00:00:01
x,app,2024-01-01 00:00:02
3,web
4,app,2024-01-01 00:00:04
,web,2024-01-01 00:00:05
6,web,2024-01-01 00:00:06
";

const COLUMNS: &str = "(auction BIGINT NOT NULL, channel VARCHAR, ts TIMESTAMP(3))";

/// `CREATE SOURCE name` over `path` with these extra options.
fn create_source(name: &str, path: &str, extra: &str) -> String {
    format!(
        "CREATE SOURCE {name} {COLUMNS} WITH (connector = 'file', path = '{path}', \
         format = 'csv'{extra})"
    )
}

fn table(rows: &[&[&str]]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| r.iter().map(|v| v.to_string()).collect())
        .collect()
}

/// Rows in order (a stream cannot be sorted by its query).
fn sorted(mut rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    rows.sort_by_key(|r| r[0].parse::<i64>().unwrap_or(i64::MAX));
    rows
}

/// Polls `sql` (bounded) until it returns `expected`.
async fn eventually(client: &Client, sql: &str, expected: &[&[&str]]) {
    let expected = table(expected);
    let mut last = Vec::new();
    for _ in 0..400 {
        last = rows(client, sql).await;
        if last == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{sql} returned {last:?}, expected {expected:?}");
}

/// The SQLSTATE and message of a statement that must fail.
async fn error_of(client: &Client, sql: &str) -> (String, String) {
    let error = client
        .simple_query(sql)
        .await
        .expect_err("the statement fails");
    let db = error.as_db_error().expect("a server error");
    (db.code().code().to_string(), db.message().to_string())
}

const GOOD: &[&[&str]] = &[&["1", "web"], &["4", "app"], &["6", "web"]];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_counts_fail_fails_and_dead_letters_are_readable_by_sql() {
    let dir = temp_dir("dead-letters-modes");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bids.csv");
    std::fs::write(&path, BIDS).unwrap();
    let path = path.display().to_string();
    let server = start_checkpointing(&dir, Duration::from_millis(100)).await;
    let (client, socket) = connect_with_socket(&server).await;

    // skip (the default, and spelled out): the good rows; the bad ones counted in SHOW JOBS.
    client
        .batch_execute(&create_source("bids_skip", &path, ""))
        .await
        .unwrap();
    client
        .batch_execute(&create_source(
            "bids_skip2",
            &path,
            ", format.on-error = 'skip'",
        ))
        .await
        .unwrap();
    for source in ["bids_skip", "bids_skip2"] {
        let sql = format!("SELECT auction, channel FROM {source}");
        assert_eq!(sorted(rows(&client, &sql).await), table(GOOD));
    }
    client
        .batch_execute("CREATE MATERIALIZED VIEW skipped AS SELECT auction, channel FROM bids_skip")
        .await
        .unwrap();
    eventually(
        &client,
        "SELECT status, malformed_rows, dead_letters FROM eddy_jobs WHERE name = 'skipped'",
        &[&["finished", "3", "0"]],
    )
    .await;
    eventually(&client, "SELECT * FROM skipped ORDER BY auction", GOOD).await;

    // fail: the query fails at the first bad line, naming it; so does a job.
    client
        .batch_execute(&create_source(
            "bids_fail",
            &path,
            ", format.on-error = 'fail'",
        ))
        .await
        .unwrap();
    let (code, message) = error_of(&client, "SELECT * FROM bids_fail").await;
    assert_eq!(code, "22P02", "{message}");
    assert!(message.contains(&format!("{path}:2")), "{message}");
    assert!(message.contains("bids_fail"), "{message}");
    assert!(
        message.contains("column 'auction': cannot read 'x' as Int64"),
        "{message}"
    );
    client
        .batch_execute("CREATE MATERIALIZED VIEW failing AS SELECT * FROM bids_fail")
        .await
        .unwrap();
    let mut status = Vec::new();
    for _ in 0..400 {
        status = rows(
            &client,
            "SELECT status, error FROM eddy_jobs WHERE name = 'failing'",
        )
        .await;
        if status[0][0] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status[0][0], "failed", "{status:?}");
    assert!(status[0][1].contains(&format!("{path}:2")), "{status:?}");

    // dead-letter: the good rows go on; each bad line is in eddy_dead_letters.
    assert!(
        rows(&client, "SELECT * FROM eddy_dead_letters")
            .await
            .is_empty(),
        "nothing recorded yet"
    );
    client
        .batch_execute(&create_source(
            "bids_dl",
            &path,
            ", format.on-error = 'dead-letter'",
        ))
        .await
        .unwrap();
    client
        .batch_execute("CREATE MATERIALIZED VIEW kept AS SELECT auction, channel FROM bids_dl")
        .await
        .unwrap();
    eventually(
        &client,
        "SELECT status, malformed_rows, dead_letters FROM eddy_jobs WHERE name = 'kept'",
        &[&["finished", "3", "3"]],
    )
    .await;
    eventually(&client, "SELECT * FROM kept ORDER BY auction", GOOD).await;
    let letters = rows(
        &client,
        "SELECT job, source, raw, error, position, recorded_at <= now() \
         FROM eddy_dead_letters ORDER BY position",
    )
    .await;
    let expected: Vec<Vec<String>> = [
        [
            "x,app,2024-01-01 00:00:02",
            "column 'auction': cannot read 'x' as Int64",
            "2",
        ],
        ["3,web", "expected 3 fields, found 2", "3"],
        [
            ",web,2024-01-01 00:00:05",
            "column 'auction' is NOT NULL but the value is missing",
            "5",
        ],
    ]
    .iter()
    .map(|[raw, error, line]| {
        vec![
            "kept".to_string(),
            "bids_dl".to_string(),
            raw.to_string(),
            error.to_string(),
            format!("{path}:{line}"),
            "t".to_string(),
        ]
    })
    .collect();
    assert_eq!(letters, expected);

    // An ad-hoc query's dead letters carry its text as the job.
    let query = "SELECT auction, channel FROM bids_dl";
    assert_eq!(sorted(rows(&client, query).await), table(GOOD));
    assert_eq!(
        rows(
            &client,
            &format!("SELECT count(*), min(source) FROM eddy_dead_letters WHERE job = '{query}'")
        )
        .await,
        table(&[&["3", "bids_dl"]])
    );

    // JSON lines too.
    let json = dir.join("bids.jsonl");
    std::fs::write(
        &json,
        "{\"auction\": 7, \"channel\": \"web\"}\n{\"auction\": \"seven\"}\n{\"auction\": 8,\n",
    )
    .unwrap();
    client
        .batch_execute(&format!(
            "CREATE SOURCE bids_json {COLUMNS} WITH (connector = 'file', path = '{}', \
             format = 'json', format.on-error = 'dead-letter')",
            json.display()
        ))
        .await
        .unwrap();
    assert_eq!(
        rows(&client, "SELECT auction, channel FROM bids_json").await,
        table(&[&["7", "web"]])
    );
    let letters = rows(
        &client,
        "SELECT raw, position, starts_with(error, 'invalid JSON') FROM eddy_dead_letters \
         WHERE source = 'bids_json' ORDER BY position",
    )
    .await;
    let json = json.display().to_string();
    assert_eq!(
        letters,
        vec![
            vec![
                "{\"auction\": \"seven\"}".to_string(),
                format!("{json}:2"),
                "f".to_string()
            ],
            vec![
                "{\"auction\": 8,".to_string(),
                format!("{json}:3"),
                "t".to_string()
            ],
        ]
    );

    // Users read the table but cannot write, drop or re-create it.
    let (code, message) = error_of(
        &client,
        "INSERT INTO eddy_dead_letters (job, source, error, position, recorded_at) \
         VALUES ('j', 's', 'e', 'p', now())",
    )
    .await;
    assert_eq!(code, "42809", "{message}");
    let (code, _) = error_of(&client, "DROP TABLE eddy_dead_letters").await;
    assert_eq!(code, "42809");
    let (code, _) = error_of(&client, "CREATE TABLE eddy_dead_letters (a INT)").await;
    assert_eq!(code, "42P07");

    // A bad value of the option is refused when the source is declared.
    let (code, message) = error_of(
        &client,
        &create_source("bids_bad", &path, ", format.on-error = 'ignore'"),
    )
    .await;
    assert_eq!(code, "22023", "{message}");
    assert!(
        message.contains("'ignore'") && message.contains("format.on-error"),
        "{message}"
    );

    drop(client);
    socket.abort();
    server.shutdown().await;

    // The table survives a restart; the finished job is not run again, so nothing is added.
    let server = start_checkpointing(&dir, Duration::from_millis(100)).await;
    let (client, socket) = connect_with_socket(&server).await;
    eventually(
        &client,
        "SELECT job, count(*) FROM eddy_dead_letters GROUP BY job ORDER BY job",
        &[
            &[query, "3"],
            &["SELECT auction, channel FROM bids_json", "2"],
            &["kept", "3"],
        ],
    )
    .await;
    drop(client);
    socket.abort();
    server.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_followed_and_a_restored_job_records_each_bad_line_once() {
    let dir = temp_dir("dead-letters-restore");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("live.csv");
    std::fs::write(&path, BIDS).unwrap();
    let path = path.display().to_string();
    let server = start_checkpointing(&dir, Duration::from_millis(100)).await;
    let (client, socket) = connect_with_socket(&server).await;
    client
        .batch_execute(&create_source(
            "live",
            &path,
            ", follow = 'true', format.on-error = 'dead-letter'",
        ))
        .await
        .unwrap();

    // A continuous query (on a connection of its own) follows the table as it grows.
    let (follower, follower_socket) = connect_with_socket(&server).await;
    let copy = follower
        .copy_out("COPY (SELECT position, raw FROM eddy_dead_letters) TO STDOUT")
        .await
        .unwrap();
    let mut copy = std::pin::pin!(copy);
    client
        .batch_execute("CREATE MATERIALIZED VIEW live_rows AS SELECT auction FROM live")
        .await
        .unwrap();
    let followed = common::copy_lines(&mut copy, 3).await;
    assert_eq!(
        followed,
        format!(
            "{path}:2\tx,app,2024-01-01 00:00:02\n{path}:3\t3,web\n{path}:5\t,web,2024-01-01 00:00:05\n"
        )
    );
    eventually(&client, "SELECT count(*) FROM live_rows", &[&["3"]]).await;
    // Wait for a checkpoint that covers the rows read.
    let sql = "SELECT last_checkpoint FROM eddy_jobs WHERE name = 'live_rows'";
    let first = rows(&client, sql).await[0][0].parse::<i64>().unwrap_or(0);
    for _ in 0..400 {
        if rows(&client, sql).await[0][0].parse::<i64>().unwrap_or(0) > first + 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    drop(client);
    socket.abort();
    follower_socket.abort();
    server.shutdown().await;

    // The restored job re-reads the file up to its checkpoint without recording its bad
    // lines again, and records the new one.
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"7,web,2024-01-01 00:00:07\nseven,web,2024-01-01 00:00:08\n")
            .unwrap();
    }
    let server = start_checkpointing(&dir, Duration::from_millis(100)).await;
    let (client, socket) = connect_with_socket(&server).await;
    eventually(&client, "SELECT count(*) FROM live_rows", &[&["4"]]).await;
    eventually(
        &client,
        "SELECT restored_from IS NOT NULL, malformed_rows, dead_letters FROM eddy_jobs",
        &[&["t", "4", "1"]],
    )
    .await;
    let letters = rows(
        &client,
        "SELECT position, count(*) FROM eddy_dead_letters GROUP BY position ORDER BY position",
    )
    .await;
    let expected: Vec<Vec<String>> = [2, 3, 5, 8]
        .iter()
        .map(|line| vec![format!("{path}:{line}"), "1".to_string()])
        .collect();
    assert_eq!(letters, expected);
    drop(client);
    socket.abort();
    server.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
