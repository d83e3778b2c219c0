//! SQL front end: the parser extension layer and how the catalog appears to DataFusion.

pub mod legacy_windows;
pub mod match_recognize;
pub mod match_syntax;
pub mod names;
pub mod parser;
pub mod provider;
pub mod window_inputs;
pub mod window_syntax;
pub mod window_tvf;
