//! The benchmark's queries: Nexmark's (as the Nexmark project's Flink SQL states them, with the
//! tables named `bids`, `auctions` and `persons`, `dateTime` spelled `date_time`, window table
//! functions in their short form and `MOD(a, b)` as `a % b`), Eddy's own window, join and
//! pattern queries, and for each the batch query DataFusion runs over the same events.
//!
//! DataFusion has no window table functions, so the batch queries spell windows out:
//! `date_bin` for a tumbling window; for a hopping one each row is joined with the offsets of
//! its windows (`size / slide` of them); for a session window, `LAG` finds the rows that open a
//! session and a running sum of those numbers the sessions (see [`Q11`]). Each of these gives
//! exactly the rows the streaming query gives over a bounded input (the generator's event times
//! never go backwards, so no row is late), so the `--check` mode compares them row for row. For
//! MATCH_RECOGNIZE there is no batch equivalent at all: its batch figure is a lower bound
//! ([`Baseline::LowerBound`]).

/// One benchmark query.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    /// The name `--query` selects it by.
    pub name: &'static str,
    /// What Eddy runs, as a continuous query.
    pub streaming: &'static str,
    /// What DataFusion runs over the same events in memory.
    pub baseline: Baseline,
    /// Reads the CSV file of bids (the `bids_file` source) instead of the generator.
    pub reads_file: bool,
    /// Runs as a materialized view's job with `--checkpoint-interval`: its result is small
    /// enough for a view to keep (not q0-q2 or the interval join, whose results are about
    /// every bid), and it reads the generator.
    pub runs_as_job: bool,
}

/// The batch query a streaming query is measured and checked against.
#[derive(Debug, Clone, Copy)]
pub enum Baseline {
    /// The streaming text runs unchanged as a batch query, with the same result.
    Same,
    /// A different text with exactly the same result rows.
    Exact(&'static str),
    /// Not the same query: a lower bound of what any batch plan of it costs. Rows not compared.
    LowerBound(&'static str),
    /// The streaming text runs unchanged as a batch query, and the results agree on these
    /// columns: the query keeps one of several rows that tie in its ORDER BY (`ROW_NUMBER()`),
    /// and which one is not defined (Eddy keeps the row its order of arrival decides,
    /// DataFusion the one its sort does). Tied rows share the listed columns.
    SameUpToTies(&'static [&'static str]),
    /// The query's rows depend on processing time (which window a row lands in), so
    /// `--check` runs `checked`, a roll-up of it whose rows do not, and compares it with
    /// `batch`, which is also the measured baseline.
    RolledUp {
        checked: &'static str,
        batch: &'static str,
    },
}

impl Query {
    /// The batch query's text.
    pub fn batch_sql(&self) -> &'static str {
        match self.baseline {
            Baseline::Same | Baseline::SameUpToTies(_) => self.streaming,
            Baseline::Exact(sql) | Baseline::LowerBound(sql) => sql,
            Baseline::RolledUp { batch, .. } => batch,
        }
    }

    /// The streaming text `--check` runs: the query's own, or a roll-up of it.
    pub fn checked_sql(&self) -> &'static str {
        match self.baseline {
            Baseline::RolledUp { checked, .. } => checked,
            _ => self.streaming,
        }
    }

    /// Whether the batch query must return the same rows (as many; the same values in the
    /// columns of [`Query::compared_columns`]).
    pub fn batch_is_exact(&self) -> bool {
        !matches!(self.baseline, Baseline::LowerBound(_))
    }

    /// The columns whose values `--check` compares with the batch query's: all (`None`), or
    /// those tied rows share.
    pub fn compared_columns(&self) -> Option<&'static [&'static str]> {
        match self.baseline {
            Baseline::SameUpToTies(columns) => Some(columns),
            _ => None,
        }
    }
}

/// Nexmark q0, pass-through: what reading and emitting a bid costs.
pub const Q0: Query = Query {
    name: "q0",
    streaming: "SELECT auction, bidder, price, date_time, extra FROM bids",
    baseline: Baseline::Same,
    reads_file: false,
    runs_as_job: false,
};

/// Nexmark q1, currency conversion: a projection with arithmetic.
pub const Q1: Query = Query {
    name: "q1",
    streaming: "SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bids",
    baseline: Baseline::Same,
    reads_file: false,
    runs_as_job: false,
};

