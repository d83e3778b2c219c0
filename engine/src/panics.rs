//! Panic isolation: a panic (a bug in Eddy or in a dependency) fails only the query or job it
//! happened in.
//!
//! Every dataflow task (operator instance, source reader, exchange), every background job's
//! loop, and the server's statement execution and result encoding run inside a guard from
//! here: a panic is caught where it unwinds to, logged with the place it came from, and turned
//! into [`EngineError::Panic`] (SQLSTATE `XX000` at the pgwire boundary), which fails that query
//! or job like any other error. Other sessions and jobs run on untouched: tokio's worker
//! threads survive a caught panic, and nothing is shared with the failed dataflow but
//! channels, which its end closes. The backtrace can only be taken while the panic unwinds,
//! so it is logged by the process's panic hook (the server installs one), not here.
//!
//! This needs `panic = "unwind"` (the default) in every profile: with `abort` a panic ends
//! the process.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use crate::error::{EngineError, EngineResult};

/// The message a panic was raised with (`panic!("...")`, `expect`, an index out of bounds).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// The error a caught panic becomes, logged with where it happened.
pub fn caught(place: &str, payload: &(dyn Any + Send)) -> EngineError {
    let message = panic_message(payload);
    tracing::error!(
        place,
        panic = %message,
        "caught a panic: only its query or job fails (the backtrace is logged with the panic)"
    );
    EngineError::Panic {
        place: place.to_string(),
        message,
    }
}

/// Runs `work`, turning a panic inside it into [`EngineError::Panic`] naming `place` (e.g.
/// `"the result encoder"`).
pub fn catch<T>(place: &str, work: impl FnOnce() -> T) -> EngineResult<T> {
    std::panic::catch_unwind(AssertUnwindSafe(work)).map_err(|payload| caught(place, &*payload))
}

/// Runs the future `work` to its end, turning a panic while it is polled into
/// [`EngineError::Panic`] naming `place` (e.g. `"operator Filter"`).
///
/// What `work` held is dropped while the panic unwinds (channels close, locks are released),
/// so whoever waits on it sees it end.
pub async fn catch_future<T>(place: &str, work: impl Future<Output = T>) -> EngineResult<T> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(|payload| caught(place, &*payload))
}

/// [`catch_future`] for a task that returns an [`EngineResult`] itself.
pub async fn guard(place: &str, work: impl Future<Output = EngineResult<()>>) -> EngineResult<()> {
    catch_future(place, work).await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_naming_its_place_and_message() {
        let error = catch("the result encoder", || -> u8 { panic!("bad value {}", 7) })
            .expect_err("it panicked");
        assert!(matches!(&error, EngineError::Panic { place, message }
            if place == "the result encoder" && message == "bad value 7"));
        assert_eq!(
            error.to_string(),
            "internal error in the result encoder: bad value 7"
        );
        assert_eq!(catch("x", || 3).ok(), Some(3));
    }

    #[tokio::test]
    async fn a_panicking_task_fails_with_its_place_and_a_plain_error_passes_through() {
        let error = guard("operator Filter", async { panic!("boom") })
            .await
            .expect_err("it panicked");
        assert_eq!(error.to_string(), "internal error in operator Filter: boom");
        let error = guard("operator Filter", async {
            Err(EngineError::Data("division by zero".to_string()))
        })
        .await
        .expect_err("it failed");
        assert!(matches!(error, EngineError::Data(_)));
    }
}
