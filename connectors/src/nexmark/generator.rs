//! Generation of person, auction and bid rows straight into Arrow columns, following the
//! standard Nexmark `PersonGenerator`, `AuctionGenerator` and `BidGenerator`.
//!
//! [`NexmarkGenerator::generate`] produces the rows of one table for ranges of its rows,
//! visiting only the events of that table. Every row is drawn from its event's own random
//! stream in a fixed order, so a row's values depend only on the seed and the event number.
//! String columns a query does not read are not stored; a bid also skips the draws of its
//! channel when neither it nor its url is read (a fixed number, so later draws do not move).

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMillisecondArray};
use datafusion::arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::error::ArrowError;
use eddy_engine::connector::ConnectorResult;

use super::config::NexmarkTable;
use super::generator_config::{
    AVG_AUCTION_BYTE_SIZE, AVG_BID_BYTE_SIZE, AVG_PERSON_BYTE_SIZE, FIRST_AUCTION_ID,
    FIRST_CATEGORY_ID, FIRST_PERSON_ID, GeneratorConfig, HOT_AUCTION_RATIO, HOT_AUCTIONS_RATIO,
    HOT_BIDDER_RATIO, HOT_BIDDERS_RATIO, HOT_SELLER_RATIO, HOT_SELLERS_RATIO, NUM_CATEGORIES,
    event_runs, last_base0_auction_id, last_base0_person_id, next_base0_person_id,
    random_base0_auction_id, random_base0_person_id,
};
use super::price::PriceGenerator;
use super::random::{EventStreams, LetterPool, Rng};
use super::schema::columns;

