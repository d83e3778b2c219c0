//! SQL front end: the parser extension layer, how the catalog appears to DataFusion, and the
//! relation planners that read window table functions and MATCH_RECOGNIZE from the syntax tree
//! and build the logical plan nodes of [`crate::plan`] (`WindowTvfNode`, `MatchRecognizeNode`).
//! Nothing below this layer imports it.

pub mod emit_syntax;
pub mod legacy_windows;
pub mod match_recognize;
pub mod match_syntax;
pub mod names;
pub mod parser;
pub mod provider;
pub mod temporal_syntax;
pub mod time_units;
pub mod window_inputs;
pub mod window_syntax;
pub mod window_tvf;
