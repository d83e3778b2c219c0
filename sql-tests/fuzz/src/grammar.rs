//! Grammar-aware generation of the statements Eddy supports, for the `sql` target: sources and
//! tables with WITH options and watermarks, SELECT with the window TVFs (both spellings),
//! joins, MATCH_RECOGNIZE, materialized views, SET, SHOW and EXPLAIN. Generated statements
//! refer to the relations [`crate::targets::sql`] declares before every input (`bids`,
//! `persons`, `ticks`), so most of them get past name resolution into the planners.

use crate::rng::Rng;

/// Words the token mutator inserts: Eddy's keywords, the preamble's names, edge literals.
pub const DICTIONARY: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP BY",
    "HAVING",
    "ORDER BY",
    "LIMIT",
    "JOIN",
    "LEFT JOIN",
    "FULL JOIN",
    "ON",
    "AND",
    "OR",
    "NOT",
    "IN",
    "EXISTS",
    "BETWEEN",
    "AS",
    "TABLE",
    "TUMBLE",
    "HOP",
    "CUMULATE",
    "SESSION",
    "DESCRIPTOR",
    "INTERVAL",
    "SECOND",
    "MINUTE",
    "HOUR",
    "DAY",
    "MATCH_RECOGNIZE",
    "PARTITION BY",
    "MEASURES",
    "PATTERN",
    "DEFINE",
    "SUBSET",
    "WITHIN",
    "ONE ROW PER MATCH",
    "ALL ROWS PER MATCH",
    "AFTER MATCH SKIP",
    "PAST LAST ROW",
    "TO NEXT ROW",
    "TO FIRST",
    "TO LAST",
    "PREV",
    "NEXT",
    "FIRST",
    "LAST",
    "CLASSIFIER()",
    "MATCH_NUMBER()",
    "PERMUTE",
    "CREATE",
    "SOURCE",
    "SINK",
    "MATERIALIZED VIEW",
    "VIEW",
    "WATERMARK FOR",
    "WITH",
    "connector",
    "'file'",
    "'nexmark'",
    "'kafka'",
    "'datagen'",
    "format",
    "'csv'",
    "'json'",
    "'parquet'",
    "SET",
    "SHOW",
    "EXPLAIN",
    "ANALYZE",
    "DROP",
    "INSERT INTO",
    "VALUES",
    "COPY",
    "TO STDOUT",
    "OVER",
    "ROW_NUMBER()",
    "count(*)",
    "sum",
    "max",
    "min",
    "avg",
    "CAST",
    "::",
    "NULL",
    "TRUE",
    "FALSE",
    "0",
    "1",
    "-1",
    "9223372036854775807",
    "1e308",
    "''",
    "'2024-01-01 00:00:00'",
    "(",
    ")",
    ",",
    ";",
    "*",
    "+",
    "?",
    "{",
    "}",
    "|",
    "^",
    "$",
    "=",
    "<",
    ">",
    ".",
    "bids",
    "persons",
    "ticks",
    "auction",
    "bidder",
    "price",
    "channel",
    "date_time",
    "window_start",
    "window_end",
    "window_time",
    "id",
    "name",
    "ts",
    "symbol",
    "A",
    "B",
    "C",
    "FOR SYSTEM_TIME AS OF",
    "PROCTIME()",
    "UNION ALL",
    "DISTINCT",
    "CASE WHEN",
    "THEN",
    "ELSE",
    "END",
    "COALESCE",
    "IS NULL",
];

/// A relation of the preamble, its time column and some of its columns.
struct Relation {
    name: &'static str,
    time: &'static str,
    key: &'static str,
    number: &'static str,
    text: &'static str,
}

const RELATIONS: &[Relation] = &[
    Relation {
        name: "bids",
        time: "date_time",
        key: "auction",
        number: "price",
        text: "channel",
    },
    Relation {
        name: "persons",
        time: "ts",
        key: "id",
        number: "id",
        text: "city",
    },
    Relation {
        name: "ticks",
        time: "ts",
        key: "symbol",
        number: "price",
        text: "symbol",
    },
];

