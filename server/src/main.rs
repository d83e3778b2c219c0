//! The `eddy` binary: `eddy [serve] [--listen ADDR] [--data-dir DIR] [--workers N]
//! [--password PW] [--tls-cert PEM --tls-key PEM] ...` (`eddy --help` lists every option).

use clap::Parser;
use eddy_server::cli::{Cli, Command};
use eddy_server::security::SecurityConfig;
use eddy_server::{Server, ServerConfig};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        None => cli.serve,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDDY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // Panics are caught where they happen and fail only their query, job or connection; the
    // hook logs each one's backtrace.
    eddy_server::panic_hook::install();
    let security = match SecurityConfig::from_options(args.listen, args.security_options()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("eddy: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("eddy: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let server = match Server::start(ServerConfig {
            listen: args.listen,
            data_dir: Some(args.data_dir.clone()),
            parallelism: workers,
            allowed_paths: args.allow_path.clone(),
            checkpoint_interval: args.checkpoint_interval,
            checkpoint_timeout: args.checkpoint_timeout,
            security,
            client_send_timeout: args.client_send_timeout,
            test_faults: args.enable_test_faults,
            max_memory: args.max_memory(),
            client_follow_buffer: args.client_follow_buffer.0,
        })
        .await
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("eddy: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        tracing::info!(
            workers,
            data_dir = %args.data_dir.display(),
            "connect with: psql -h {} -p {} -U eddy eddy",
            server.local_addr().ip(),
            server.local_addr().port()
        );
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("shutting down");
                server.shutdown().await;
            }
        }
        std::process::ExitCode::SUCCESS
    })
}
