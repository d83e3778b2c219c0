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

    /// How long a checkpoint's barrier may take to travel a job's dataflow before the
    /// checkpoint fails (e.g. 30s, 10min; at least 1ms). A job's own
    /// `WITH (checkpoint.timeout = ...)` wins.
    #[arg(
        long,
        env = "EDDY_CHECKPOINT_TIMEOUT",
        default_value = "10min",
        value_parser = parse_timeout
    )]
    pub checkpoint_timeout: std::time::Duration,
}

fn parse_interval(value: &str) -> Result<std::time::Duration, String> {
    eddy_engine::checkpoints::parse_interval(value)
}

fn parse_timeout(value: &str) -> Result<std::time::Duration, String> {
    eddy_engine::checkpoints::parse_timeout(value)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;

    #[test]
    fn checkpoint_timeout_defaults_to_ten_minutes_and_refuses_bad_values() {
        let cli = Cli::try_parse_from(["eddy"]).unwrap();
        assert_eq!(cli.serve.checkpoint_timeout.as_secs(), 600);
        let cli = Cli::try_parse_from(["eddy", "serve", "--checkpoint-timeout", "30s"]).unwrap();
        let Some(super::Command::Serve(args)) = cli.command else {
            panic!("not serve");
        };
        assert_eq!(args.checkpoint_timeout.as_secs(), 30);
        for bad in ["0", "soon", "2 days"] {
            let e = Cli::try_parse_from(["eddy", "--checkpoint-timeout", bad]).unwrap_err();
            assert!(e.to_string().contains("invalid timeout"), "{bad}: {e}");
        }
    }
}