/// Nexmark q2, selection: the bids of every 123rd auction.
pub const Q2: Query = Query {
    name: "q2",
    streaming: "SELECT auction, price FROM bids WHERE auction % 123 = 0",
    baseline: Baseline::Same,
    reads_file: false,
    runs_as_job: false,
};

/// Nexmark q5, hot items: the auctions with the most bids in each 10-second window, every
/// 2 seconds. A HOP aggregate per auction, joined (a window join) with the maximum of the same
/// counts per window.
pub const Q5: Query = Query {
    name: "q5",
    streaming: "SELECT AuctionBids.auction, AuctionBids.num \
        FROM (SELECT auction, count(*) AS num, window_start AS starttime, window_end AS endtime \
              FROM HOP(bids, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) \
              GROUP BY auction, window_start, window_end) AS AuctionBids \
        JOIN (SELECT max(CountBids.num) AS maxn, CountBids.starttime, CountBids.endtime \
              FROM (SELECT count(*) AS num, window_start AS starttime, window_end AS endtime \
                    FROM HOP(bids, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) \
                    GROUP BY auction, window_start, window_end) AS CountBids \
              GROUP BY CountBids.starttime, CountBids.endtime) AS MaxBids \
        ON AuctionBids.starttime = MaxBids.starttime AND AuctionBids.endtime = MaxBids.endtime \
           AND AuctionBids.num >= MaxBids.maxn",
    baseline: Baseline::Exact(
        "WITH CountBids AS ( \
           SELECT auction, count(*) AS num, starttime, starttime + INTERVAL '10' SECOND AS endtime \
           FROM (SELECT auction, date_bin(INTERVAL '2' SECOND, date_time) - o.d AS starttime \
                 FROM bids CROSS JOIN (VALUES (INTERVAL '0' SECOND), (INTERVAL '2' SECOND), \
                   (INTERVAL '4' SECOND), (INTERVAL '6' SECOND), (INTERVAL '8' SECOND)) AS o(d)) \
           GROUP BY auction, starttime) \
         SELECT AuctionBids.auction, AuctionBids.num \
         FROM CountBids AS AuctionBids \
         JOIN (SELECT max(num) AS maxn, starttime, endtime FROM CountBids \
               GROUP BY starttime, endtime) AS MaxBids \
         ON AuctionBids.starttime = MaxBids.starttime AND AuctionBids.endtime = MaxBids.endtime \
            AND AuctionBids.num >= MaxBids.maxn",
    ),
    reads_file: false,
    runs_as_job: true,
};

/// Nexmark q7, highest bid: the bids that carry the highest price of their 10-second window.
/// A TUMBLE aggregate joined back to the bids by an interval join on its `window_end`.
pub const Q7: Query = Query {
    name: "q7",
    streaming: "SELECT B.auction, B.bidder, B.price, B.date_time, B.extra \
        FROM bids B \
        JOIN (SELECT max(price) AS maxprice, window_end AS date_time \
              FROM TUMBLE(bids, date_time, INTERVAL '10' SECOND) \
              GROUP BY window_start, window_end) B1 \
        ON B.price = B1.maxprice \
        WHERE B.date_time BETWEEN B1.date_time - INTERVAL '10' SECOND AND B1.date_time",
    baseline: Baseline::Exact(
        "SELECT B.auction, B.bidder, B.price, B.date_time, B.extra \
         FROM bids B \
         JOIN (SELECT max(price) AS maxprice, \
                 date_bin(INTERVAL '10' SECOND, date_time) + INTERVAL '10' SECOND AS date_time \
               FROM bids GROUP BY date_bin(INTERVAL '10' SECOND, date_time)) B1 \
         ON B.price = B1.maxprice \
         WHERE B.date_time BETWEEN B1.date_time - INTERVAL '10' SECOND AND B1.date_time",
    ),
    reads_file: false,
    runs_as_job: true,
};

/// Nexmark q8, monitor new users: the people who opened an account and an auction in the same
/// 10-second window. A window join of two TUMBLE aggregates, over persons and auctions.
pub const Q8: Query = Query {
    name: "q8",
    streaming: "SELECT P.id, P.name, P.starttime \
        FROM (SELECT id, name, window_start AS starttime, window_end AS endtime \
              FROM TUMBLE(persons, date_time, INTERVAL '10' SECOND) \
              GROUP BY id, name, window_start, window_end) P \
        JOIN (SELECT seller, window_start AS starttime, window_end AS endtime \
              FROM TUMBLE(auctions, date_time, INTERVAL '10' SECOND) \
              GROUP BY seller, window_start, window_end) A \
        ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime",
    baseline: Baseline::Exact(
        "SELECT P.id, P.name, P.starttime \
         FROM (SELECT id, name, date_bin(INTERVAL '10' SECOND, date_time) AS starttime \
               FROM persons GROUP BY id, name, date_bin(INTERVAL '10' SECOND, date_time)) P \
         JOIN (SELECT seller, date_bin(INTERVAL '10' SECOND, date_time) AS starttime \
               FROM auctions GROUP BY seller, date_bin(INTERVAL '10' SECOND, date_time)) A \
         ON P.id = A.seller AND P.starttime = A.starttime",
    ),
    reads_file: false,
    runs_as_job: true,
};

