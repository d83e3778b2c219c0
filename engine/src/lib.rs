//! Eddy's streaming SQL engine: SQL text to a streaming plan to a running dataflow.
//!
//! The engine knows nothing of pgwire or of the server's files: the server hands it statements
//! (through a [`session::Session`]) and receives streams of Arrow batches.

pub mod build;
pub mod catalog;
pub mod checkpoints;
pub mod connector;
pub mod dead_letters;
pub mod error;
pub mod functions;
pub mod jobs;
pub mod late_rows;
pub mod operators;
pub mod panics;
pub mod paths;
pub mod pg_catalog;
pub mod plan;
pub mod runtime;
pub mod session;
pub mod size;
pub mod sql;
pub mod state;
pub mod table;
pub mod vars;
pub mod view;

/// The Postgres version Eddy reports to clients (drivers adapt their behaviour to it).
pub const SERVER_VERSION: &str = "16.6";
/// `server_version_num` for the same version.
pub const SERVER_VERSION_NUM: &str = "160006";
