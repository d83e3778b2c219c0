//! `eddy-fuzz`: a stable-Rust fuzzer for Eddy's targets (see the library's docs and
//! docs/fuzzing.md).
//!
//! ```text
//! eddy-fuzz <target> [--seconds N | --runs N] [--corpus DIR] [--artifacts DIR] [--seed S]
//!           [--timeout-ms MS] [--max-alloc-mb MB] [--input FILE]...
//! eddy-fuzz make-parquet-seeds DIR
//! ```
//! Runs every corpus input once, then mutated inputs until the run or time budget is spent.
//! A panic, a hang past the timeout or an allocation past the cap is a failure: the input is
//! written to the artifacts directory and the process exits non-zero with its path and the
//! message. `--input` runs only the given files (to reproduce an artifact).

mod alloc;
mod driver;
mod seeds;

#[global_allocator]
static ALLOCATOR: alloc::CountingAllocator = alloc::CountingAllocator;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("make-parquet-seeds") => match args.get(1) {
            Some(dir) => seeds::write_parquet_seeds(std::path::Path::new(dir)),
            None => Err(eddy_fuzz::FuzzError::Usage(
                "usage: eddy-fuzz make-parquet-seeds DIR".to_string(),
            )),
        },
        _ => driver::Options::parse(&args).and_then(driver::run),
    };
    match result {
        Ok(driver::Outcome::Passed) => {}
        Ok(driver::Outcome::Failed) => std::process::exit(1),
        Err(e) => {
            eprintln!("eddy-fuzz: {e}");
            std::process::exit(2);
        }
    }
}
