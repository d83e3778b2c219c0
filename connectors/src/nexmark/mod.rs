//! The `nexmark` source: a built-in, deterministic generator of the Nexmark benchmark's person,
//! auction and bid streams.
//!
//! ```sql
//! CREATE SOURCE bids WITH (connector = 'nexmark', nexmark.table = 'bid',
//!                          events.per.second = '10000', events.max = '1000000');
//! ```
//!
//! The generator follows the standard one (Apache Beam's and Flink's nexmark): a single stream
//! of events in which, out of every 50, 1 is a new person, 3 are new auctions and 46 are bids;
//! ids, hot auctions/sellers/bidders, prices, auction lengths and padding follow the standard
//! `GeneratorConfig`. A source reads one table of that stream; the events of the other tables
//! still count (for ids, `events.max` and the rate) but are not generated.
//!
//! Options (see [`config`]):
//! - `nexmark.table`: `bid`, `person` or `auction` (plural accepted); required.
//! - `events.per.second`: wall-clock rate of the combined stream; absent or 0 = unlimited.
//!   When set, it is also the stream's event-time rate, as in the standard generator where the
//!   first-event rate both spaces the event timestamps and paces emission; when unlimited,
//!   event time advances at Nexmark's default 10,000 events per second (0.1 ms apart).
//! - `events.max`: the stream ends after this many events of the combined stream (so a bid
//!   source yields about 46/50 of it); absent = unbounded.
//! - `seed`: the same seed (and options) always yield the same rows.
//! - `base.time`: event time of event 0, epoch milliseconds or RFC 3339; default
//!   2023-01-01T00:00:00Z. Event times never depend on the wall clock.
//!
//! An unpaced source may be read by several readers in parallel, each producing the rows of
//! its share of blocks of the event stream ([`split`]). A reader restored from a checkpoint
//! (`start_row`) starts at that row of its split without generating the rows before it, and
//! paces (if paced) from there.

pub mod config;
pub mod generator;
pub mod generator_config;
pub mod price;
pub mod random;
mod reader;
pub mod schema;
pub mod split;

use datafusion::arrow::datatypes::SchemaRef;
use eddy_engine::connector::{
    ConnectorError, ConnectorOptions, ConnectorResult, SourceConnector, SourceContext,
    SourceReader, SourceSplit,
};

use self::config::NexmarkOptions;
use self::reader::{ReaderParams, batch_stream};
use self::schema::{OutputPlan, table_schema};

/// The `nexmark` source connector.
#[derive(Debug, Clone, Copy, Default)]
pub struct NexmarkConnector;

impl SourceConnector for NexmarkConnector {
    fn name(&self) -> &'static str {
        "nexmark"
    }

    fn default_schema(&self, options: &ConnectorOptions) -> ConnectorResult<Option<SchemaRef>> {
        let options = NexmarkOptions::parse(options)?;
        Ok(Some(table_schema(options.table)))
    }

    fn validate(&self, schema: &SchemaRef, options: &ConnectorOptions) -> ConnectorResult<()> {
        let options = NexmarkOptions::parse(options)?;
        OutputPlan::new(options.table, schema)?;
        Ok(())
    }

    /// An unpaced source splits into blocks of events ([`split`]). A paced one
    /// (`events.per.second`) stays one reader: its rate is that of the whole stream, and
    /// parallel readers would each have to pace a share of it for no gain in speed.
    fn splittable(&self, options: &ConnectorOptions) -> bool {
        NexmarkOptions::parse(options).is_ok_and(|options| options.events_per_second.is_none())
    }

    fn open(&self, ctx: SourceContext) -> ConnectorResult<SourceReader> {
        let options = NexmarkOptions::parse(&ctx.options)?;
        let plan = OutputPlan::new(options.table, &ctx.output_schema()?)?;
        let SourceSplit { index, count } = ctx.split;
        if index >= count {
            return Err(ConnectorError::Unsupported(format!(
                "nexmark reader {index} of {count}: a split's index must be below its count"
            )));
        }
        let bounded = options.events_max.is_some();
        let stream = batch_stream(ReaderParams {
            options,
            plan,
            metrics: ctx.metrics,
            batch_size: ctx.batch_size,
            split: ctx.split,
            start_row: ctx.start_row,
        });
        Ok(SourceReader {
            stream,
            bounded,
            position: None,
            partitions: None,
        })
    }
}

#[cfg(test)]
mod tests;
