//! Eddy's connectors: the `file`, `nexmark` and `kafka` sources, and the `parquet` / `file`,
//! `kafka` and `upsert-kafka` sinks.
//!
//! Each connector implements [`eddy_engine::connector::SourceConnector`] or
//! [`eddy_engine::connector::SinkConnector`]; the server registers them all with
//! [`register_all`], giving the file connectors the directories they may touch.

use std::sync::Arc;

use eddy_engine::connector::ConnectorRegistry;
use eddy_engine::paths::PathPolicy;

pub mod datagen;
pub mod file;
pub mod file_sink;
pub mod kafka;
pub mod nexmark;

/// Registers every connector of this crate.
pub fn register_all(registry: &mut ConnectorRegistry, paths: Arc<PathPolicy>) {
    registry.register_source(Arc::new(file::FileConnector::new(Arc::clone(&paths))));
    registry.register_source(Arc::new(nexmark::NexmarkConnector));
    registry.register_source(Arc::new(datagen::DatagenConnector));
    registry.register_source(Arc::new(kafka::KafkaConnector::default()));
    registry.register_source(Arc::new(kafka::KafkaConnector::upsert(Arc::new(
        kafka::RdKafkaClient,
    ))));
    registry.register_sink(Arc::new(file_sink::FileSinkConnector::parquet(Arc::clone(
        &paths,
    ))));
    registry.register_sink(Arc::new(file_sink::FileSinkConnector::file(paths)));
    for sink in kafka::KafkaSinkConnector::both() {
        registry.register_sink(Arc::new(sink));
    }
}