/// Nexmark q11, user sessions: the bids of each bidder's sessions, a session ending 10 s
/// after its bidder's last bid. Written with the legacy `GROUP BY SESSION(...)`, as Nexmark
/// writes it.
///
/// DataFusion has no session windows. The batch query is a window-function formulation with
/// the same result: a bid opens a session when its bidder's previous bid (`LAG`) is more than
/// the gap before it (rows exactly one gap apart share a session, as in Eddy and Flink); a
/// running sum of those openings numbers each bidder's sessions; a session runs from its first
/// bid to its last bid + gap.
pub const Q11: Query = Query {
    name: "q11",
    streaming: "SELECT B.bidder, count(*) AS bid_count, \
          SESSION_START(B.date_time, INTERVAL '10' SECOND) AS starttime, \
          SESSION_END(B.date_time, INTERVAL '10' SECOND) AS endtime \
        FROM bids B \
        GROUP BY B.bidder, SESSION(B.date_time, INTERVAL '10' SECOND)",
    baseline: Baseline::Exact(
        "SELECT bidder, count(*) AS bid_count, min(date_time) AS starttime, \
           max(date_time) + INTERVAL '10' SECOND AS endtime \
         FROM (SELECT bidder, date_time, \
                 sum(opens) OVER (PARTITION BY bidder ORDER BY date_time \
                                  ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS session \
               FROM (SELECT bidder, date_time, \
                       CASE WHEN LAG(date_time) OVER w >= date_time - INTERVAL '10' SECOND \
                            THEN 0 ELSE 1 END AS opens \
                     FROM bids WINDOW w AS (PARTITION BY bidder ORDER BY date_time))) \
         GROUP BY bidder, session",
    ),
    reads_file: false,
    runs_as_job: true,
};

/// Nexmark q18, find last bid: each bidder's last bid on each auction. A deduplication
/// keeping the last row in event time: an updating result (each later bid retracts the one
/// before), whose final rows `--check` compares. Bids of a bidder on an auction in the same
/// millisecond tie: which of them is last is not defined.
pub const Q18: Query = Query {
    name: "q18",
    streaming: "SELECT auction, bidder, price, channel, url, date_time, extra \
        FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC) \
              AS rank_number FROM bids) \
        WHERE rank_number <= 1",
    baseline: Baseline::SameUpToTies(&["auction", "bidder", "date_time"]),
    reads_file: false,
    runs_as_job: false,
};

/// Nexmark q19, auction Top-N: the ten highest bids of each auction, with their number. A
/// Top-N: an updating result (a bid entering an auction's top ten pushes the tenth out and
/// renumbers those below it), whose final rows `--check` compares. Bids of an auction at the
/// same price tie: which of them gets which number (and which is tenth) is not defined.
pub const Q19: Query = Query {
    name: "q19",
    streaming: "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction \
        ORDER BY price DESC) AS rank_number FROM bids) WHERE rank_number <= 10",
    baseline: Baseline::SameUpToTies(&["auction", "price", "rank_number"]),
    reads_file: false,
    runs_as_job: false,
};

/// Nexmark q3, local item suggestion: sellers in Oregon, Idaho or California and their
/// auctions of category 10. A regular inner join of two append-only streams: append-only.
pub const Q3: Query = Query {
    name: "q3",
    streaming: "SELECT P.name, P.city, P.state, A.id \
        FROM auctions AS A INNER JOIN persons AS P ON A.seller = P.id \
        WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA')",
    baseline: Baseline::Same,
    reads_file: false,
    runs_as_job: true,
};

/// Nexmark q4, average price per category: the average of each auction's winning (maximum)
/// bid per category. An updating aggregate (the maxima) over a regular join, aggregated again
/// (the averages retract each auction's old maximum).
pub const Q4: Query = Query {
    name: "q4",
    streaming: "SELECT Q.category, AVG(Q.final) \
        FROM (SELECT MAX(B.price) AS final, A.category \
              FROM auctions A, bids B \
              WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires \
              GROUP BY A.id, A.category) Q \
        GROUP BY Q.category",
    baseline: Baseline::Same,
    reads_file: false,
    runs_as_job: true,
};

