//! Test harness for `Operator::snapshot`/`restore`: an input sequence run uninterrupted must
//! give exactly the messages of the same sequence cut anywhere, with the rest run by a new
//! instance restored from a snapshot that went through the checkpoint bytes.

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;

use super::{Operator, OperatorContext};
use crate::runtime::message::{EventTime, Message, WATERMARK_END};
use crate::state::checkpoint::round_trip;
use crate::state::{StateSnapshot, StateTable};

/// One input event.
#[derive(Clone)]
pub enum Step {
    Batch(RecordBatch),
    /// A batch on input `n` of an operator with several.
    BatchOn(usize, RecordBatch),
    Watermark(EventTime),
    /// The end of a bounded input: `WATERMARK_END`, then `on_end`.
    End,
}

/// Builds a fresh instance.
pub type Factory<'a> = &'a dyn Fn() -> Box<dyn Operator>;

/// Runs `steps` through `op` with context `ctx`, appending what it emits to `out`.
fn run(op: &mut dyn Operator, ctx: &mut OperatorContext, steps: &[Step], out: &mut Vec<String>) {
    for step in steps {
        match step {
            Step::Batch(b) => op.on_batch(0, b.clone(), ctx).unwrap(),
            Step::BatchOn(n, b) => op.on_batch(*n, b.clone(), ctx).unwrap(),
            Step::Watermark(w) => op.on_watermark(*w, ctx).unwrap(),
            Step::End => {
                op.on_watermark(WATERMARK_END, ctx).unwrap();
                op.on_end(ctx).unwrap();
            }
        }
        out.extend(ctx.drain().map(describe));
    }
}

fn describe(message: Message) -> String {
    match message {
        Message::Data(b) => pretty_format_batches(&[b]).unwrap().to_string(),
        other => format!("{other:?}"),
    }
}

fn held(op: &dyn Operator) -> Vec<(&'static str, usize)> {
    op.state_usage().iter().map(|t| (t.table, t.rows)).collect()
}

/// A snapshot of `op` taken the way the runtime takes it: only declared tables (checked
/// against `tables`, the operator module's declaration), and through the checkpoint bytes.
fn snapshot_of(op: &mut dyn Operator, tables: &[StateTable]) -> StateSnapshot {
    let snapshot = op.snapshot(1).unwrap();
    snapshot
        .check_declared(&op.info().name, tables, &[])
        .unwrap();
    for usage in op.state_usage() {
        assert!(
            tables.iter().any(|t| t.name == usage.table),
            "{} reports usage of undeclared table {}",
            op.info().name,
            usage.table
        );
    }
    round_trip(&snapshot).unwrap()
}

/// Checks every cut point of `steps`; returns the uninterrupted output (for assertions on
/// what the sequence exercises) and its late-row count.
pub fn check_every_cut(make: Factory, tables: &[StateTable], steps: &[Step]) -> (Vec<String>, u64) {
    check_every_cut_with(make, tables, steps, false)
}

/// [`check_every_cut`] for an operator that forwards watermarks without holding one (and so
/// may forward a repeated one again).
pub fn check_every_cut_forwarding(
    make: Factory,
    tables: &[StateTable],
    steps: &[Step],
) -> (Vec<String>, u64) {
    check_every_cut_with(make, tables, steps, true)
}