/// One to three generated statements separated by semicolons.
pub fn statements(rng: &mut Rng) -> String {
    let n = 1 + rng.below(3);
    (0..n)
        .map(|_| statement(rng))
        .collect::<Vec<_>>()
        .join(";\n")
}

/// One generated statement.
pub fn statement(rng: &mut Rng) -> String {
    match rng.below(14) {
        0 => create_table(rng),
        1 => create_source(rng),
        2 | 3 => select(rng),
        4 | 5 => window_query(rng),
        6 => join(rng),
        7 | 8 => match_recognize(rng),
        9 => format!(
            "CREATE MATERIALIZED VIEW mv{}{} AS {}",
            rng.below(3),
            view_options(rng),
            query(rng)
        ),
        10 => set(rng),
        11 => show(rng),
        12 => format!("EXPLAIN {}", query(rng)),
        _ => insert(rng),
    }
}

/// A view's options, most often none: allowed lateness (a valid interval or not), late rows
/// as data, or both.
fn view_options(rng: &mut Rng) -> String {
    let lateness = rng.pick(&[
        "5 seconds",
        "1 minute",
        "1 millisecond",
        "0",
        "soon",
        "-1 second",
        "1 month",
    ]);
    match rng.below(6) {
        0 => format!(" WITH (allowed.lateness = '{lateness}')"),
        1 => format!(
            " WITH (late.rows = '{}')",
            rng.pick(&["late", "bids", "\"Late\"", ""])
        ),
        2 => format!(" WITH (allowed.lateness = '{lateness}', late.rows = 'late')"),
        _ => String::new(),
    }
}

fn relation(rng: &mut Rng) -> &'static Relation {
    &RELATIONS[rng.below(RELATIONS.len())]
}

fn interval(rng: &mut Rng) -> String {
    let unit = rng.pick(&["SECOND", "MINUTE", "HOUR", "DAY", "MILLISECOND"]);
    let n = rng.pick(&["0", "1", "5", "10", "-1", "60", "1000000000", "3.5"]);
    if rng.one_in(4) {
        format!("INTERVAL '{n} {}'", unit.to_lowercase())
    } else {
        format!("INTERVAL '{n}' {unit}")
    }
}

fn sql_type(rng: &mut Rng) -> &'static str {
    rng.pick(&[
        "BIGINT",
        "INT",
        "SMALLINT",
        "DOUBLE",
        "REAL",
        "VARCHAR",
        "STRING",
        "BOOLEAN",
        "TIMESTAMP(3)",
        "TIMESTAMP",
        "DATE",
        "DECIMAL(10, 2)",
        "BYTEA",
        "TIMESTAMP_LTZ(3)",
    ])
}

fn create_table(rng: &mut Rng) -> String {
    let columns: Vec<String> = (0..1 + rng.below(4))
        .map(|i| format!("c{i} {}", sql_type(rng)))
        .collect();
    let watermark = if rng.one_in(2) {
        format!(
            ", ts TIMESTAMP(3), WATERMARK FOR ts AS ts - {}",
            interval(rng)
        )
    } else {
        String::new()
    };
    let key = if rng.one_in(5) {
        ", PRIMARY KEY (c0) NOT ENFORCED"
    } else {
        ""
    };
    format!(
        "CREATE TABLE t{} ({}{watermark}{key})",
        rng.below(3),
        columns.join(", ")
    )
}

