//! The Postgres wire protocol front end (pgwire), one [`handler::Connection`] per client.

use std::sync::Arc;

use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::copy::CopyHandler;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{ConnectionManager, PgWireServerHandlers};

pub mod copy_binary;
pub mod encode;
pub mod encoder_guard;
pub mod errors;
pub mod framing;
pub mod handler;
pub mod params;
pub mod send_timeout;
pub mod serve;
pub mod startup;

/// The handlers pgwire calls for one connection.
pub struct ConnectionHandlers {
    pub connection: Arc<handler::Connection>,
    pub cancel: Arc<DefaultCancelHandler>,
}

impl ConnectionHandlers {
    pub fn new(connection: handler::Connection, manager: Arc<ConnectionManager>) -> Self {
        Self {
            connection: Arc::new(connection),
            cancel: Arc::new(DefaultCancelHandler::new(manager)),
        }
    }
}

impl PgWireServerHandlers for ConnectionHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.connection)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.connection)
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        Arc::clone(&self.connection)
    }

    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        Arc::clone(&self.connection)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.cancel)
    }
}
