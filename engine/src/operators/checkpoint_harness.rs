//! Test harness for `Operator::snapshot`/`restore`: an input sequence run uninterrupted must
//! give exactly the messages of the same sequence cut anywhere, with the rest run by a new
//! instance restored from a snapshot that went through the checkpoint bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;

use super::{Operator, Output};
use crate::runtime::message::{EventTime, Message, WATERMARK_END};
use crate::state::checkpoint::round_trip;

/// One input event.
#[derive(Clone)]
pub enum Step {
    Batch(RecordBatch),
    Watermark(EventTime),
    /// The end of a bounded input: `WATERMARK_END`, then `on_end`.
    End,
}

/// Builds a fresh instance counting late rows into the counter it is given.
pub type Factory<'a> = &'a dyn Fn(Arc<AtomicU64>) -> Box<dyn Operator>;

fn run(op: &mut dyn Operator, steps: &[Step], out: &mut Vec<String>) {
    let mut output = Output::default();
    for step in steps {
        match step {
            Step::Batch(b) => op.on_batch(0, b.clone(), &mut output).unwrap(),
            Step::Watermark(w) => op.on_watermark(*w, &mut output).unwrap(),
            Step::End => {
                op.on_watermark(WATERMARK_END, &mut output).unwrap();
                op.on_end(&mut output).unwrap();
            }
        }
        out.extend(output.drain().map(describe));
    }
}

fn describe(message: Message) -> String {
    match message {
        Message::Data(b) => pretty_format_batches(&[b]).unwrap().to_string(),
        other => format!("{other:?}"),
    }
}

fn held(op: &dyn Operator) -> Vec<(&'static str, usize)> {
    op.state_tables().iter().map(|t| (t.name, t.rows)).collect()
}

/// Checks every cut point of `steps`; returns the uninterrupted output (for assertions on
/// what the sequence exercises) and its late-row count.
pub fn check_every_cut(make: Factory, steps: &[Step]) -> (Vec<String>, u64) {
    check_every_cut_with(make, steps, false)
}

/// [`check_every_cut`] for an operator that forwards watermarks without holding one (and so
/// may forward a repeated one again).
pub fn check_every_cut_forwarding(make: Factory, steps: &[Step]) -> (Vec<String>, u64) {
    check_every_cut_with(make, steps, true)
}

fn check_every_cut_with(make: Factory, steps: &[Step], forwards: bool) -> (Vec<String>, u64) {
    let late = Arc::new(AtomicU64::new(0));
    let mut expected = Vec::new();
    run(make(Arc::clone(&late)).as_mut(), steps, &mut expected);
    let expected_late = late.load(Ordering::Relaxed);
    for cut in 0..=steps.len() {
        let (before, after) = steps.split_at(cut);
        let late_a = Arc::new(AtomicU64::new(0));
        let mut a = make(Arc::clone(&late_a));
        let mut got = Vec::new();
        run(a.as_mut(), before, &mut got);
        let late_before = late_a.load(Ordering::Relaxed);
        let snapshot = a.snapshot().unwrap();
        let snapshot = round_trip(&snapshot).unwrap();
        // Taking a snapshot changes nothing the original emits later.
        let mut original = got.clone();
        run(a.as_mut(), after, &mut original);
        assert_eq!(
            original, expected,
            "the snapshot at {cut} disturbed the original"
        );

        let late_b = Arc::new(AtomicU64::new(0));
        let mut b = make(Arc::clone(&late_b));
        b.restore(snapshot).unwrap();
        // A restored instance snapshots what it was given.
        let mut again = make(Arc::new(AtomicU64::new(0)));
        again
            .restore(round_trip(&b.snapshot().unwrap()).unwrap())
            .unwrap();
        assert_eq!(held(again.as_ref()), held(b.as_ref()), "restore at {cut}");
        // The runtime may repeat the last watermark before the cut: nothing happens.
        let last_watermark = before.iter().rev().find_map(|s| match s {
            Step::Watermark(w) => Some(*w),
            Step::End => Some(WATERMARK_END),
            Step::Batch(_) => None,
        });
        if let Some(w) = last_watermark
            && !matches!(before.last(), Some(Step::End))
        {
            // (An operator that forwards watermarks without holding one may pass it on:
            // downstream ignores a watermark that does not advance its own.)
            let mut output = Output::default();
            b.on_watermark(w, &mut output).unwrap();
            let repeated: Vec<Message> = output.drain().collect();
            assert!(
                repeated.is_empty()
                    || (forwards
                        && matches!(repeated.as_slice(), [Message::Watermark(x)] if *x == w)),
                "repeated watermark at cut {cut}: {repeated:?}"
            );
        }
        run(b.as_mut(), after, &mut got);
        assert_eq!(got, expected, "cut at step {cut}");
        assert_eq!(
            late_before + late_b.load(Ordering::Relaxed),
            expected_late,
            "late rows with a cut at {cut}"
        );
    }
    (expected, expected_late)
}

/// A tiny deterministic generator for random sequences.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below.max(1)
    }
}
