//! Eddy's streaming SQL engine: SQL text to a streaming plan to a running dataflow.
//!
//! The engine knows nothing of pgwire or of the server's files: the server hands it statements
//! and a catalog, and receives streams of Arrow batches.

pub mod connector;
