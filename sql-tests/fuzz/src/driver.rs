//! The fuzzing loop: corpus in, mutated inputs through the target on a worker thread under a
//! deadline, failures out as artifacts.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use eddy_fuzz::FuzzError;
use eddy_fuzz::mutate::{mutate_bytes, mutate_tokens};
use eddy_fuzz::rng::Rng;
use eddy_fuzz::targets::{Target, target};

use crate::alloc;

/// How a run ended.
pub enum Outcome {
    Passed,
    Failed,
}

/// When to stop.
#[derive(Debug, Clone, Copy)]
enum Budget {
    Runs(u64),
    Seconds(u64),
}

/// The command line.
#[derive(Debug)]
pub struct Options {
    target: String,
    budget: Budget,
    corpus: PathBuf,
    artifacts: PathBuf,
    seed: u64,
    timeout: Duration,
    max_alloc_mb: usize,
    inputs: Vec<PathBuf>,
}

const USAGE: &str = "usage: eddy-fuzz <target> [--seconds N | --runs N] [--corpus DIR] \
    [--artifacts DIR] [--seed S] [--timeout-ms MS] [--max-alloc-mb MB] [--input FILE]...";

impl Options {
    pub fn parse(args: &[String]) -> Result<Self, FuzzError> {
        let usage = || FuzzError::Usage(USAGE.to_string());
        let mut args = args.iter();
        let target = args.next().ok_or_else(usage)?.clone();
        let here = eddy_fuzz::crate_dir();
        let mut options = Options {
            corpus: here.join("corpus").join(&target),
            artifacts: here.join("artifacts").join(&target),
            target,
            budget: Budget::Runs(1000),
            seed: 0,
            timeout: Duration::from_millis(1000),
            max_alloc_mb: 2048,
            inputs: Vec::new(),
        };
        while let Some(flag) = args.next() {
            let value = args.next().ok_or_else(usage)?;
            let number = || value.parse::<u64>().map_err(|_| usage());
            match flag.as_str() {
                "--seconds" => options.budget = Budget::Seconds(number()?),
                "--runs" => options.budget = Budget::Runs(number()?),
                "--seed" => options.seed = number()?,
                "--timeout-ms" => options.timeout = Duration::from_millis(number()?),
                "--max-alloc-mb" => options.max_alloc_mb = number()? as usize,
                "--corpus" => options.corpus = PathBuf::from(value),
                "--artifacts" => options.artifacts = PathBuf::from(value),
                "--input" => options.inputs.push(PathBuf::from(value)),
                _ => return Err(usage()),
            }
        }
        Ok(options)
    }
}

/// Panic messages recorded by the hook since the current input started, caught or not.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = match info.payload().downcast_ref::<&str>() {
            Some(s) => s.to_string(),
            None => match info.payload().downcast_ref::<String>() {
                Some(s) => s.clone(),
                None => "a panic with a non-text payload".to_string(),
            },
        };
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        // A panic raised outside Eddy's code (a dependency's or the standard library's, whose
        // paths are absolute) that Eddy catches at its boundary and turns into an error is not
        // a finding; one that escapes to the target is (the target's run fails), and so is a
        // panic Eddy's own guards turn into XX000 (the targets check for it).
        if info.location().is_some_and(|l| l.file().starts_with('/')) {
            return;
        }
        let backtrace = if eddy_fuzz::runtime::verbose() {
            format!("\n{}", std::backtrace::Backtrace::force_capture())
        } else {
            String::new()
        };
        if let Ok(mut panics) = PANICS.lock() {
            panics.push(format!(
                "panic in thread '{thread}'{place}: {message}{backtrace}"
            ));
        }
    }));
}

fn taken_panics() -> Vec<String> {
    PANICS
        .lock()
        .map(|mut p| std::mem::take(&mut *p))
        .unwrap_or_default()
}

fn absolute(path: &Path) -> Result<PathBuf, FuzzError> {
    std::path::absolute(path).map_err(|e| FuzzError::io(path, e))
}

fn read_corpus(dir: &Path) -> Result<Vec<Vec<u8>>, FuzzError> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| FuzzError::io(dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| FuzzError::io(p, e)))
        .collect()
}

fn hash(input: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    input.hash(&mut h);
    h.finish()
}

/// A failure of one input.
struct Failure {
    kind: &'static str,
    message: String,
}

/// Runs one input on a fresh worker thread under the deadline.
fn run_one(target: &'static Target, input: &[u8], timeout: Duration) -> Option<Failure> {
    taken_panics();
    let (done, result) = mpsc::channel();
    let owned = input.to_vec();
    let spawned = std::thread::Builder::new()
        .name("fuzz-input".to_string())
        .stack_size(16 << 20)
        .spawn(move || {
            let outcome = std::panic::catch_unwind(|| (target.run)(&owned));
            let _ = done.send(outcome.map_err(|p| eddy_engine::panics::panic_message(p.as_ref())));
        });
    if let Err(e) = spawned {
        return Some(Failure {
            kind: "harness",
            message: format!("cannot start a worker thread: {e}"),
        });
    }
    match result.recv_timeout(timeout) {
        Ok(Err(message)) => Some(Failure {
            kind: "crash",
            message: format!("{}\n{message}", taken_panics().join("\n")),
        }),
        Ok(Ok(())) => {
            let panics = taken_panics();
            (!panics.is_empty()).then(|| Failure {
                kind: "crash",
                message: panics.join("\n"),
            })
        }
        Err(mpsc::RecvTimeoutError::Timeout) => Some(Failure {
            kind: "timeout",
            message: format!("the input ran longer than {} ms", timeout.as_millis()),
        }),
        Err(mpsc::RecvTimeoutError::Disconnected) => Some(Failure {
            kind: "crash",
            message: taken_panics().join("\n"),
        }),
    }
}