/// Nexmark q9, winning bids: each auction with its highest bid placed before it expired (the
/// earliest of equal ones). A Top-N of one row per auction over a regular join. Bids of an
/// auction at the same price in the same millisecond tie.
pub const Q9: Query = Query {
    name: "q9",
    streaming: "SELECT id, item_name, description, initial_bid, reserve, date_time, expires, \
          seller, category, extra, auction, bidder, price, bid_date_time, bid_extra \
        FROM (SELECT A.*, B.auction, B.bidder, B.price, B.date_time AS bid_date_time, \
                B.extra AS bid_extra, \
                ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC, B.date_time ASC) \
                  AS rownum \
              FROM auctions A, bids B \
              WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires) \
        WHERE rownum <= 1",
    baseline: Baseline::SameUpToTies(&["id", "seller", "category", "price", "bid_date_time"]),
    reads_file: false,
    runs_as_job: false,
};

/// Nexmark q10, log to file system: every bid with its day and minute as text (the nexmark
/// query writes them to partitioned files; here they stream to the client). DataFusion has no
/// DATE_FORMAT: its batch query formats with `to_char`.
pub const Q10: Query = Query {
    name: "q10",
    streaming: "SELECT auction, bidder, price, date_time, extra, \
          DATE_FORMAT(date_time, 'yyyy-MM-dd'), DATE_FORMAT(date_time, 'HH:mm') FROM bids",
    baseline: Baseline::Exact(
        "SELECT auction, bidder, price, date_time, extra, \
           to_char(date_time, '%Y-%m-%d'), to_char(date_time, '%H:%M') FROM bids",
    ),
    reads_file: false,
    runs_as_job: false,
};

/// Nexmark q12, processing-time windows: the bids of each bidder in 10-second windows of the
/// wall clock (`PROCTIME()`), written with the legacy `GROUP BY TUMBLE(...)` as the Nexmark
/// project writes it. Which window a bid lands in depends on when it is processed, so
/// `--check` compares the windows' counts summed per bidder with DataFusion's count per
/// bidder, the baseline.
pub const Q12: Query = Query {
    name: "q12",
    streaming: "SELECT B.bidder, count(*) AS bid_count, \
        TUMBLE_START(B.p_time, INTERVAL '10' SECOND) AS starttime, \
        TUMBLE_END(B.p_time, INTERVAL '10' SECOND) AS endtime \
        FROM (SELECT *, PROCTIME() AS p_time FROM bids) B \
        GROUP BY B.bidder, TUMBLE(B.p_time, INTERVAL '10' SECOND)",
    baseline: Baseline::RolledUp {
        checked: "SELECT bidder, sum(bid_count) AS bid_count FROM ( \
            SELECT B.bidder, count(*) AS bid_count \
            FROM (SELECT *, PROCTIME() AS p_time FROM bids) B \
            GROUP BY B.bidder, TUMBLE(B.p_time, INTERVAL '10' SECOND)) GROUP BY bidder",
        batch: "SELECT bidder, count(*) AS bid_count FROM bids GROUP BY bidder",
    },
    reads_file: false,
    runs_as_job: true,
};

/// Nexmark q13, bounded side input join: each bid joined, as it arrives, with the row of a
/// side table (`side_input`, a push table of 10,000 keys filled before the query starts) whose
/// key is the bid's auction modulo 10,000: a processing-time lookup join, spelled as in the
/// Nexmark project (`PROCTIME()` as a column of the bids). Since the table does not change
/// while the query runs, the batch inner join gives the same rows.
pub const Q13: Query = Query {
    name: "q13",
    streaming: "SELECT B.auction, B.bidder, B.price, B.date_time, S.value \
        FROM (SELECT *, PROCTIME() AS p_time FROM bids) B \
        JOIN side_input FOR SYSTEM_TIME AS OF B.p_time AS S ON B.auction % 10000 = S.key",
    baseline: Baseline::Exact(
        "SELECT B.auction, B.bidder, B.price, B.date_time, S.value \
         FROM bids B JOIN side_input S ON B.auction % 10000 = S.key",
    ),
    reads_file: false,
    runs_as_job: false,
};

