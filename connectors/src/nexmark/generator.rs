//! Generation of person, auction and bid rows straight into Arrow columns, following the
//! standard Nexmark `PersonGenerator`, `AuctionGenerator` and `BidGenerator`.
//!
//! [`NexmarkGenerator::generate`] produces the rows of one table for a range of event numbers,
//! visiting only the events of that table. Every row is drawn from its event's own random
//! stream in a fixed order, so a row's values depend only on the seed and the event number;
//! string columns a query does not read are drawn but not stored.

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
    count_before, event_of, last_base0_auction_id, last_base0_person_id, next_base0_auction_id,
    next_base0_person_id,
};
use super::random::{LetterPool, Rng};
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
    names: Vec<String>,
    urls: Vec<String>,
}

impl Channels {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let hot_urls = std::array::from_fn(|_| base_url(&mut rng));
        let mut names = Vec::with_capacity(CHANNELS_NUMBER);
        let mut urls = Vec::with_capacity(CHANNELS_NUMBER);
        for number in 0..CHANNELS_NUMBER {
            let mut url = base_url(&mut rng);
            if rng.below(10) > 0 {
                let id = (number as i32).reverse_bits().unsigned_abs();
                url.push_str(&format!("&channel_id={id}"));
            }
            names.push(format!("channel-{number}"));
            urls.push(url);
        }
        Self {
            hot_urls,
            names,
            urls,
        }
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

/// The standard `PriceGenerator.nextPrice`: log-uniform between 1.00 and 1,000,000.00, in cents.
fn next_price(rng: &mut Rng) -> i64 {
    // 10^(6u) as e^(6u ln 10), and round-half-up by hand: both notably cheaper than
    // `powf` and `round`, which are library calls on baseline x86-64.
    let cents = (rng.unit_f64() * 6.0 * std::f64::consts::LN_10).exp() * 100.0;
    (cents + 0.5) as i64
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

/// Rows of one table generated for a range of events.
pub struct GeneratedRows {
    /// One entry per column of the table's full schema; `None` for string columns that were
    /// not requested.
    pub columns: Vec<Option<ArrayRef>>,
    pub num_rows: usize,
    /// The first event number not yet generated (events of other tables before it are skipped).
    pub next_event: u64,
}

/// Generates the rows of one Nexmark table.
pub struct NexmarkGenerator {
    config: GeneratorConfig,
    table: NexmarkTable,
    /// Which columns of the table's full schema the reader needs.
    wanted: Vec<bool>,
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

    /// Generates the rows of this generator's table among events `from..to`, at most
    /// `max_rows` of them.
    pub fn generate(
        &mut self,
        from: u64,
        to: u64,
        max_rows: usize,
    ) -> ConnectorResult<GeneratedRows> {
        let first = count_before(self.table, from);
        let available = count_before(self.table, to).saturating_sub(first);
        let num_rows = usize::try_from(available).map_or(max_rows, |n| n.min(max_rows));
        let next_event = if (num_rows as u64) < available {
            event_of(self.table, first + num_rows as u64)
        } else {
            to
        };
        let table = self.table;
        let events = (first..first + num_rows as u64).map(move |index| event_of(table, index));
        let columns = match self.table {
            NexmarkTable::Person => self.persons(events, num_rows)?,
            NexmarkTable::Auction => self.auctions(events, num_rows)?,
            NexmarkTable::Bid => self.bids(events, num_rows)?,
        };
        Ok(GeneratedRows {
            columns,
            num_rows,
            next_event,
        })
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
            let mut rng = Rng::for_event(self.config.seed, event);
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
            let mut rng = Rng::for_event(self.config.seed, event);
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
            let initial = next_price(&mut rng);
            initial_bid.push(initial);
            let length = self.config.auction_length_ms(event, timestamp, &mut rng);
            expires.push(timestamp.saturating_add(length));

            let name_len = rng.push_string(20, b' ', item_name.sink(scratch));
            item_name.end_value();
            let description_len = rng.push_string(100, b' ', description.sink(scratch));
            description.end_value();
            reserve.push(initial.saturating_add(next_price(&mut rng)));

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

    fn bids(
        &mut self,
        events: impl Iterator<Item = u64>,
        rows: usize,
    ) -> ConnectorResult<Vec<Option<ArrayRef>>> {
        use columns::bid::*;
        let mut auction = Vec::with_capacity(rows);
        let mut bidder = Vec::with_capacity(rows);
        let mut price = Vec::with_capacity(rows);
        let mut date_time = Vec::with_capacity(rows);
        let mut channel = Utf8Column::new(self.wants(CHANNEL), rows, 12);
        let mut url = Utf8Column::new(self.wants(URL), rows, 80);
        let mut extra = Utf8Column::new(self.wants(EXTRA), rows, 82);
        let channels = self
            .channels
            .get_or_insert_with(|| Channels::new(self.config.seed));
        let padding = self
            .padding
            .get_or_insert_with(|| LetterPool::new(self.config.seed));

        for event in events {
            let mut rng = Rng::for_event(self.config.seed, event);
            date_time.push(self.config.timestamp_ms(event));

            // Here P(bid is for a hot auction) = 1 - 1/HOT_AUCTIONS_RATIO.
            let base0_auction = if rng.below(HOT_AUCTIONS_RATIO) > 0 {
                last_base0_auction_id(event) / HOT_AUCTION_RATIO * HOT_AUCTION_RATIO
            } else {
                next_base0_auction_id(event, &mut rng)
            };
            auction.push(as_i64(base0_auction + FIRST_AUCTION_ID));

            // Hot bidders are the second person of a group, so they are never hot sellers.
            let base0_bidder = if rng.below(HOT_BIDDERS_RATIO) > 0 {
                last_base0_person_id(event) / HOT_BIDDER_RATIO * HOT_BIDDER_RATIO + 1
            } else {
                next_base0_person_id(event, &mut rng)
            };
            bidder.push(as_i64(base0_bidder + FIRST_PERSON_ID));
            price.push(next_price(&mut rng));

            if rng.below(HOT_CHANNELS_RATIO) > 0 {
                let hot = rng.below(HOT_CHANNELS.len() as u64) as usize;
                channel.push_str(HOT_CHANNELS[hot]);
                url.push_str(&channels.hot_urls[hot]);
            } else {
                let cold = rng.below(CHANNELS_NUMBER as u64) as usize;
                channel.push_str(&channels.names[cold]);
                url.push_str(&channels.urls[cold]);
            }

            if extra.stored {
                let len = rng.extra_len(8 + 8 + 8 + 8, AVG_BID_BYTE_SIZE);
                extra.push_str(padding.letters(len, &mut rng));
            }
        }

        Ok(vec![
            int64(auction),
            int64(bidder),
            int64(price),
            channel.finish()?,
            url.finish()?,
            timestamps(date_time),
            extra.finish()?,
        ])
    }
}