pub fn run(options: Options) -> Result<Outcome, FuzzError> {
    let target = target(&options.target)?;
    let corpus_dir = absolute(&options.corpus)?;
    let artifacts = absolute(&options.artifacts)?;
    let inputs: Vec<PathBuf> = options
        .inputs
        .iter()
        .map(|p| absolute(p))
        .collect::<Result<_, _>>()?;
    let scratch = std::env::temp_dir().join(format!("eddy-fuzz-{}", std::process::id()));
    eddy_fuzz::runtime::set_scratch_dir(&scratch)?;
    // Whatever an input writes to a relative path lands in the scratch directory.
    std::env::set_current_dir(&scratch).map_err(|e| FuzzError::io(&scratch, e))?;
    let result = fuzz(target, &options, &corpus_dir, &artifacts, &inputs);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn fuzz(
    target: &'static Target,
    options: &Options,
    corpus_dir: &Path,
    artifacts: &Path,
    inputs: &[PathBuf],
) -> Result<Outcome, FuzzError> {
    std::fs::create_dir_all(artifacts).map_err(|e| FuzzError::io(artifacts, e))?;
    let in_flight = artifacts.join("in-flight");
    alloc::set_cap(
        options.max_alloc_mb << 20,
        format!(
            "more than {} MB held; the input is {}",
            options.max_alloc_mb,
            in_flight.display()
        ),
    );
    (target.init)()?;
    install_panic_hook();
    let corpus = if inputs.is_empty() {
        read_corpus(corpus_dir)?
    } else {
        inputs
            .iter()
            .map(|p| std::fs::read(p).map_err(|e| FuzzError::io(p, e)))
            .collect::<Result<_, _>>()?
    };
    if corpus.is_empty() {
        return Err(FuzzError::Usage(format!(
            "no inputs in {}",
            corpus_dir.display()
        )));
    }
    let mut rng = Rng::new(options.seed);
    let mut recent: Vec<Vec<u8>> = Vec::new();
    let mut distinct = HashSet::new();
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut executions: u64 = 0;
    let mut slowest = Duration::ZERO;
    loop {
        let input = if (executions as usize) < corpus.len() {
            corpus[executions as usize].clone()
        } else if !inputs.is_empty() {
            break;
        } else {
            let done = match options.budget {
                Budget::Runs(n) => executions >= corpus.len() as u64 + n,
                Budget::Seconds(s) => started.elapsed() >= Duration::from_secs(s),
            };
            if done {
                break;
            }
            next_input(&mut rng, target, &corpus, &recent)
        };
        if std::fs::write(&in_flight, &input).is_err() {
            return Err(FuzzError::Usage(format!(
                "cannot write {}",
                in_flight.display()
            )));
        }
        let one = Instant::now();
        let failure = run_one(target, &input, options.timeout);
        slowest = slowest.max(one.elapsed());
        executions += 1;
        distinct.insert(hash(&input));
        if let Some(failure) = failure {
            let path = artifacts.join(format!("{}-{:016x}", failure.kind, hash(&input)));
            std::fs::write(&path, &input).map_err(|e| FuzzError::io(&path, e))?;
            let _ = std::fs::remove_file(&in_flight);
            eprintln!(
                "eddy-fuzz {}: FAILED ({}) after {executions} executions: input written to {}\n{}",
                target.name,
                failure.kind,
                path.display(),
                failure.message
            );
            return Ok(Outcome::Failed);
        }
        if recent.len() < 256 {
            recent.push(input);
        } else {
            let slot = rng.below(recent.len());
            recent[slot] = input;
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!(
                "eddy-fuzz {}: {executions} executions, {} distinct, {:.0}/s, peak heap {} MB",
                target.name,
                distinct.len(),
                executions as f64 / started.elapsed().as_secs_f64(),
                alloc::peak() >> 20
            );
        }
    }
    let _ = std::fs::remove_file(&in_flight);
    println!(
        "eddy-fuzz {}: {executions} executions, {} distinct inputs, {} corpus entries, \
         {:.1} s ({:.0}/s), slowest input {} ms, peak heap {:.1} MB, no failures",
        target.name,
        distinct.len(),
        corpus.len(),
        started.elapsed().as_secs_f64(),
        executions as f64 / started.elapsed().as_secs_f64().max(1e-9),
        slowest.as_millis(),
        alloc::peak() as f64 / 1048576.0
    );
    Ok(Outcome::Passed)
}

/// A generated input (targets with a grammar) or a mutation of a corpus or recent input.
fn next_input(rng: &mut Rng, target: &Target, corpus: &[Vec<u8>], recent: &[Vec<u8>]) -> Vec<u8> {
    if let Some(generate) = target.generate
        && rng.one_in(3)
    {
        let generated = generate(rng);
        return if rng.one_in(2) {
            generated
        } else {
            let other = &corpus[rng.below(corpus.len())];
            mutate_tokens(rng, &generated, other, target.dictionary)
        };
    }
    let base = if recent.is_empty() || rng.one_in(2) {
        &corpus[rng.below(corpus.len())]
    } else {
        &recent[rng.below(recent.len())]
    };
    let other = &corpus[rng.below(corpus.len())];
    if !target.dictionary.is_empty() && rng.one_in(2) {
        mutate_tokens(rng, base, other, target.dictionary)
    } else {
        mutate_bytes(rng, base, other)
    }
}
