//! The `eddy` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::security::{AuthMethod, DEFAULT_MAX_CONNECTIONS, SecurityOptions};

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

    /// Password of the user `eddy`: clients then authenticate with SCRAM-SHA-256 (only a
    /// salted verifier is kept). Without it only loopback clients are served, without a
    /// password.
    #[arg(long, env = "EDDY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,

    /// How clients authenticate: `scram-sha-256` (the default with --password) or `trust`
    /// (no password, from any client: needed to --listen beyond loopback without a password).
    /// Default without --password: trust, loopback clients only.
    #[arg(long, env = "EDDY_AUTH", value_enum)]
    pub auth: Option<AuthMethod>,

    /// Server certificate chain (PEM, server certificate first): clients may then use TLS
    /// (sslmode=require, verify-full).
    #[arg(long, env = "EDDY_TLS_CERT", value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "EDDY_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Refuse connections without TLS (needs --tls-cert and --tls-key).
    #[arg(long, env = "EDDY_TLS_REQUIRED")]
    pub tls_required: bool,

    /// Connections served at once; one more gets SQLSTATE 53300 "sorry, too many clients
    /// already".
    #[arg(
        long,
        env = "EDDY_MAX_CONNECTIONS",
        default_value_t = DEFAULT_MAX_CONNECTIONS,
        value_parser = parse_max_connections
    )]
    pub max_connections: usize,

    /// How long a send to a client may wait for the client to read (e.g. 60s, 500ms; 0:
    /// forever). A client that stops reading a result or `COPY ... TO STDOUT` stream for
    /// longer has its query and its connection ended.
    #[arg(
        long,
        env = "EDDY_CLIENT_SEND_TIMEOUT",
        default_value = "60s",
        value_parser = parse_interval
    )]
    pub client_send_timeout: std::time::Duration,

    /// How much operator state all queries and jobs together may hold (e.g. 8GB, 512MB,
    /// plain bytes; 0 or unlimited: no limit). Default: 80% of the machine's memory, or of
    /// its cgroup's limit if lower. A query whose state would pass it fails with SQLSTATE
    /// 53200; sessions and other queries go on.
    #[arg(long, env = "EDDY_MAX_MEMORY", value_name = "SIZE", value_parser = parse_memory)]
    pub max_memory: Option<MemoryLimit>,

    /// How far behind a materialized view a client's query following it may fall (bytes of
    /// changes not yet taken, e.g. 64MB) before the query is ended with SQLSTATE 53000, so a
    /// slow client never holds back the view's job. 0: never cut off; the view's job then
    /// waits for the client (until --client-send-timeout ends a client that stopped reading).
    #[arg(
        long,
        env = "EDDY_CLIENT_FOLLOW_BUFFER",
        value_name = "SIZE",
        default_value = "64MB",
        value_parser = parse_memory
    )]
    pub client_follow_buffer: MemoryLimit,

    /// Registers the fault-injection function `eddy_fault` (for panic-isolation tests only;
    /// never in production).
    #[arg(long, hide = true)]
    pub enable_test_faults: bool,
}

impl ServeArgs {
    /// The security options, to check against the listen address
    /// ([`SecurityConfig::from_options`](crate::security::SecurityConfig::from_options)).
    pub fn security_options(&self) -> SecurityOptions {
        SecurityOptions {
            password: self.password.clone(),
            auth: self.auth,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_required: self.tls_required,
            max_connections: self.max_connections,
        }
    }
}

fn parse_max_connections(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "invalid connection limit '{value}': a whole number, at least 1"
        )),
    }
}

/// A `--max-memory` or `--client-follow-buffer` value: bytes, or `None` for no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimit(pub Option<usize>);

impl ServeArgs {
    /// The server-wide limit on operator state: `--max-memory`, else its default
    /// ([`crate::memory::default_max_memory`]).
    pub fn max_memory(&self) -> Option<usize> {
        match self.max_memory {
            Some(MemoryLimit(limit)) => limit,
            None => crate::memory::default_max_memory(),
        }
    }
}