fn create_source(rng: &mut Rng) -> String {
    let with = match rng.below(5) {
        0 => format!(
            "connector = 'nexmark', nexmark.table = '{}', events.max = '{}'",
            rng.pick(&["bid", "person", "auction", "nope"]),
            rng.pick(&["0", "10", "-1", "x"])
        ),
        1 => format!(
            "connector = 'file', path = '{}', format = '{}', header = '{}'",
            rng.pick(&["in.csv", "*.csv", "/", "..", "missing/x.json"]),
            rng.pick(&["csv", "json", "parquet", "avro"]),
            rng.pick(&["true", "false", "maybe"])
        ),
        2 => format!(
            "'connector' = 'kafka', 'topic' = 't', 'properties.bootstrap.servers' = '127.0.0.1:9', \
             'format' = '{}', 'scan.startup.mode' = '{}'",
            rng.pick(&["json", "csv", "raw"]),
            rng.pick(&["earliest-offset", "latest-offset", "timestamp", "specific-offsets"])
        ),
        3 => "connector = 'datagen', rows-per-second = '0', fields.c0.kind = 'sequence', \
              fields.c0.start = '1', fields.c0.end = '10'"
            .to_string(),
        _ => "connector = 'upsert-kafka', topic = 't', properties.bootstrap.servers = '127.0.0.1:9', \
              key.format = 'json', value.format = 'json'"
            .to_string(),
    };
    let metadata = if rng.one_in(4) {
        ", k BYTEA METADATA FROM 'key' VIRTUAL"
    } else {
        ""
    };
    format!(
        "CREATE SOURCE s{} (c0 {}, ts TIMESTAMP(3){metadata}, WATERMARK FOR ts AS ts - {}) WITH ({with})",
        rng.below(3),
        sql_type(rng),
        interval(rng)
    )
}

fn expr(rng: &mut Rng, r: &Relation, depth: usize) -> String {
    if depth == 0 || rng.one_in(3) {
        return match rng.below(6) {
            0 => r.number.to_string(),
            1 => r.key.to_string(),
            2 => r.time.to_string(),
            3 => rng
                .pick(&["1", "0", "-1", "NULL", "'x'", "2.5", "TRUE"])
                .to_string(),
            4 => format!("'{}'", rng.pick(&["a", "", "2024-01-01", "%"])),
            _ => r.text.to_string(),
        };
    }
    let a = expr(rng, r, depth - 1);
    let b = expr(rng, r, depth - 1);
    match rng.below(8) {
        0 => format!("{a} + {b}"),
        1 => format!("{a} > {b}"),
        2 => format!("({a} = {b} AND {b} IS NOT NULL)"),
        3 => format!("CASE WHEN {a} > {b} THEN {a} ELSE {b} END"),
        4 => format!("CAST({a} AS {})", sql_type(rng)),
        5 => format!("{a} - {}", interval(rng)),
        6 => format!("coalesce({a}, {b})"),
        _ => format!("{a} / {b}"),
    }
}

fn aggregate(rng: &mut Rng, r: &Relation) -> String {
    let f = rng.pick(&[
        "count",
        "sum",
        "max",
        "min",
        "avg",
        "count(DISTINCT",
        "first_value",
    ]);
    if f.ends_with('(') || f.contains("DISTINCT") {
        format!("{f} {})", r.key)
    } else if f == "count" && rng.one_in(2) {
        "count(*)".to_string()
    } else {
        format!("{f}({})", r.number)
    }
}

fn query(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => window_query(rng),
        1 => join(rng),
        2 => match_recognize(rng),
        _ => select(rng),
    }
}

fn select(rng: &mut Rng) -> String {
    let r = relation(rng);
    let grouped = rng.one_in(4);
    let mut sql = match rng.below(4) {
        _ if grouped => format!("SELECT {}, {} FROM {}", r.key, aggregate(rng, r), r.name),
        1 => format!(
            "SELECT *, ROW_NUMBER() OVER (PARTITION BY {} ORDER BY {}) AS rn FROM {}",
            r.key, r.time, r.name
        ),
        _ => format!("SELECT {}, {} FROM {}", expr(rng, r, 2), r.time, r.name),
    };
    if rng.one_in(2) {
        sql.push_str(&format!(" WHERE {}", expr(rng, r, 2)));
    }
    if grouped {
        sql.push_str(&format!(" GROUP BY {}", r.key));
    }
    if rng.one_in(3) {
        sql.push_str(&format!(" LIMIT {}", rng.below(5)));
    }
    sql
}