/// The side table of [`Q13`], as statements both engines run: its 10,000 keys and values.
pub const SIDE_INPUT_ROWS: &str =
    "SELECT value AS key, 'side-' || CAST(value AS VARCHAR) AS value FROM generate_series(0, 9999)";

/// Nexmark q14, calculation: bids in a price range with a time-of-day class and the count of
/// 'c' in their extra field (the nexmark UDF `count_char`, built into Eddy). DataFusion has
/// neither HOUR nor count_char: its batch query uses `date_part` and string lengths.
pub const Q14: Query = Query {
    name: "q14",
    streaming: "SELECT auction, bidder, 0.908 * price AS price, \
          CASE WHEN HOUR(date_time) >= 8 AND HOUR(date_time) <= 18 THEN 'dayTime' \
               WHEN HOUR(date_time) <= 6 OR HOUR(date_time) >= 20 THEN 'nightTime' \
               ELSE 'otherTime' END AS bid_time_type, \
          date_time, extra, count_char(extra, 'c') AS c_counts \
        FROM bids WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000",
    baseline: Baseline::Exact(
        "SELECT auction, bidder, 0.908 * price AS price, \
           CASE WHEN date_part('hour', date_time) >= 8 AND date_part('hour', date_time) <= 18 \
                  THEN 'dayTime' \
                WHEN date_part('hour', date_time) <= 6 OR date_part('hour', date_time) >= 20 \
                  THEN 'nightTime' \
                ELSE 'otherTime' END AS bid_time_type, \
           date_time, extra, \
           CAST(character_length(extra) - character_length(replace(extra, 'c', '')) AS BIGINT) \
             AS c_counts \
         FROM bids WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000",
    ),
    reads_file: false,
    runs_as_job: false,
};

/// The per-day statistics of q15 and q16 (`{day}` is the day expression).
macro_rules! bid_statistics {
    ($day:literal) => {
        concat!(
            "count(*) AS total_bids, \
             count(*) FILTER (WHERE price < 10000) AS rank1_bids, \
             count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids, \
             count(*) FILTER (WHERE price >= 1000000) AS rank3_bids, \
             count(DISTINCT bidder) AS total_bidders, \
             count(DISTINCT bidder) FILTER (WHERE price < 10000) AS rank1_bidders, \
             count(DISTINCT bidder) FILTER (WHERE price >= 10000 AND price < 1000000) \
               AS rank2_bidders, \
             count(DISTINCT bidder) FILTER (WHERE price >= 1000000) AS rank3_bidders, \
             count(DISTINCT auction) AS total_auctions, \
             count(DISTINCT auction) FILTER (WHERE price < 10000) AS rank1_auctions, \
             count(DISTINCT auction) FILTER (WHERE price >= 10000 AND price < 1000000) \
               AS rank2_auctions, \
             count(DISTINCT auction) FILTER (WHERE price >= 1000000) AS rank3_auctions \
             FROM bids GROUP BY ",
            $day
        )
    };
}

/// Nexmark q15, bidding statistics report: per day, bids, bidders and auctions in three price
/// ranges. An updating aggregate with DISTINCT and FILTER.
pub const Q15: Query = Query {
    name: "q15",
    streaming: concat!(
        "SELECT DATE_FORMAT(date_time, 'yyyy-MM-dd') AS day, ",
        bid_statistics!("DATE_FORMAT(date_time, 'yyyy-MM-dd')")
    ),
    baseline: Baseline::Exact(concat!(
        "SELECT to_char(date_time, '%Y-%m-%d') AS day, ",
        bid_statistics!("to_char(date_time, '%Y-%m-%d')")
    )),
    reads_file: false,
    runs_as_job: true,
};

/// Nexmark q16, channel statistics report: q15 per channel and day, with the last minute seen.
pub const Q16: Query = Query {
    name: "q16",
    streaming: concat!(
        "SELECT channel, DATE_FORMAT(date_time, 'yyyy-MM-dd') AS day, \
           max(DATE_FORMAT(date_time, 'HH:mm')) AS minute, ",
        bid_statistics!("channel, DATE_FORMAT(date_time, 'yyyy-MM-dd')")
    ),
    baseline: Baseline::Exact(concat!(
        "SELECT channel, to_char(date_time, '%Y-%m-%d') AS day, \
           max(to_char(date_time, '%H:%M')) AS minute, ",
        bid_statistics!("channel, to_char(date_time, '%Y-%m-%d')")
    )),
    reads_file: false,
    runs_as_job: true,
};

