//! Eddy's connectors: the `file` and `nexmark` sources.
//!
//! Each connector implements [`eddy_engine::connector::SourceConnector`]; the server registers
//! them all with [`register_all`].

use std::sync::Arc;

use eddy_engine::connector::ConnectorRegistry;

pub mod file;
pub mod nexmark;

/// Registers every connector of this crate.
pub fn register_all(registry: &mut ConnectorRegistry) {
    registry.register_source(Arc::new(file::FileConnector));
    registry.register_source(Arc::new(nexmark::NexmarkConnector));
}