fn window_tvf(rng: &mut Rng, r: &Relation) -> String {
    let long = rng.one_in(2);
    let (name, args) = match rng.below(4) {
        0 => ("TUMBLE", interval(rng)),
        1 => ("HOP", format!("{}, {}", interval(rng), interval(rng))),
        2 => ("CUMULATE", format!("{}, {}", interval(rng), interval(rng))),
        _ => ("SESSION", interval(rng)),
    };
    if long {
        let table = if name == "SESSION" && rng.one_in(2) {
            format!("TABLE {} PARTITION BY {}", r.name, r.key)
        } else {
            format!("TABLE {}", r.name)
        };
        format!("TABLE({name}({table}, DESCRIPTOR({}), {args}))", r.time)
    } else {
        format!("{name}({}, {}, {args})", r.name, r.time)
    }
}

fn window_query(rng: &mut Rng) -> String {
    let r = relation(rng);
    let tvf = window_tvf(rng, r);
    match rng.below(3) {
        0 => format!(
            "SELECT {k}, window_start, window_end, {} FROM {tvf} GROUP BY {k}, window_start, window_end{}",
            aggregate(rng, r),
            rng.pick(&["", "", " EMIT ON UPDATE", " EMIT ON WINDOW CLOSE"]),
            k = r.key
        ),
        1 => format!(
            "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end \
             ORDER BY {} DESC) AS rn FROM {tvf}) WHERE rn <= {}",
            r.number,
            rng.below(4)
        ),
        _ => format!("SELECT * FROM {tvf}"),
    }
}

fn join(rng: &mut Rng) -> String {
    let kind = rng.pick(&["JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN", "INNER JOIN"]);
    match rng.below(3) {
        0 => format!(
            "SELECT b.auction, p.name FROM bids b {kind} persons p ON b.bidder = p.id \
             AND b.date_time BETWEEN p.ts - {} AND p.ts + {}",
            interval(rng),
            interval(rng)
        ),
        1 => {
            let args = interval(rng);
            format!(
                "SELECT l.auction, r.id FROM (SELECT * FROM TUMBLE(bids, date_time, {args})) l \
                 {kind} (SELECT * FROM TUMBLE(persons, ts, {args})) r ON l.window_start = r.window_start \
                 AND l.window_end = r.window_end AND l.bidder = r.id"
            )
        }
        _ => format!("SELECT * FROM bids {kind} persons ON bids.bidder = persons.id"),
    }
}

fn pattern(rng: &mut Rng, depth: usize) -> String {
    let vars = ["A", "B", "C"];
    let atom = if depth == 0 || rng.one_in(2) {
        vars[rng.below(3)].to_string()
    } else {
        match rng.below(3) {
            0 => format!("({} {})", pattern(rng, depth - 1), pattern(rng, depth - 1)),
            1 => format!(
                "({} | {})",
                pattern(rng, depth - 1),
                pattern(rng, depth - 1)
            ),
            _ => format!(
                "PERMUTE({}, {})",
                pattern(rng, depth - 1),
                pattern(rng, depth - 1)
            ),
        }
    };
    let quantifier = rng.pick(&[
        "", "", "*", "+", "?", "*?", "+?", "??", "{2}", "{1,}", "{0,3}", "{,2}", "{2,3}?",
    ]);
    format!("{atom}{quantifier}")
}