/// Nexmark q17, auction statistics report: per auction and day, bids in three price ranges and
/// the minimum, maximum, average and total price. An updating aggregate.
pub const Q17: Query = Query {
    name: "q17",
    streaming: "SELECT auction, DATE_FORMAT(date_time, 'yyyy-MM-dd') AS day, \
          count(*) AS total_bids, \
          count(*) FILTER (WHERE price < 10000) AS rank1_bids, \
          count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids, \
          count(*) FILTER (WHERE price >= 1000000) AS rank3_bids, \
          min(price) AS min_price, max(price) AS max_price, avg(price) AS avg_price, \
          sum(price) AS sum_price \
        FROM bids GROUP BY auction, DATE_FORMAT(date_time, 'yyyy-MM-dd')",
    baseline: Baseline::Exact(
        "SELECT auction, to_char(date_time, '%Y-%m-%d') AS day, \
           count(*) AS total_bids, \
           count(*) FILTER (WHERE price < 10000) AS rank1_bids, \
           count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids, \
           count(*) FILTER (WHERE price >= 1000000) AS rank3_bids, \
           min(price) AS min_price, max(price) AS max_price, avg(price) AS avg_price, \
           sum(price) AS sum_price \
         FROM bids GROUP BY auction, to_char(date_time, '%Y-%m-%d')",
    ),
    reads_file: false,
    runs_as_job: true,
};

/// Nexmark q20, expand bid with auction: every bid on an auction of category 10, with the
/// auction's columns. A regular inner join: append-only.
pub const Q20: Query = Query {
    name: "q20",
    streaming: "SELECT auction, bidder, price, channel, url, B.date_time, B.extra, \
          item_name, description, initial_bid, reserve, A.date_time, expires, seller, category, \
          A.extra \
        FROM bids AS B INNER JOIN auctions AS A ON B.auction = A.id WHERE A.category = 10",
    baseline: Baseline::Same,
    reads_file: false,
    runs_as_job: false,
};

/// Nexmark q21, add channel id: bids from known channels, or whose URL names a channel id.
/// DataFusion has no REGEXP_EXTRACT: its batch query takes the group from `regexp_match`.
pub const Q21: Query = Query {
    name: "q21",
    streaming: "SELECT auction, bidder, price, channel, \
          CASE WHEN lower(channel) = 'apple' THEN '0' \
               WHEN lower(channel) = 'google' THEN '1' \
               WHEN lower(channel) = 'facebook' THEN '2' \
               WHEN lower(channel) = 'baidu' THEN '3' \
               ELSE REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2) END AS channel_id \
        FROM bids \
        WHERE REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2) IS NOT NULL \
           OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu')",
    baseline: Baseline::Exact(
        "SELECT auction, bidder, price, channel, \
           CASE WHEN lower(channel) = 'apple' THEN '0' \
                WHEN lower(channel) = 'google' THEN '1' \
                WHEN lower(channel) = 'facebook' THEN '2' \
                WHEN lower(channel) = 'baidu' THEN '3' \
                ELSE regexp_match(url, '(&|^)channel_id=([^&]*)')[2] END AS channel_id \
         FROM bids \
         WHERE regexp_match(url, '(&|^)channel_id=([^&]*)')[2] IS NOT NULL \
            OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu')",
    ),
    reads_file: false,
    runs_as_job: false,
};

/// Nexmark q22, get URL directories: the first three directories of each bid's URL. DataFusion
/// has no SPLIT_INDEX: its batch query uses `split_part` (1-based; every generated URL has the
/// directories).
pub const Q22: Query = Query {
    name: "q22",
    streaming: "SELECT auction, bidder, price, channel, \
          SPLIT_INDEX(url, '/', 3) AS dir1, SPLIT_INDEX(url, '/', 4) AS dir2, \
          SPLIT_INDEX(url, '/', 5) AS dir3 FROM bids",
    baseline: Baseline::Exact(
        "SELECT auction, bidder, price, channel, \
           split_part(url, '/', 4) AS dir1, split_part(url, '/', 5) AS dir2, \
           split_part(url, '/', 6) AS dir3 FROM bids",
    ),
    reads_file: false,
    runs_as_job: false,
};