fn parse_memory(value: &str) -> Result<MemoryLimit, String> {
    eddy_engine::size::parse_limit(value).map(MemoryLimit)
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

    #[test]
    fn client_send_timeout_defaults_to_a_minute_zero_is_off_and_test_faults_are_off() {
        let cli = Cli::try_parse_from(["eddy"]).unwrap();
        assert_eq!(cli.serve.client_send_timeout.as_secs(), 60);
        assert!(!cli.serve.enable_test_faults);
        let cli = Cli::try_parse_from(["eddy", "--client-send-timeout", "0"]).unwrap();
        assert!(cli.serve.client_send_timeout.is_zero());
        let cli = Cli::try_parse_from(["eddy", "--client-send-timeout", "1500ms"]).unwrap();
        assert_eq!(cli.serve.client_send_timeout.as_millis(), 1500);
        assert!(Cli::try_parse_from(["eddy", "--client-send-timeout", "soon"]).is_err());
        let cli = Cli::try_parse_from(["eddy", "--enable-test-faults"]).unwrap();
        assert!(cli.serve.enable_test_faults);
        // The fault flag is hidden from --help.
        let help = <Cli as clap::CommandFactory>::command()
            .render_help()
            .to_string();
        assert!(help.contains("--client-send-timeout"), "{help}");
        assert!(!help.contains("test-faults"), "{help}");
    }

    #[test]
    fn max_memory_takes_sizes_and_defaults_to_a_share_of_the_machine() {
        let cli = Cli::try_parse_from(["eddy"]).unwrap();
        assert_eq!(cli.serve.max_memory, None);
        assert_eq!(cli.serve.max_memory(), crate::memory::default_max_memory());
        let cli = Cli::try_parse_from(["eddy", "--max-memory", "512MB"]).unwrap();
        assert_eq!(cli.serve.max_memory(), Some(512 << 20));
        let cli = Cli::try_parse_from(["eddy", "--max-memory", "unlimited"]).unwrap();
        assert_eq!(cli.serve.max_memory(), None);
        let cli = Cli::try_parse_from(["eddy", "--max-memory", "0"]).unwrap();
        assert_eq!(cli.serve.max_memory(), None);
        let e = Cli::try_parse_from(["eddy", "--max-memory", "lots"]).unwrap_err();
        assert!(e.to_string().contains("not a memory size"), "{e}");
    }

    #[test]
    fn client_follow_buffer_defaults_to_64_mb_and_zero_turns_the_cut_off_off() {
        let cli = Cli::try_parse_from(["eddy"]).unwrap();
        assert_eq!(cli.serve.client_follow_buffer.0, Some(64 << 20));
        let cli = Cli::try_parse_from(["eddy", "--client-follow-buffer", "1MB"]).unwrap();
        assert_eq!(cli.serve.client_follow_buffer.0, Some(1 << 20));
        let cli = Cli::try_parse_from(["eddy", "--client-follow-buffer", "0"]).unwrap();
        assert_eq!(cli.serve.client_follow_buffer.0, None);
        assert!(Cli::try_parse_from(["eddy", "--client-follow-buffer", "some"]).is_err());
    }

    #[test]
    fn security_options_parse() {
        let cli = Cli::try_parse_from(["eddy"]).unwrap();
        assert_eq!(cli.serve.max_connections, 100);
        assert_eq!(cli.serve.auth, None);
        let cli = Cli::try_parse_from([
            "eddy",
            "--auth",
            "scram-sha-256",
            "--password",
            "pw",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-required",
            "--max-connections",
            "3",
        ])
        .unwrap();
        assert_eq!(cli.serve.auth, Some(super::AuthMethod::ScramSha256));
        assert_eq!(cli.serve.max_connections, 3);
        assert!(cli.serve.tls_required);
        // A certificate without its key (and the reverse) is refused by clap.
        assert!(Cli::try_parse_from(["eddy", "--tls-cert", "c.pem"]).is_err());
        assert!(Cli::try_parse_from(["eddy", "--tls-key", "k.pem"]).is_err());
        assert!(Cli::try_parse_from(["eddy", "--max-connections", "0"]).is_err());
        assert!(Cli::try_parse_from(["eddy", "--auth", "md5"]).is_err());
    }
}