fn match_recognize(rng: &mut Rng) -> String {
    let rows = rng.pick(&[
        "ONE ROW PER MATCH",
        "ALL ROWS PER MATCH",
        "",
        "ONE ROW PER MATCH WITH TIMEOUTS",
        "ALL ROWS PER MATCH WITH TIMEOUTS",
    ]);
    let skip = rng.pick(&[
        "AFTER MATCH SKIP PAST LAST ROW",
        "AFTER MATCH SKIP TO NEXT ROW",
        "AFTER MATCH SKIP TO FIRST B",
        "AFTER MATCH SKIP TO LAST A",
        "",
    ]);
    let within = if rng.one_in(3) {
        format!(" WITHIN {}", interval(rng))
    } else {
        String::new()
    };
    let subset = if rng.one_in(4) {
        " SUBSET S = (A, B)"
    } else {
        ""
    };
    let conditions = [
        "price > PREV(price)",
        "price < PREV(price, 2)",
        "price > FIRST(A.price)",
        "price >= LAST(B.price, 1)",
        "sum(A.price) > 10",
        "NEXT(price) IS NULL",
        "count(*) < 3",
        "price > avg(B.price)",
        "TRUE",
    ];
    let mut defines = Vec::new();
    for v in ["A", "B", "C"] {
        if !rng.one_in(3) {
            defines.push(format!(
                "{v} AS {}",
                conditions[rng.below(conditions.len())]
            ));
        }
    }
    let defines = if defines.is_empty() {
        "A AS TRUE".to_string()
    } else {
        defines.join(", ")
    };
    let measures = rng.pick(&[
        "MATCH_NUMBER() AS m, CLASSIFIER() AS c",
        "FIRST(A.price) AS f, LAST(B.ts) AS l",
        "count(*) AS n, sum(C.price) AS s",
        "A.price AS a",
        "MATCH_STATUS() AS st, LAST(A.ts) AS t",
    ]);
    format!(
        "SELECT * FROM ticks MATCH_RECOGNIZE (PARTITION BY symbol ORDER BY ts MEASURES {measures} \
         {rows} {skip} PATTERN ({}){within}{subset} DEFINE {defines})",
        pattern(rng, 2)
    )
}

fn set(rng: &mut Rng) -> String {
    let (name, value) = match rng.below(4) {
        0 => (
            "parallelism",
            rng.pick(&["1", "2", "0", "-1", "x", "100000"]),
        ),
        1 => (
            "state.ttl",
            rng.pick(&["'1 s'", "'0'", "'x'", "'10 hours'"]),
        ),
        2 => ("application_name", rng.pick(&["'x'", "DEFAULT"])),
        _ => ("table.exec.state.ttl", rng.pick(&["'5 min'", "''"])),
    };
    format!("SET {name} = {value}")
}

fn show(rng: &mut Rng) -> String {
    format!(
        "SHOW {}",
        rng.pick(&[
            "SOURCES",
            "TABLES",
            "VIEWS",
            "SINKS",
            "JOBS",
            "CHECKPOINTS",
            "ALL",
            "parallelism",
            "server_version",
        ])
    )
}

fn insert(rng: &mut Rng) -> String {
    match rng.below(2) {
        0 => format!(
            "INSERT INTO bids VALUES ({}, 2, {}, 'web', 'u', '2024-01-01 00:00:0{}', NULL)",
            rng.pick(&["1", "NULL", "-9223372036854775808", "'x'"]),
            rng.pick(&["10", "1e20", "NULL"]),
            rng.below(10)
        ),
        _ => format!(
            "INSERT INTO persons SELECT bidder, 'n', 'c', date_time FROM bids WHERE price > {}",
            rng.below(100)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_statements_use_the_statement_kinds_eddy_supports() {
        let mut rng = Rng::new(1);
        let all: String = (0..400).map(|_| statements(&mut rng)).collect();
        for word in [
            "CREATE TABLE",
            "CREATE SOURCE",
            "TUMBLE(",
            "HOP(",
            "CUMULATE(",
            "SESSION(",
            "JOIN",
            "MATCH_RECOGNIZE",
            "CREATE MATERIALIZED VIEW",
            "SET ",
            "SHOW ",
            "EXPLAIN ",
            "EMIT ON UPDATE",
            "allowed.lateness",
            "late.rows",
            "WITH TIMEOUTS",
            "MATCH_STATUS()",
        ] {
            assert!(all.contains(word), "no {word} in 400 generated inputs");
        }
    }
}