/// Count, sum and maximum price per auction in 10-second tumbling windows.
pub const TUMBLE_10S: Query = Query {
    name: "tumble-10s",
    streaming: "SELECT auction, window_start, window_end, count(*), sum(price), max(price) \
        FROM TUMBLE(bids, date_time, INTERVAL '10' SECOND) \
        GROUP BY auction, window_start, window_end",
    baseline: Baseline::Exact(
        "SELECT auction, date_bin(INTERVAL '10' SECOND, date_time) AS window_start, \
           date_bin(INTERVAL '10' SECOND, date_time) + INTERVAL '10' SECOND AS window_end, \
           count(*), sum(price), max(price) \
         FROM bids GROUP BY auction, date_bin(INTERVAL '10' SECOND, date_time)",
    ),
    reads_file: false,
    runs_as_job: true,
};

/// The same aggregates in 10-second windows every 2 seconds: each bid is in five windows.
pub const HOP_10S_2S: Query = Query {
    name: "hop-10s-2s",
    streaming: "SELECT auction, window_start, window_end, count(*), sum(price), max(price) \
        FROM HOP(bids, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) \
        GROUP BY auction, window_start, window_end",
    baseline: Baseline::Exact(
        "SELECT auction, window_start, window_start + INTERVAL '10' SECOND AS window_end, \
           count(*), sum(price), max(price) \
         FROM (SELECT auction, price, date_bin(INTERVAL '2' SECOND, date_time) - o.d AS window_start \
               FROM bids CROSS JOIN (VALUES (INTERVAL '0' SECOND), (INTERVAL '2' SECOND), \
                 (INTERVAL '4' SECOND), (INTERVAL '6' SECOND), (INTERVAL '8' SECOND)) AS o(d)) \
         GROUP BY auction, window_start",
    ),
    reads_file: false,
    runs_as_job: true,
};

/// An interval join: each bid with its auction, if placed within 10 s of the auction's
/// creation. Reads two generated streams.
pub const INTERVAL_JOIN: Query = Query {
    name: "interval-join",
    streaming: "SELECT B.auction, B.price, A.seller FROM bids B JOIN auctions A \
        ON B.auction = A.id \
        AND B.date_time BETWEEN A.date_time AND A.date_time + INTERVAL '10' SECOND",
    baseline: Baseline::Same,
    reads_file: false,
    runs_as_job: false,
};

/// The bid stream as price ticks per auction: V-shapes (a fall, then a rise), one row per
/// match. DataFusion has no MATCH_RECOGNIZE; its figure is the lower bound of any batch plan:
/// sorting each auction's bids by time and computing both DEFINE conditions with `LAG`.
pub const PATTERN_VSHAPE: Query = Query {
    name: "pattern-vshape",
    streaming: "SELECT * FROM bids MATCH_RECOGNIZE ( \
          PARTITION BY auction ORDER BY date_time \
          MEASURES A.price AS start_price, LAST(B.price) AS bottom_price, \
            C.price AS end_price, MATCH_NUMBER() AS n \
          ONE ROW PER MATCH AFTER MATCH SKIP PAST LAST ROW \
          PATTERN (A B+ C) \
          DEFINE B AS B.price < PREV(B.price), C AS C.price > PREV(C.price))",
    baseline: Baseline::LowerBound(PATTERN_LOWER_BOUND),
    reads_file: false,
    runs_as_job: true,
};

/// The same V-shape whose rise must pass the first price: C's condition reads another
/// variable's row, so it is evaluated per candidate, not per batch.
pub const PATTERN_VSHAPE_ABOVE_START: Query = Query {
    name: "pattern-vshape-above-start",
    streaming: "SELECT * FROM bids MATCH_RECOGNIZE ( \
          PARTITION BY auction ORDER BY date_time \
          MEASURES A.price AS start_price, LAST(B.price) AS bottom_price, \
            C.price AS end_price \
          ONE ROW PER MATCH AFTER MATCH SKIP PAST LAST ROW \
          PATTERN (A B+ C) \
          DEFINE B AS B.price < PREV(B.price), C AS C.price > A.price)",
    baseline: Baseline::LowerBound(PATTERN_LOWER_BOUND),
    reads_file: false,
    runs_as_job: true,
};

/// The batch lower bound of the V-shape queries: every auction's bids sorted by time, with
/// both conditions computed, and no matching.
const PATTERN_LOWER_BOUND: &str = "SELECT count(*) FILTER (WHERE price < prev), count(*) FILTER (WHERE price > prev) \
     FROM (SELECT price, LAG(price) OVER (PARTITION BY auction ORDER BY date_time) AS prev \
           FROM bids)";