fn check_every_cut_with(
    make: Factory,
    tables: &[StateTable],
    steps: &[Step],
    forwards: bool,
) -> (Vec<String>, u64) {
    let mut whole = OperatorContext::default();
    let mut expected = Vec::new();
    run(make().as_mut(), &mut whole, steps, &mut expected);
    let expected_late = whole.late_rows();
    for cut in 0..=steps.len() {
        let (before, after) = steps.split_at(cut);
        let mut ctx_a = OperatorContext::default();
        let mut a = make();
        let mut got = Vec::new();
        run(a.as_mut(), &mut ctx_a, before, &mut got);
        let late_before = ctx_a.late_rows();
        let snapshot = snapshot_of(a.as_mut(), tables);
        // Taking a snapshot changes nothing the original emits later.
        let mut original = got.clone();
        run(a.as_mut(), &mut ctx_a, after, &mut original);
        assert_eq!(
            original, expected,
            "the snapshot at {cut} disturbed the original"
        );

        let mut ctx_b = OperatorContext::default();
        let mut b = make();
        b.restore(snapshot).unwrap();
        // A restored instance snapshots what it was given.
        let mut again = make();
        again.restore(snapshot_of(b.as_mut(), tables)).unwrap();
        assert_eq!(held(again.as_ref()), held(b.as_ref()), "restore at {cut}");
        // The runtime may repeat the last watermark before the cut: nothing happens.
        let last_watermark = before.iter().rev().find_map(|s| match s {
            Step::Watermark(w) => Some(*w),
            Step::End => Some(WATERMARK_END),
            Step::Batch(_) | Step::BatchOn(..) => None,
        });
        if let Some(w) = last_watermark
            && !matches!(before.last(), Some(Step::End))
        {
            // (An operator that forwards watermarks without holding one may pass it on:
            // downstream ignores a watermark that does not advance its own.)
            b.on_watermark(w, &mut ctx_b).unwrap();
            let repeated: Vec<Message> = ctx_b.drain().collect();
            assert!(
                repeated.is_empty()
                    || (forwards
                        && matches!(repeated.as_slice(), [Message::Watermark(x)] if *x == w)),
                "repeated watermark at cut {cut}: {repeated:?}"
            );
        }
        run(b.as_mut(), &mut ctx_b, after, &mut got);
        assert_eq!(got, expected, "cut at step {cut}");
        assert_eq!(
            late_before + ctx_b.late_rows(),
            expected_late,
            "late rows with a cut at {cut}"
        );
    }
    (expected, expected_late)
}

/// Restores `snapshot` into `op` the way the runtime does: refused if it holds a table the
/// operator's `tables` do not declare.
pub fn restore_declared(
    op: &mut dyn Operator,
    tables: &[StateTable],
    snapshot: StateSnapshot,
) -> crate::error::EngineResult<()> {
    let mut ctx = OperatorContext::new(0, 0, tables.to_vec(), std::sync::Arc::default());
    crate::runtime::driver::restore(op, &mut ctx, snapshot)
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

/// The rows `out` holds (its data messages, drained), each as its values separated by spaces
/// (`NULL` for a null).
pub fn rows(out: &mut OperatorContext) -> Vec<String> {
    let mut rows = Vec::new();
    for m in out.drain() {
        if let Message::Data(b) = m {
            for r in 0..b.num_rows() {
                let values: Vec<String> = b
                    .columns()
                    .iter()
                    .map(|c| {
                        if c.is_null(r) {
                            "NULL".to_string()
                        } else {
                            datafusion::arrow::util::display::array_value_to_string(c, r).unwrap()
                        }
                    })
                    .collect();
                rows.push(values.join(" "));
            }
        }
    }
    rows
}

/// The rows of a run of `op` over `steps`: with `changelog`, the rows its changes leave
/// (each `-` takes out one equal row its `+` put in), else every row; sorted.
pub fn final_rows(op: &mut dyn Operator, steps: &[Step], changelog: bool) -> Vec<String> {
    let mut ctx = OperatorContext::default();
    let mut left: Vec<String> = Vec::new();
    for step in steps {
        match step {
            Step::Batch(b) | Step::BatchOn(_, b) => op.on_batch(0, b.clone(), &mut ctx).unwrap(),
            Step::Watermark(w) => op.on_watermark(*w, &mut ctx).unwrap(),
            Step::End => {
                op.on_watermark(WATERMARK_END, &mut ctx).unwrap();
                op.on_end(&mut ctx).unwrap();
            }
        }
        for row in rows(&mut ctx) {
            if !changelog {
                left.push(row);
            } else if let Some(rest) = row.strip_prefix("+ ") {
                left.push(rest.to_string());
            } else if let Some(rest) = row.strip_prefix("- ") {
                let at = left.iter().position(|r| r == rest);
                assert!(at.is_some(), "a retraction of a row not emitted: {rest}");
                left.remove(at.unwrap_or_default());
            }
        }
    }
    left.sort();
    left
}

/// The steps with every watermark `by` earlier: a window that allows `by` of lateness
/// expires when one without fires under these.
pub fn shifted(steps: &[Step], by: i64) -> Vec<Step> {
    steps
        .iter()
        .map(|s| match s {
            Step::Watermark(w) => Step::Watermark(w - by),
            other => other.clone(),
        })
        .collect()
}