const US_STATES: &[&str] = &["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: &[&str] = &[
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const FIRST_NAMES: &[&str] = &[
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: &[&str] = &[
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];

const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
/// One in this many bids comes through one of the [`CHANNELS_NUMBER`] cold channels.
const HOT_CHANNELS_RATIO: u64 = 2;
const CHANNELS_NUMBER: usize = 10_000;

/// The bid channels and their urls, drawn once per reader from the seed.
#[derive(Debug)]
struct Channels {
    hot_urls: [String; HOT_CHANNELS.len()],
    names: StrTable,
    urls: StrTable,
}

impl Channels {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let hot_urls = std::array::from_fn(|_| base_url(&mut rng));
        let mut names = StrTable::default();
        let mut urls = StrTable::default();
        for number in 0..CHANNELS_NUMBER {
            let mut url = base_url(&mut rng);
            if rng.below(10) > 0 {
                let id = (number as i32).reverse_bits().unsigned_abs();
                url.push_str(&format!("&channel_id={id}"));
            }
            names.push(&format!("channel-{number}"));
            urls.push(&url);
        }
        Self {
            hot_urls,
            names,
            urls,
        }
    }
}

/// Strings stored end to end. Bids pick cold channels at random among 10,000: one buffer
/// spares the cache miss on each string's own allocation.
#[derive(Debug, Default)]
struct StrTable {
    text: String,
    /// Where each string ends in `text`.
    ends: Vec<usize>,
}

impl StrTable {
    fn push(&mut self, value: &str) {
        self.text.push_str(value);
        self.ends.push(self.text.len());
    }

    fn get(&self, index: usize) -> &str {
        let start = index.checked_sub(1).map_or(0, |before| self.ends[before]);
        &self.text[start..self.ends[index]]
    }
}

fn base_url(rng: &mut Rng) -> String {
    let mut bytes = b"https://www.nexmark.com/".to_vec();
    for _ in 0..3 {
        rng.push_string(5, b'_', &mut bytes);
        bytes.push(b'/');
    }
    bytes.extend_from_slice(b"item.htm?query=1");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A Utf8 column built from raw bytes, or a sink that only measures when the query does not
/// read the column.
struct Utf8Column {
    stored: bool,
    offsets: Vec<i32>,
    values: Vec<u8>,
    overflow: bool,
}

impl Utf8Column {
    /// A column for `rows` values of at most about `bytes_per_row` bytes: reserving the
    /// longest value up front spares reallocations (untouched capacity costs no memory).
    fn new(stored: bool, rows: usize, bytes_per_row: usize) -> Self {
        let (rows, bytes) = if stored {
            (rows, rows * bytes_per_row)
        } else {
            (0, 0)
        };
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Self {
            stored,
            offsets,
            values: Vec::with_capacity(bytes),
            overflow: false,
        }
    }

    /// Where the bytes of the current value go: the column, or `scratch` when not stored.
    fn sink<'a>(&'a mut self, scratch: &'a mut Vec<u8>) -> &'a mut Vec<u8> {
        if self.stored {
            &mut self.values
        } else {
            scratch.clear();
            scratch
        }
    }

    fn push_str(&mut self, value: &str) {
        if self.stored {
            self.values.extend_from_slice(value.as_bytes());
            self.end_value();
        }
    }

    /// Ends the value whose bytes were written to [`Self::sink`].
    fn end_value(&mut self) {
        if self.stored {
            match i32::try_from(self.values.len()) {
                Ok(end) => self.offsets.push(end),
                Err(_) => self.overflow = true,
            }
        }
    }

    fn finish(self) -> ConnectorResult<Option<ArrayRef>> {
        if !self.stored {
            return Ok(None);
        }
        if self.overflow {
            return Err(ArrowError::ComputeError(
                "nexmark batch exceeds 2 GiB in one string column; lower the batch size".into(),
            )
            .into());
        }
        let offsets = OffsetBuffer::new(ScalarBuffer::from(self.offsets));
        let array = StringArray::try_new(offsets, Buffer::from_vec(self.values), None)?;
        Ok(Some(Arc::new(array)))
    }
}

fn int64(values: Vec<i64>) -> Option<ArrayRef> {
    Some(Arc::new(Int64Array::from(values)))
}

fn timestamps(values: Vec<i64>) -> Option<ArrayRef> {
    Some(Arc::new(TimestampMillisecondArray::from(values)))
}

fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Generates the rows of one Nexmark table.
pub struct NexmarkGenerator {
    config: GeneratorConfig,
    table: NexmarkTable,
    /// Which columns of the table's full schema the reader needs.
    wanted: Vec<bool>,
    streams: EventStreams,
    prices: PriceGenerator,
    channels: Option<Channels>,
    /// Drawn on first use.
    padding: Option<LetterPool>,
    scratch: Vec<u8>,
}

impl NexmarkGenerator {
    pub fn new(config: GeneratorConfig, table: NexmarkTable, wanted: Vec<bool>) -> Self {
        Self {
            config,
            table,
            wanted,
            streams: EventStreams::new(config.seed),
            prices: PriceGenerator::new(),
            channels: None,
            padding: None,
            scratch: Vec::new(),
        }
    }

    pub fn table(&self) -> NexmarkTable {
        self.table
    }

    fn wants(&self, column: usize) -> bool {
        self.wanted.get(column).copied().unwrap_or(false)
    }

    /// Generates the rows `rows` of this generator's table (row `i` is the `i`-th event of the
    /// table in the combined stream), range after range, in one batch. Returns one entry per
    /// column of the table's full schema, `None` for string columns that were not requested.
    pub fn generate(&mut self, rows: &[Range<u64>]) -> ConnectorResult<Vec<Option<ArrayRef>>> {
        let num_rows = rows
            .iter()
            .map(|range| range.end.saturating_sub(range.start))
            .sum::<u64>();
        let num_rows = usize::try_from(num_rows).unwrap_or(usize::MAX);
        let table = self.table;
        let runs = rows
            .iter()
            .flat_map(move |range| event_runs(table, range.clone()));
        match table {
            NexmarkTable::Person => self.persons(runs.flatten(), num_rows),
            NexmarkTable::Auction => self.auctions(runs.flatten(), num_rows),
            NexmarkTable::Bid => self.bids(runs, num_rows),
        }
    }

    fn persons(
        &mut self,
        events: impl Iterator<Item = u64>,
        rows: usize,
    ) -> ConnectorResult<Vec<Option<ArrayRef>>> {
        use columns::person::*;
        let mut id = Vec::with_capacity(rows);
        let mut date_time = Vec::with_capacity(rows);
        let mut name = Utf8Column::new(self.wants(NAME), rows, 14);
        let mut email = Utf8Column::new(self.wants(EMAIL_ADDRESS), rows, 15);
        let mut credit_card = Utf8Column::new(self.wants(CREDIT_CARD), rows, 19);
        let mut city = Utf8Column::new(self.wants(CITY), rows, 13);
        let mut state = Utf8Column::new(self.wants(STATE), rows, 2);
        let mut extra = Utf8Column::new(self.wants(EXTRA), rows, 200);
        let scratch = &mut self.scratch;
        let padding = self
            .padding
            .get_or_insert_with(|| LetterPool::new(self.config.seed));

        for event in events {
            let mut rng = self.streams.of(event);
            id.push(as_i64(last_base0_person_id(event) + FIRST_PERSON_ID));
            date_time.push(self.config.timestamp_ms(event));

            let first_name = FIRST_NAMES[rng.below(FIRST_NAMES.len() as u64) as usize];
            let last_name = LAST_NAMES[rng.below(LAST_NAMES.len() as u64) as usize];
            let out = name.sink(scratch);
            out.extend_from_slice(first_name.as_bytes());
            out.push(b' ');
            out.extend_from_slice(last_name.as_bytes());
            name.end_value();
            let name_len = first_name.len() + 1 + last_name.len();

            let out = email.sink(scratch);
            let mut email_len = rng.push_string(7, b' ', out);
            out.push(b'@');
            email_len += 1 + rng.push_string(5, b' ', out);
            out.extend_from_slice(b".com");
            email.end_value();
            email_len += 4;

            let out = credit_card.sink(scratch);
            for group in 0..4 {
                if group > 0 {
                    out.push(b' ');
                }
                let digits = rng.below(10_000) as u16;
                for divisor in [1000, 100, 10, 1] {
                    out.push(b'0' + (digits / divisor % 10) as u8);
                }
            }
            credit_card.end_value();
            let credit_card_len = 19;

            let city_name = US_CITIES[rng.below(US_CITIES.len() as u64) as usize];
            city.push_str(city_name);
            let state_name = US_STATES[rng.below(US_STATES.len() as u64) as usize];
            state.push_str(state_name);

            if extra.stored {
                let size =
                    8 + name_len + email_len + credit_card_len + city_name.len() + state_name.len();
                let len = rng.extra_len(size, AVG_PERSON_BYTE_SIZE);
                extra.push_str(padding.letters(len, &mut rng));
            }
        }

        Ok(vec![
            int64(id),
            name.finish()?,
            email.finish()?,
            credit_card.finish()?,
            city.finish()?,
            state.finish()?,
            timestamps(date_time),
            extra.finish()?,
        ])
    }

    fn auctions(
        &mut self,
        events: impl Iterator<Item = u64>,
        rows: usize,
    ) -> ConnectorResult<Vec<Option<ArrayRef>>> {
        use columns::auction::*;
        let mut id = Vec::with_capacity(rows);
        let mut initial_bid = Vec::with_capacity(rows);
        let mut reserve = Vec::with_capacity(rows);
        let mut date_time = Vec::with_capacity(rows);
        let mut expires = Vec::with_capacity(rows);
        let mut seller = Vec::with_capacity(rows);
        let mut category = Vec::with_capacity(rows);
        let mut item_name = Utf8Column::new(self.wants(ITEM_NAME), rows, 19);
        let mut description = Utf8Column::new(self.wants(DESCRIPTION), rows, 99);
        let mut extra = Utf8Column::new(self.wants(EXTRA), rows, 560);
        let scratch = &mut self.scratch;
        let padding = self
            .padding
            .get_or_insert_with(|| LetterPool::new(self.config.seed));

        for event in events {
            let mut rng = self.streams.of(event);
            let timestamp = self.config.timestamp_ms(event);
            id.push(as_i64(last_base0_auction_id(event) + FIRST_AUCTION_ID));
            date_time.push(timestamp);

            // Here P(auction has a hot seller) = 1 - 1/HOT_SELLERS_RATIO.
            let base0_seller = if rng.below(HOT_SELLERS_RATIO) > 0 {
                last_base0_person_id(event) / HOT_SELLER_RATIO * HOT_SELLER_RATIO
            } else {
                next_base0_person_id(event, &mut rng)
            };
            seller.push(as_i64(base0_seller + FIRST_PERSON_ID));
            category.push(as_i64(FIRST_CATEGORY_ID + rng.below(NUM_CATEGORIES)));
            let initial = self.prices.next_price(&mut rng);
            initial_bid.push(initial);
            let length = self.config.auction_length_ms(event, timestamp, &mut rng);
            expires.push(timestamp.saturating_add(length));

            let name_len = rng.push_string(20, b' ', item_name.sink(scratch));
            item_name.end_value();
            let description_len = rng.push_string(100, b' ', description.sink(scratch));
            description.end_value();
            reserve.push(initial.saturating_add(self.prices.next_price(&mut rng)));

            if extra.stored {
                let size = 8 + name_len + description_len + 8 + 8 + 8 + 8 + 8;
                let len = rng.extra_len(size, AVG_AUCTION_BYTE_SIZE);
                extra.push_str(padding.letters(len, &mut rng));
            }
        }

        Ok(vec![
            int64(id),
            item_name.finish()?,
            description.finish()?,
            int64(initial_bid),
            int64(reserve),
            timestamps(date_time),
            timestamps(expires),
            int64(seller),
            int64(category),
            extra.finish()?,
        ])
    }

    /// Bids, one run of consecutive events (one group) at a time: the events of a group share
    /// the newest person and auction, and their times come from one clock.
    fn bids(
        &mut self,
        runs: impl Iterator<Item = Range<u64>>,
        rows: usize,
    ) -> ConnectorResult<Vec<Option<ArrayRef>>> {
        use columns::bid::*;
        let mut columns = BidColumns::new(
            [self.wants(CHANNEL), self.wants(URL), self.wants(EXTRA)],
            rows,
        );
        let channels = self
            .channels
            .get_or_insert_with(|| Channels::new(self.config.seed));
        let padding = self
            .padding
            .get_or_insert_with(|| LetterPool::new(self.config.seed));

        for run in runs {
            let newest = Newest::at(run.start);
            let mut clock = self.config.clock_at(run.start);
            for event in run {
                let mut rng = self.streams.of(event);
                columns.date_time.push(clock.timestamp_ms());
                clock.tick();
                columns
                    .auction
                    .push(as_i64(newest.bid_auction(&mut rng) + FIRST_AUCTION_ID));
                columns
                    .bidder
                    .push(as_i64(newest.bidder(&mut rng) + FIRST_PERSON_ID));
                columns.price_draws.push(rng.next_u64());
                columns.push_strings(channels, padding, &mut rng);
            }
        }
        columns.finish(&self.prices)
    }
}

/// The newest person and auction at an event, which bids refer to.
struct Newest {
    base0_person: u64,
    base0_auction: u64,
}

impl Newest {
    fn at(event: u64) -> Self {
        Self {
            base0_person: last_base0_person_id(event),
            base0_auction: last_base0_auction_id(event),
        }
    }

    /// The auction of a bid. Here P(bid is for a hot auction) = 1 - 1/HOT_AUCTIONS_RATIO.
    fn bid_auction(&self, rng: &mut Rng) -> u64 {
        if rng.below(HOT_AUCTIONS_RATIO) > 0 {
            self.base0_auction / HOT_AUCTION_RATIO * HOT_AUCTION_RATIO
        } else {
            random_base0_auction_id(self.base0_auction, rng)
        }
    }

    /// The bidder of a bid. Hot bidders are the second person of a group, so they are never
    /// hot sellers.
    fn bidder(&self, rng: &mut Rng) -> u64 {
        if rng.below(HOT_BIDDERS_RATIO) > 0 {
            self.base0_person / HOT_BIDDER_RATIO * HOT_BIDDER_RATIO + 1
        } else {
            random_base0_person_id(self.base0_person, rng)
        }
    }
}

/// The columns of a batch of bids.
struct BidColumns {
    auction: Vec<i64>,
    bidder: Vec<i64>,
    /// Turned into prices by [`Self::finish`] (see [`PriceGenerator::price_of_draw`]).
    price_draws: Vec<u64>,
    date_time: Vec<i64>,
    channel: Utf8Column,
    url: Utf8Column,
    extra: Utf8Column,
}

impl BidColumns {
    /// Columns for `rows` bids, storing channel, url and extra as the flags say.
    fn new([channel, url, extra]: [bool; 3], rows: usize) -> Self {
        Self {
            auction: Vec::with_capacity(rows),
            bidder: Vec::with_capacity(rows),
            price_draws: Vec::with_capacity(rows),
            date_time: Vec::with_capacity(rows),
            channel: Utf8Column::new(channel, rows, 12),
            url: Utf8Column::new(url, rows, 80),
            extra: Utf8Column::new(extra, rows, 82),
        }
    }

    /// The string columns of a bid, drawn last from its stream. Draws that only feed columns
    /// the query does not read are skipped, never replaced by others, so every column keeps
    /// its value whichever columns are read.
    fn push_strings(&mut self, channels: &Channels, padding: &LetterPool, rng: &mut Rng) {
        if self.channel.stored || self.url.stored {
            // One draw for hot or cold, one for which channel.
            if rng.below(HOT_CHANNELS_RATIO) > 0 {
                let hot = rng.below(HOT_CHANNELS.len() as u64) as usize;
                self.channel.push_str(HOT_CHANNELS[hot]);
                self.url.push_str(&channels.hot_urls[hot]);
            } else {
                let cold = rng.below(CHANNELS_NUMBER as u64) as usize;
                self.channel.push_str(channels.names.get(cold));
                self.url.push_str(channels.urls.get(cold));
            }
        } else if self.extra.stored {
            rng.skip(2);
        }
        if self.extra.stored {
            let len = rng.extra_len(8 + 8 + 8 + 8, AVG_BID_BYTE_SIZE);
            self.extra.push_str(padding.letters(len, rng));
        }
    }

    fn finish(self, prices: &PriceGenerator) -> ConnectorResult<Vec<Option<ArrayRef>>> {
        let price = self
            .price_draws
            .iter()
            .map(|&draw| prices.price_of_draw(draw));
        Ok(vec![
            int64(self.auction),
            int64(self.bidder),
            int64(price.collect()),
            self.channel.finish()?,
            self.url.finish()?,
            timestamps(self.date_time),
            self.extra.finish()?,
        ])
    }
}