/// [`TUMBLE_10S`]'s count, sum and maximum over the run's bids read back from a CSV file
/// (`bids_file`), against DataFusion reading the same file: the cost of a file source.
pub const FILE_TUMBLE_10S: Query = Query {
    name: "file-tumble-10s",
    streaming: "SELECT auction, window_start, window_end, count(*), sum(price), max(price) \
        FROM TUMBLE(bids_file, date_time, INTERVAL '10' SECOND) \
        GROUP BY auction, window_start, window_end",
    baseline: Baseline::Exact(
        "SELECT auction, date_bin(INTERVAL '10' SECOND, date_time) AS window_start, \
           date_bin(INTERVAL '10' SECOND, date_time) + INTERVAL '10' SECOND AS window_end, \
           count(*), sum(price), max(price) \
         FROM bids_file GROUP BY auction, date_bin(INTERVAL '10' SECOND, date_time)",
    ),
    reads_file: true,
    runs_as_job: false,
};

/// Every query, in the order they run.
pub const QUERIES: &[Query] = &[
    Q0,
    Q1,
    Q2,
    Q3,
    Q4,
    Q5,
    Q7,
    Q8,
    Q9,
    Q10,
    Q11,
    Q12,
    Q13,
    Q14,
    Q15,
    Q16,
    Q17,
    Q18,
    Q19,
    Q20,
    Q21,
    Q22,
    TUMBLE_10S,
    HOP_10S_2S,
    INTERVAL_JOIN,
    PATTERN_VSHAPE,
    PATTERN_VSHAPE_ABOVE_START,
    FILE_TUMBLE_10S,
];

/// Count and maximum price per auction and bidder in one-hour tumbling windows: at the
/// generator's 10,000 events per second of event time every window of a run of up to 36 M
/// events stays open to the end, so the state holds a key for every distinct (auction, bidder)
/// pair seen (about 1 M at 2 M events). Only in the checkpoint run (`--checkpoint-interval`),
/// for the size and duration of a checkpoint of many open keys.
pub const OPEN_KEYS_1H: Query = Query {
    name: "open-keys-1h",
    streaming: "SELECT auction, bidder, window_start, window_end, count(*), max(price) \
        FROM TUMBLE(bids, date_time, INTERVAL '1' HOUR) \
        GROUP BY auction, bidder, window_start, window_end",
    baseline: Baseline::Exact(
        "SELECT auction, bidder, date_bin(INTERVAL '1' HOUR, date_time) AS window_start, \
           date_bin(INTERVAL '1' HOUR, date_time) + INTERVAL '1' HOUR AS window_end, \
           count(*), max(price) \
         FROM bids GROUP BY auction, bidder, date_bin(INTERVAL '1' HOUR, date_time)",
    ),
    reads_file: false,
    runs_as_job: true,
};

/// The queries only the checkpoint run has, after those of [`QUERIES`] that run as jobs.
pub const JOB_QUERIES: &[Query] = &[OPEN_KEYS_1H];

/// One export benchmark: the same rows written to a Parquet file by Eddy's `COPY ... TO` and
/// by DataFusion's. `{dir}` stands for the benchmark's temporary folder.
#[derive(Debug, Clone, Copy)]
pub struct Export {
    pub name: &'static str,
    /// Eddy's statement (zstd, as DataFusion's default).
    pub streaming: &'static str,
    /// DataFusion's statement.
    pub batch: &'static str,
    /// The file each writes, to compare them.
    pub files: (&'static str, &'static str),
}

/// Nexmark q0's rows (every bid) exported to Parquet.
pub const EXPORT_Q0: Export = Export {
    name: "export-q0-parquet",
    streaming: "COPY (SELECT auction, bidder, price, date_time, extra FROM bids) \
        TO '{dir}/eddy-q0.parquet' (FORMAT parquet, COMPRESSION zstd)",
    batch: "COPY (SELECT auction, bidder, price, date_time, extra FROM bids) \
        TO '{dir}/datafusion-q0.parquet' STORED AS PARQUET \
        OPTIONS ('format.compression' 'zstd(1)')",
    files: ("eddy-q0.parquet", "datafusion-q0.parquet"),
};

/// Every export benchmark.
pub const EXPORTS: &[Export] = &[EXPORT_Q0];

/// Nexmark queries Eddy cannot run, and why.
pub const SKIPPED: &[(&str, &str)] = &[
    // q6, average selling price by seller: an OVER window over an updating aggregate, which
    // Flink refuses too (its nexmark suite marks q6 unsupported).
    (
        "q6",
        "an OVER aggregation over an updating result, which neither Eddy nor Flink runs",
    ),
];
