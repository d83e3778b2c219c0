//! The process's panic hook: every panic is logged as an error with its backtrace.
//!
//! A panic in a query, a job or a connection is caught where it unwinds to and fails only that
//! query, job or connection (`eddy_engine::panics`); the backtrace, though, exists only while
//! the panic unwinds, so this hook, which runs at that moment, takes it
//! (`Backtrace::force_capture`, whatever `RUST_BACKTRACE` says) and logs it with the panic's
//! message, location and thread. Without a tracing subscriber it leaves the panic to the hook
//! it replaced (Rust's default prints to stderr).

use std::backtrace::Backtrace;
use std::panic::PanicHookInfo;

/// Installs the hook (the `eddy` binary does, once its logging is set up).
pub fn install() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if tracing::dispatcher::has_been_set() {
            log(info);
        } else {
            previous(info);
        }
    }));
}

/// Logs a panic with its backtrace.
fn log(info: &PanicHookInfo<'_>) {
    let message = eddy_engine::panics::panic_message(info.payload());
    let location = info
        .location()
        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
        .unwrap_or_default();
    let thread = std::thread::current();
    let backtrace = Backtrace::force_capture();
    tracing::error!(
        thread = thread.name().unwrap_or("unnamed"),
        %location,
        "panic: {message}\nbacktrace:\n{backtrace}"
    );
}
