//! The `eddy` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Eddy: continuous SQL over event streams, served over the Postgres wire protocol.
#[derive(Debug, Parser)]
#[command(
    name = "eddy",
    version,
    about = "Eddy: continuous SQL over event streams, served over the Postgres wire protocol.\n\
             Connect with: psql -h 127.0.0.1 -p 6874 -U eddy eddy",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default when no command is given).
    Serve(ServeArgs),
}

/// Options of `eddy serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to accept Postgres connections on.
    #[arg(long, env = "EDDY_LISTEN", default_value = "127.0.0.1:6874")]
    pub listen: SocketAddr,

    /// Directory for the catalog and the rows of tables; created if missing.
    #[arg(long, env = "EDDY_DATA_DIR", default_value = "./eddy-data")]
    pub data_dir: PathBuf,

    /// Worker threads for query execution, and the parallel instances of each keyed operator
    /// of a query (default: one per core).
    #[arg(long, env = "EDDY_WORKERS")]
    pub workers: Option<usize>,

    /// A directory file sources, sinks and COPY TO may read and write, besides the data
    /// directory and the working directory (repeatable). Anything else is refused.
    #[arg(long = "allow-path", value_name = "DIR")]
    pub allow_path: Vec<PathBuf>,

    /// How often materialized views and sinks checkpoint their state (e.g. 10s, 500ms, 2min;
    /// 0 turns checkpoints off). A job's own `WITH (checkpoint.interval = ...)` wins.
    #[arg(
        long,
        env = "EDDY_CHECKPOINT_INTERVAL",
        default_value = "10s",
        value_parser = parse_interval
    )]
    pub checkpoint_interval: std::time::Duration,
}

fn parse_interval(value: &str) -> Result<std::time::Duration, String> {
    eddy_engine::checkpoints::parse_interval(value)
}
