//! The MATCH_RECOGNIZE matcher checked against a naive backtracking matcher.
//!
//! The oracle below is written straight from the standard's definition, independently of the
//! VM in `operators::match_recognize::matcher`: for each start row it enumerates the labellings of the
//! pattern tree in preference order by recursive backtracking (concatenation in order,
//! alternatives left to right, greedy quantifiers preferring one more iteration and reluctant
//! ones one fewer, PERMUTE's orders lexicographically), and the first one that satisfies the
//! conditions is the match. An iteration of a quantifier that matches no row once the minimum
//! is reached ends the quantifier (it is not repeated at the same position). Across the
//! partition, the next attempt starts where AFTER MATCH SKIP says.
//!
//! Random cases: patterns of depth up to 4 over 1 to 3 variables with every quantifier
//! (greedy and reluctant), alternation, grouping, `()`, `{- -}`, `^`, `$` and PERMUTE; 0 to 8
//! rows; conditions that look at the row only (run with and without thread merging) or at the
//! attempt's history; every skip mode, with and without unmatched rows; rows fed to the VM in
//! random chunks, sometimes giving up the running attempt (`expire`, as WITHIN does) in
//! between.
//!
//! Time and timeouts: rows have times (non-decreasing) and a case may have a WITHIN bound: an
//! attempt sees only the rows less than WITHIN after its first row (nor any row from where it
//! was given up). With timeouts reported, an attempt that finds no match is timed out when some
//! path of its search was still waiting for a row when the rows it may see ran out (its window
//! closed, it was given up, or the partition ended), and not after passing `$`: the first such
//! path in preference order is its partial match, and the next attempt starts at the next row. Along the way the test checks what the VM hands to the conditions (a `History`
//! consistent with itself, only rows already given) and `first_needed_row()` (it never goes
//! back, and nothing later looks at or reports a row before it).
//!
//! A failing case is shrunk and printed with the seed that reproduces it:
//! `PATTERN_PROP_CASE=<seed>` runs that case alone, `PATTERN_PROP_SEED` and
//! `PATTERN_PROP_CASES` change the run.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use eddy_engine::error::EngineResult;
use eddy_engine::operators::match_recognize::matcher::{
    Conditions, Found, History, Match, PartitionMatcher, SkipMode,
};
use eddy_engine::operators::match_recognize::pattern::{Pattern, Program, VarId};

const NAMES: [&str; 3] = ["A", "B", "C"];

fn names() -> Vec<String> {
    NAMES.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// A small seeded PRNG (splitmix64).

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` (n is small: the modulo bias does not matter here).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------------------------
// Patterns as the test builds them: PERMUTE stays a node, so the oracle expands it itself.

#[derive(Clone, Debug, PartialEq)]
enum P {
    Var(VarId),
    Start,
    End,
    Empty,
    Exclude(Box<P>),
    Concat(Vec<P>),
    Alt(Vec<P>),
    Permute(Vec<P>),
    Repeat {
        inner: Box<P>,
        min: u32,
        max: Option<u32>,
        greedy: bool,
    },
}

fn var(v: VarId) -> P {
    P::Var(v)
}

fn cat(ps: Vec<P>) -> P {
    P::Concat(ps)
}

fn alt(ps: Vec<P>) -> P {
    P::Alt(ps)
}

fn rep(p: P, min: u32, max: Option<u32>, greedy: bool) -> P {
    P::Repeat {
        inner: Box::new(p),
        min,
        max,
        greedy,
    }
}

impl P {
    fn to_pattern(&self) -> Pattern {
        match self {
            P::Var(v) => Pattern::Var(*v),
            P::Start => Pattern::Start,
            P::End => Pattern::End,
            P::Empty => Pattern::Empty,
            P::Exclude(p) => Pattern::Exclude(Box::new(p.to_pattern())),
            P::Concat(ps) => Pattern::Concat(ps.iter().map(P::to_pattern).collect()),
            P::Alt(ps) => Pattern::Alt(ps.iter().map(P::to_pattern).collect()),
            P::Permute(ps) => Pattern::permute(ps.iter().map(P::to_pattern).collect())
                .expect("PERMUTE of at most 3 items"),
            P::Repeat {
                inner,
                min,
                max,
                greedy,
            } => Pattern::Repeat {
                inner: Box::new(inner.to_pattern()),
                min: *min,
                max: *max,
                greedy: *greedy,
            },
        }
    }

    fn size(&self) -> usize {
        match self {
            P::Var(_) | P::Start | P::End | P::Empty => 1,
            P::Exclude(p) => 1 + p.size(),
            P::Concat(ps) | P::Alt(ps) | P::Permute(ps) => {
                1 + ps.iter().map(P::size).sum::<usize>()
            }
            P::Repeat { inner, .. } => 1 + inner.size(),
        }
    }

    /// Patterns one step simpler, for shrinking a failing case.
    fn simpler(&self) -> Vec<P> {
        let mut out = Vec::new();
        match self {
            P::Var(_) | P::Empty => {}
            P::Start | P::End => out.push(P::Empty),
            P::Exclude(p) => {
                out.push((**p).clone());
                out.extend(p.simpler().into_iter().map(|q| P::Exclude(Box::new(q))));
            }
            P::Concat(ps) | P::Alt(ps) | P::Permute(ps) => {
                let rebuild = |items: Vec<P>| match self {
                    P::Concat(_) => P::Concat(items),
                    P::Alt(_) => P::Alt(items),
                    _ => P::Permute(items),
                };
                out.extend(ps.iter().cloned());
                if ps.len() > 2 || (ps.len() > 1 && !matches!(self, P::Permute(_))) {
                    for i in 0..ps.len() {
                        let mut items = ps.clone();
                        items.remove(i);
                        out.push(rebuild(items));
                    }
                }
                for (i, p) in ps.iter().enumerate() {
                    for q in p.simpler() {
                        let mut items = ps.clone();
                        items[i] = q;
                        out.push(rebuild(items));
                    }
                }
                if let P::Permute(_) = self {
                    out.push(P::Concat(ps.clone()));
                }
            }
            P::Repeat {
                inner,
                min,
                max,
                greedy,
            } => {
                out.push((**inner).clone());
                let bounds = [
                    (min.saturating_sub(1), *max),
                    (*min, max.map(|m| m.saturating_sub(1).max(*min))),
                    (*min, Some(max.unwrap_or(*min + 1))),
                ];
                for (lo, hi) in bounds {
                    if (lo, hi) != (*min, *max) && hi.is_none_or(|h| h >= lo) {
                        out.push(rep((**inner).clone(), lo, hi, *greedy));
                    }
                }
                if !greedy {
                    out.push(rep((**inner).clone(), *min, *max, true));
                }
                out.extend(
                    inner
                        .simpler()
                        .into_iter()
                        .map(|q| rep(q, *min, *max, *greedy)),
                );
            }
        }
        out
    }
}

impl fmt::Display for P {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            P::Var(v) => write!(f, "{}", NAMES[*v as usize]),
            P::Start => write!(f, "^"),
            P::End => write!(f, "$"),
            P::Empty => write!(f, "()"),
            P::Exclude(p) => write!(f, "{{- {p} -}}"),
            P::Concat(ps) => {
                for (i, p) in ps.iter().enumerate() {
                    if i > 0 {
                        write!(f, " ")?;
                    }
                    match p {
                        P::Alt(_) => write!(f, "({p})")?,
                        _ => write!(f, "{p}")?,
                    }
                }
                Ok(())
            }
            P::Alt(ps) => {
                for (i, p) in ps.iter().enumerate() {
                    if i > 0 {
                        write!(f, " | ")?;
                    }
                    write!(f, "{p}")?;
                }
                Ok(())
            }
            P::Permute(ps) => {
                write!(f, "PERMUTE(")?;
                for (i, p) in ps.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{p}")?;
                }
                write!(f, ")")
            }
            P::Repeat {
                inner,
                min,
                max,
                greedy,
            } => {
                match inner.as_ref() {
                    P::Var(_) | P::Start | P::End | P::Empty | P::Exclude(_) | P::Permute(_) => {
                        write!(f, "{inner}")?
                    }
                    _ => write!(f, "({inner})")?,
                }
                match (min, max) {
                    (0, None) => write!(f, "*")?,
                    (1, None) => write!(f, "+")?,
                    (0, Some(1)) => write!(f, "?")?,
                    (n, None) => write!(f, "{{{n},}}")?,
                    (n, Some(m)) if n == m => write!(f, "{{{n}}}")?,
                    (0, Some(m)) => write!(f, "{{,{m}}}")?,
                    (n, Some(m)) => write!(f, "{{{n},{m}}}")?,
                }
                if !greedy {
                    write!(f, "?")?;
                }
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// DEFINE conditions.

/// `table[r]`: the variables (a bit per variable) row r satisfies on its own.
#[derive(Clone, Debug)]
enum Cond {
    /// The row alone decides.
    Table(Vec<u8>),
    /// The row, and the parity of the row's offset in the attempt (`History::start`): the
    /// same for every thread of an attempt, so threads may still be merged.
    Offset { table: Vec<u8>, parity: [u8; 3] },
    /// The row, and fewer than `cap[v]` rows of the attempt labelled v so far.
    Capped { table: Vec<u8>, cap: [usize; 3] },
    /// The row, and `value[r]` above the value of the last row labelled v (if any).
    Rising { table: Vec<u8>, value: Vec<u8> },
    /// `table` for the attempt's first row, `after[r][l]` for a row after one labelled l.
    Follows { table: Vec<u8>, after: Vec<[u8; 3]> },
}

impl Cond {
    fn table(&self) -> &[u8] {
        match self {
            Cond::Table(table)
            | Cond::Offset { table, .. }
            | Cond::Capped { table, .. }
            | Cond::Rising { table, .. }
            | Cond::Follows { table, .. } => table,
        }
    }

    /// Whether DEFINE ignores the thread's labels (the VM may then merge threads).
    fn history_free(&self) -> bool {
        matches!(self, Cond::Table(_) | Cond::Offset { .. })
    }

    /// The oracle's reading: `labels` are the attempt's rows `start..row`.
    fn holds(&self, v: VarId, row: usize, start: usize, labels: &[VarId]) -> bool {
        if let (Cond::Follows { after, .. }, Some(&l)) = (self, labels.last()) {
            return after[row][l as usize] & (1 << v) != 0;
        }
        if self.table()[row] & (1 << v) == 0 {
            return false;
        }
        match self {
            Cond::Table(_) => true,
            Cond::Offset { parity, .. } => (row - start) as u8 % 2 == parity[v as usize],
            Cond::Capped { cap, .. } => {
                labels.iter().filter(|&&l| l == v).count() < cap[v as usize]
            }
            Cond::Rising { value, .. } => match (0..labels.len()).rev().find(|&i| labels[i] == v) {
                Some(i) => value[row] > value[start + i],
                None => true,
            },
            Cond::Follows { .. } => true,
        }
    }

    fn without_row(&self, r: usize) -> Cond {
        let drop = |t: &[u8]| {
            let mut t = t.to_vec();
            t.remove(r);
            t
        };
        match self {
            Cond::Table(t) => Cond::Table(drop(t)),
            Cond::Offset { table, parity } => Cond::Offset {
                table: drop(table),
                parity: *parity,
            },
            Cond::Capped { table, cap } => Cond::Capped {
                table: drop(table),
                cap: *cap,
            },
            Cond::Rising { table, value } => Cond::Rising {
                table: drop(table),
                value: drop(value),
            },
            Cond::Follows { table, after } => {
                let mut after = after.clone();
                after.remove(r);
                Cond::Follows {
                    table: drop(table),
                    after,
                }
            }
        }
    }
}

/// The VM's reading of the same conditions, through `History`, with checks of what the VM
/// hands over.
struct VmConditions<'a> {
    cond: &'a Cond,
    case: &'a Case,
    /// Rows the VM has been given so far.
    available: usize,
    /// `first_needed_row()` after the previous `advance`: no attempt may look before it.
    first_needed: usize,
    problem: Option<String>,
}

impl Conditions for VmConditions<'_> {
    fn holds(&mut self, v: VarId, row: usize, history: History<'_>) -> EngineResult<bool> {
        let start = history.start();
        let labels = history.labels();
        let back: Vec<(usize, VarId)> = history.iter_back().collect();
        let expected_back: Vec<(usize, VarId)> = labels
            .iter()
            .enumerate()
            .rev()
            .map(|(i, &l)| (start + i, l))
            .collect();
        let problem = if row >= self.available {
            Some(format!(
                "condition asked about row {row} with {} rows given",
                self.available
            ))
        } else if start + history.len() != row || labels.len() != history.len() {
            Some(format!(
                "history of row {row} starts at {start} with {} labels",
                history.len()
            ))
        } else if history.is_empty() != labels.is_empty() {
            Some("History::is_empty disagrees with its labels".into())
        } else if back != expected_back {
            Some(format!(
                "iter_back {back:?} disagrees with labels {labels:?}"
            ))
        } else if start < self.first_needed {
            Some(format!(
                "an attempt starting at row {start} runs after first_needed_row() said {}",
                self.first_needed
            ))
        } else {
            None
        };
        if self.problem.is_none() {
            self.problem = problem;
        }
        // Rising reads the last row labelled v through iter_back, the others use labels.
        let holds = match self.cond {
            Cond::Rising { table, value } => {
                table[row] & (1 << v) != 0
                    && history
                        .iter_back()
                        .find(|&(_, l)| l == v)
                        .is_none_or(|(r, _)| value[row] > value[r])
            }
            cond => cond.holds(v, row, start, &labels),
        };
        Ok(holds)
    }

    fn in_window(&mut self, start: usize, row: usize) -> bool {
        if row >= self.available || start > row {
            self.problem.get_or_insert(format!(
                "in_window asked about row {row} of the attempt at {start} with {} rows given",
                self.available
            ));
        }
        self.case.in_window(start, row)
    }
}

// ---------------------------------------------------------------------------------------------
// The oracle.

#[derive(Default)]
struct Labelled {
    labels: Vec<VarId>,
    excluded: Vec<bool>,
    /// The path passed `$` (at the end of the partition): no row can follow.
    ended: bool,
}

/// The rest of the pattern after a sub-pattern: called with the position reached; true when
/// the whole pattern has matched (the search stops).
type Cont<'k> = dyn FnMut(usize, &mut Labelled) -> bool + 'k;

struct Oracle<'a> {
    n: usize,
    /// Rows the attempt may label: `n`, or fewer when the VM was told to give up on rows
    /// from there (`PartitionMatcher::expire`).
    visible: usize,
    cond: &'a Cond,
    start: usize,
    /// Steps left before the search is given up (a few random cases explode).
    budget: std::cell::Cell<usize>,
    /// The first path, in preference order, that waited for a row at `visible` (not after
    /// `$`): the attempt's partial match if it times out.
    waiting: std::cell::RefCell<Option<Labelled>>,
}

impl Oracle<'_> {
    fn spend(&self) -> bool {
        let left = self.budget.get();
        if left == 0 {
            return false;
        }
        self.budget.set(left - 1);
        true
    }

    fn m(&self, p: &P, pos: usize, excl: bool, st: &mut Labelled, k: &mut Cont<'_>) -> bool {
        if !self.spend() {
            return false;
        }
        match p {
            P::Var(v) => {
                if pos == self.visible && !st.ended && self.waiting.borrow().is_none() {
                    *self.waiting.borrow_mut() = Some(Labelled {
                        labels: st.labels.clone(),
                        excluded: st.excluded.clone(),
                        ended: false,
                    });
                }
                if pos < self.visible && self.cond.holds(*v, pos, self.start, &st.labels) {
                    st.labels.push(*v);
                    st.excluded.push(excl);
                    let found = k(pos + 1, st);
                    st.labels.pop();
                    st.excluded.pop();
                    found
                } else {
                    false
                }
            }
            P::Start => pos == 0 && k(pos, st),
            P::End => {
                if pos != self.n {
                    return false;
                }
                let ended = std::mem::replace(&mut st.ended, true);
                let found = k(pos, st);
                st.ended = ended;
                found
            }
            P::Empty => k(pos, st),
            P::Exclude(p) => self.m(p, pos, true, st, k),
            P::Concat(ps) => self.seq(&ps.iter().collect::<Vec<_>>(), pos, excl, st, k),
            P::Alt(ps) => ps.iter().any(|p| self.m(p, pos, excl, st, k)),
            P::Permute(ps) => lexicographic_orders(ps.len()).into_iter().any(|order| {
                let items: Vec<&P> = order.iter().map(|&i| &ps[i]).collect();
                self.seq(&items, pos, excl, st, k)
            }),
            P::Repeat {
                inner,
                min,
                max,
                greedy,
            } => {
                let q = Quantified {
                    inner,
                    min: *min,
                    max: *max,
                    greedy: *greedy,
                    excl,
                };
                self.repeat(&q, 0, pos, st, k)
            }
        }
    }

    fn seq(&self, ps: &[&P], pos: usize, excl: bool, st: &mut Labelled, k: &mut Cont<'_>) -> bool {
        match ps.split_first() {
            None => k(pos, st),
            Some((first, rest)) => self.m(first, pos, excl, st, &mut |pos, st: &mut Labelled| {
                self.seq(rest, pos, excl, st, &mut *k)
            }),
        }
    }

    /// `count` iterations done, the next one starting at `pos`.
    fn repeat(
        &self,
        q: &Quantified<'_>,
        count: u32,
        pos: usize,
        st: &mut Labelled,
        k: &mut Cont<'_>,
    ) -> bool {
        if count < q.min {
            // Iterations up to the minimum are needed, even empty ones.
            return self.m(q.inner, pos, q.excl, st, &mut |next, st: &mut Labelled| {
                self.repeat(q, count + 1, next, st, &mut *k)
            });
        }
        let more = q.max.is_none_or(|max| count < max);
        let iterate = |st: &mut Labelled, k: &mut Cont<'_>| {
            more && self.m(q.inner, pos, q.excl, st, &mut |next, st: &mut Labelled| {
                if next == pos {
                    // An iteration that matched no row ends the quantifier.
                    k(next, st)
                } else {
                    self.repeat(q, count + 1, next, st, &mut *k)
                }
            })
        };
        // Greedy: one more iteration first; reluctant: the rest of the pattern first.
        if q.greedy {
            iterate(st, k) || k(pos, st)
        } else {
            let done = k(pos, st);
            done || iterate(st, k)
        }
    }

    /// The preferred match starting at `self.start`; Err when the budget ran out.
    fn find(&self, pattern: &P) -> Result<Option<Labelled>, ()> {
        let mut st = Labelled::default();
        let mut found = None;
        let start = self.start;
        self.m(
            pattern,
            start,
            false,
            &mut st,
            &mut |pos, st: &mut Labelled| {
                assert_eq!(pos, start + st.labels.len());
                found = Some(Labelled {
                    labels: st.labels.clone(),
                    excluded: st.excluded.clone(),
                    ended: false,
                });
                true
            },
        );
        if found.is_none() && self.budget.get() == 0 {
            return Err(());
        }
        Ok(found)
    }
}

struct Quantified<'a> {
    inner: &'a P,
    min: u32,
    max: Option<u32>,
    greedy: bool,
    excl: bool,
}

/// The orders of `0..n`, lexicographically (written independently of `Pattern::permute`).
fn lexicographic_orders(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for first in 0..n {
        for rest in lexicographic_orders(n - 1) {
            let mut order = vec![first];
            order.extend(rest.into_iter().map(|i| if i >= first { i + 1 } else { i }));
            out.push(order);
        }
    }
    out
}

/// What a run over the partition gives: the reports, then whether AFTER MATCH SKIP failed.
#[derive(Clone, Debug, PartialEq)]
struct Outcome {
    found: Vec<Found>,
    error: bool,
}

const ORACLE_BUDGET: usize = 200_000;

/// The oracle over the whole partition; None when its search budget ran out. `expired`:
/// (start, row) when the attempt at `start` was given up on rows from `row` on.
fn oracle(case: &Case, expired: &[(usize, usize)]) -> Option<Outcome> {
    let budget = std::cell::Cell::new(ORACLE_BUDGET);
    let mut found = Vec::new();
    let mut start = 0;
    let mut covered = 0;
    let mut number = 0;
    while start < case.n {
        let given_up = expired
            .iter()
            .find(|&&(s, _)| s == start)
            .map_or(case.n, |&(_, row)| row);
        // The attempt's window: the rows less than WITHIN after its first.
        let window_end = (start..case.n)
            .find(|&r| !case.in_window(start, r))
            .unwrap_or(case.n);
        let o = Oracle {
            n: case.n,
            visible: given_up.min(window_end),
            cond: &case.cond,
            start,
            budget: std::cell::Cell::new(budget.get()),
            waiting: Default::default(),
        };
        let result = o.find(&case.pattern).ok()?;
        budget.set(o.budget.get());
        let Some(m) = result else {
            if case.timeouts
                && let Some(partial) = o.waiting.into_inner()
            {
                found.push(Found::TimedOut(Match {
                    number: 0,
                    start,
                    labels: partial.labels,
                    excluded: partial.excluded,
                }));
            } else if case.report_unmatched && start >= covered {
                found.push(Found::Unmatched(start));
            }
            start += 1;
            continue;
        };
        number += 1;
        let end = start + m.labels.len();
        let next = if m.labels.is_empty() {
            start + 1
        } else {
            match &case.skip {
                SkipMode::PastLastRow => end,
                SkipMode::ToNextRow => start + 1,
                SkipMode::ToFirst { vars, .. } | SkipMode::ToLast { vars, .. } => {
                    let rows = (start..end).filter(|&r| vars.contains(&m.labels[r - start]));
                    let row = if matches!(case.skip, SkipMode::ToFirst { .. }) {
                        rows.min()
                    } else {
                        rows.max()
                    };
                    match row {
                        Some(r) if r > start => r,
                        // No row to skip to, or the match's own first row: an error.
                        _ => return Some(Outcome { found, error: true }),
                    }
                }
            }
        };
        covered = covered.max(end);
        found.push(Found::Match(Match {
            number,
            start,
            labels: m.labels,
            excluded: m.excluded,
        }));
        start = next;
    }
    Some(Outcome {
        found,
        error: false,
    })
}

// ---------------------------------------------------------------------------------------------
// Cases, and running the VM on them.

#[derive(Clone, Debug)]
struct Case {
    pattern: P,
    vars: usize,
    n: usize,
    cond: Cond,
    skip: SkipMode,
    report_unmatched: bool,
    /// Per row, its time; WITHIN (an attempt sees the rows whose time is less than this after
    /// its first row's); whether timed-out attempts are reported.
    times: Vec<u8>,
    within: Option<u8>,
    timeouts: bool,
    /// `available` of the successive `advance(.., ended = false)` calls, before the final
    /// `advance(n, true)`; true: `expire` follows the call.
    schedule: Vec<(usize, bool)>,
}

impl Case {
    fn in_window(&self, start: usize, row: usize) -> bool {
        self.within
            .is_none_or(|w| self.times[row] - self.times[start] < w)
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = names();
        writeln!(f, "  PATTERN ({})", self.pattern)?;
        writeln!(
            f,
            "  compiled as ({})",
            self.pattern.to_pattern().display(&names[..self.vars])
        )?;
        let kind = match &self.cond {
            Cond::Table(_) => "the row alone".to_string(),
            Cond::Offset { parity, .. } => format!(
                "the row, and (row - start) % 2 == {:?} for {:?}",
                &parity[..self.vars],
                &NAMES[..self.vars]
            ),
            Cond::Capped { cap, .. } => format!(
                "the row, and fewer than {:?} rows labelled {:?} before",
                &cap[..self.vars],
                &NAMES[..self.vars]
            ),
            Cond::Rising { .. } => {
                "the row, and value above the last row with the same label".to_string()
            }
            Cond::Follows { .. } => {
                "the row's set for the attempt's first row, else its set after the previous \
                 row's label"
                    .to_string()
            }
        };
        let set = |bits: u8| {
            let vars: Vec<&str> = (0..self.vars)
                .filter(|&v| bits & (1 << v) != 0)
                .map(|v| NAMES[v])
                .collect();
            format!("{{{}}}", vars.join(","))
        };
        writeln!(f, "  DEFINE: {kind}")?;
        for r in 0..self.n {
            write!(
                f,
                "    row {r} (time {}): {}",
                self.times[r],
                set(self.cond.table()[r])
            )?;
            if let Cond::Rising { value, .. } = &self.cond {
                write!(f, " value {}", value[r])?;
            }
            if let Cond::Follows { after, .. } = &self.cond {
                for l in 0..self.vars {
                    write!(f, ", after {}: {}", NAMES[l], set(after[r][l]))?;
                }
            }
            writeln!(f)?;
        }
        writeln!(
            f,
            "  AFTER MATCH SKIP {:?}, unmatched rows {}, WITHIN {:?}, timeouts {}",
            self.skip, self.report_unmatched, self.within, self.timeouts
        )?;
        let fed: Vec<String> = self
            .schedule
            .iter()
            .map(|&(a, expire)| {
                if expire {
                    format!("{a} expire")
                } else {
                    a.to_string()
                }
            })
            .collect();
        write!(f, "  fed: [{}] then ({}, ended)", fed.join(", "), self.n)
    }
}

/// The VM's outcome, and the attempts it was told to give up (see `oracle`).
type VmRun = (Outcome, Vec<(usize, usize)>);

fn run_vm(case: &Case, merge_threads: bool) -> Result<VmRun, String> {
    let program = Program::compile(&case.pattern.to_pattern(), case.vars)
        .map_err(|e| format!("compile: {e}"))?;
    let mut matcher = PartitionMatcher::new(
        Arc::new(program),
        case.skip.clone(),
        merge_threads,
        case.report_unmatched,
    )
    .report_timeouts(case.timeouts);
    let mut cond = VmConditions {
        cond: &case.cond,
        case,
        available: 0,
        first_needed: 0,
        problem: None,
    };
    let mut found = Vec::new();
    let mut expired = Vec::new();
    let calls = case
        .schedule
        .iter()
        .map(|&(a, expire)| (a, false, expire))
        .chain([(case.n, true, false), (case.n, true, false)]);
    for (available, ended, expire) in calls {
        cond.available = available;
        let before = found.len();
        let mut result = matcher.advance(available, ended, &mut cond, &mut found);
        if result.is_ok() && expire {
            if let Some(start) = matcher.pending_start()
                && !expired.iter().any(|&(s, _)| s == start)
            {
                expired.push((start, available));
            }
            result = matcher.expire(&mut found);
        }
        if let Some(problem) = cond.problem.take() {
            return Err(problem);
        }
        for f in &found[before..] {
            let row = match f {
                Found::Match(m) | Found::TimedOut(m) => m.start,
                Found::Unmatched(r) => *r,
            };
            if row < cond.first_needed {
                return Err(format!(
                    "{f:?} reported after first_needed_row() said {}",
                    cond.first_needed
                ));
            }
        }
        if result.is_err() {
            return Ok((Outcome { found, error: true }, expired));
        }
        let first_needed = matcher.first_needed_row();
        if first_needed < cond.first_needed {
            return Err(format!(
                "first_needed_row() went back from {} to {first_needed}",
                cond.first_needed
            ));
        }
        if let Some(start) = matcher.pending_start()
            && start != first_needed
        {
            return Err(format!(
                "pending_start() {start} but first_needed_row() {first_needed}"
            ));
        }
        if ended && matcher.pending_start().is_some() {
            return Err("an attempt is still pending after the partition ended".into());
        }
        cond.first_needed = first_needed;
    }
    let outcome = Outcome {
        found,
        error: false,
    };
    Ok((outcome, expired))
}

enum Verdict {
    Pass,
    /// The oracle's search ran out of budget.
    Skipped,
    Fail(String),
}

fn check(case: &Case) -> Verdict {
    // First the oracle alone: where its search explodes, so does the VM's without merging.
    let Some(plain) = oracle(case, &[]) else {
        return Verdict::Skipped;
    };
    let merges: &[bool] = if case.cond.history_free() {
        &[false, true]
    } else {
        &[false]
    };
    for &merge in merges {
        let (actual, expired) = match run_vm(case, merge) {
            Ok(run) => run,
            Err(problem) => {
                return Verdict::Fail(format!("merge_threads = {merge}: {problem}"));
            }
        };
        let expected = if expired.is_empty() {
            plain.clone()
        } else {
            match oracle(case, &expired) {
                Some(expected) => expected,
                None => return Verdict::Skipped,
            }
        };
        if actual != expected {
            let expired: Vec<String> = expired
                .iter()
                .map(|(start, row)| format!("the attempt at {start} from row {row}"))
                .collect();
            return Verdict::Fail(format!(
                "merge_threads = {merge}, expired: [{}]\n  expected {}\n  got      {}",
                expired.join(", "),
                show(&expected),
                show(&actual)
            ));
        }
    }
    Verdict::Pass
}

/// Matches as `#number@start:LABELS`, excluded rows in lower case.
fn show(outcome: &Outcome) -> String {
    let mut parts: Vec<String> = outcome
        .found
        .iter()
        .map(|f| match f {
            Found::Match(m) | Found::TimedOut(m) => {
                let labels: String = m
                    .labels
                    .iter()
                    .zip(&m.excluded)
                    .map(|(&v, &x)| {
                        let name = NAMES[v as usize];
                        if x {
                            name.to_lowercase()
                        } else {
                            name.to_string()
                        }
                    })
                    .collect();
                if matches!(f, Found::TimedOut(_)) {
                    format!("timed out @{}:{labels}", m.start)
                } else {
                    format!("#{}@{}:{labels}", m.number, m.start)
                }
            }
            Found::Unmatched(r) => format!("unmatched {r}"),
        })
        .collect();
    if outcome.error {
        parts.push("ERROR".into());
    }
    format!("[{}]", parts.join(", "))
}

// ---------------------------------------------------------------------------------------------
// Random cases.

fn gen_leaf(rng: &mut Rng, vars: usize) -> P {
    match rng.below(100) {
        0..80 => P::Var(rng.below(vars) as VarId),
        80..88 => P::Empty,
        88..94 => P::Start,
        _ => P::End,
    }
}

fn gen_quantifier(rng: &mut Rng) -> (u32, Option<u32>) {
    let small = |rng: &mut Rng, lo: usize| rng.range(lo, 3) as u32;
    match rng.below(7) {
        0 => (0, None),
        1 => (1, None),
        2 => (0, Some(1)),
        3 => {
            let n = small(rng, 0);
            (n, Some(n))
        }
        4 => (small(rng, 0), None),
        5 => {
            let n = small(rng, 0);
            (n, Some(small(rng, n.max(1) as usize)))
        }
        _ => (0, Some(small(rng, 1))),
    }
}

fn gen_pattern(rng: &mut Rng, vars: usize, depth: usize) -> P {
    if depth == 0 || rng.chance(25) {
        return gen_leaf(rng, vars);
    }
    let children = |rng: &mut Rng, depth: usize| -> Vec<P> {
        (0..rng.range(2, 3))
            .map(|_| gen_pattern(rng, vars, depth))
            .collect()
    };
    match rng.below(100) {
        0..30 => P::Concat(children(rng, depth - 1)),
        30..50 => {
            let mut ps = children(rng, depth - 1);
            if rng.chance(25) {
                // An empty alternative: preferred or not, it makes iterations empty.
                let at = rng.below(ps.len() + 1);
                ps.insert(at, P::Empty);
            }
            P::Alt(ps)
        }
        50..84 => {
            let (min, max) = gen_quantifier(rng);
            rep(gen_pattern(rng, vars, depth - 1), min, max, rng.chance(60))
        }
        84..92 => P::Exclude(Box::new(gen_pattern(rng, vars, depth - 1))),
        _ => P::Permute(children(rng, depth.saturating_sub(2))),
    }
}

fn gen_case(seed: u64) -> Case {
    let mut rng = Rng::new(seed);
    let vars = rng.range(1, 3);
    let depth = rng.range(1, 4);
    let pattern = gen_pattern(&mut rng, vars, depth);
    let n = if rng.chance(10) {
        rng.range(0, 2)
    } else {
        rng.range(3, 8)
    };
    let density = rng.range(35, 80);
    let table: Vec<u8> = (0..n)
        .map(|_| {
            (0..vars)
                .filter(|_| rng.chance(density))
                .fold(0, |bits, v| bits | (1 << v))
        })
        .collect();
    let cond = match rng.below(12) {
        0..5 => Cond::Table(table),
        5..6 => Cond::Offset {
            table,
            parity: [0, 1, 2].map(|_| rng.below(2) as u8),
        },
        6..8 => Cond::Capped {
            table,
            cap: [0, 1, 2].map(|_| rng.range(1, 3)),
        },
        8..10 => Cond::Rising {
            table,
            value: (0..n).map(|_| rng.below(5) as u8).collect(),
        },
        _ => Cond::Follows {
            table,
            after: (0..n)
                .map(|_| [0, 1, 2].map(|_| rng.below(1 << vars) as u8))
                .collect(),
        },
    };
    let nvars = vars;
    let skip_vars = |rng: &mut Rng| -> (Vec<VarId>, String) {
        let mut subset: Vec<VarId> = (0..nvars as VarId).filter(|_| rng.chance(50)).collect();
        if subset.is_empty() {
            subset.push(rng.below(nvars) as VarId);
        }
        let name = subset
            .iter()
            .map(|&v| NAMES[v as usize])
            .collect::<Vec<_>>()
            .join("+");
        (subset, name)
    };
    let skip = match rng.below(8) {
        0..3 => SkipMode::PastLastRow,
        3..5 => SkipMode::ToNextRow,
        5..7 => {
            let (vars, name) = skip_vars(&mut rng);
            if rng.chance(50) {
                SkipMode::ToFirst { vars, name }
            } else {
                SkipMode::ToLast { vars, name }
            }
        }
        _ => {
            let (vars, name) = skip_vars(&mut rng);
            SkipMode::ToLast { vars, name }
        }
    };
    let mut time = rng.below(3) as u8;
    let times: Vec<u8> = (0..n)
        .map(|_| {
            time += rng.below(3) as u8;
            time
        })
        .collect();
    let within = rng.chance(50).then(|| rng.range(1, 4) as u8);
    let timeouts = within.is_some() && rng.chance(70);
    // The SQL layer refuses WITH UNMATCHED ROWS with WITH TIMEOUTS.
    let report_unmatched = !timeouts && rng.chance(40);
    let mut schedule = Vec::new();
    if !rng.chance(15) {
        let mut available = 0;
        while available < n || rng.chance(20) {
            available = (available + rng.range(0, 3)).min(n);
            schedule.push((available, false));
            if available == n && schedule.len() > 12 {
                break;
            }
        }
        if !schedule.is_empty() && rng.chance(20) {
            // WITHIN ran out for whatever attempt is running there.
            let at = rng.below(schedule.len());
            schedule[at].1 = true;
        }
    }
    Case {
        pattern,
        vars,
        n,
        cond,
        skip,
        report_unmatched,
        times,
        within,
        timeouts,
        schedule,
    }
}

/// Smaller cases that still fail, greedily, for a readable report.
fn shrink(mut case: Case) -> Case {
    let mut rounds = 0;
    'outer: while rounds < 500 {
        rounds += 1;
        for candidate in simpler_cases(&case) {
            if matches!(check(&candidate), Verdict::Fail(_)) {
                case = candidate;
                continue 'outer;
            }
        }
        break;
    }
    case
}

fn simpler_cases(case: &Case) -> Vec<Case> {
    let mut out = Vec::new();
    for r in 0..case.n {
        let mut c = case.clone();
        c.n -= 1;
        c.cond = case.cond.without_row(r);
        c.times.remove(r);
        c.schedule = case
            .schedule
            .iter()
            .map(|&(a, x)| (a.min(c.n), x))
            .collect();
        out.push(c);
    }
    if !case.schedule.is_empty() {
        out.push(Case {
            schedule: vec![],
            ..case.clone()
        });
        for i in 0..case.schedule.len() {
            let mut c = case.clone();
            c.schedule.remove(i);
            out.push(c);
        }
    }
    for p in case.pattern.simpler() {
        out.push(Case {
            pattern: p,
            ..case.clone()
        });
    }
    if case.report_unmatched {
        out.push(Case {
            report_unmatched: false,
            ..case.clone()
        });
    }
    if case.timeouts {
        out.push(Case {
            timeouts: false,
            ..case.clone()
        });
    } else if case.within.is_some() {
        out.push(Case {
            within: None,
            ..case.clone()
        });
    }
    if case.skip != SkipMode::PastLastRow {
        out.push(Case {
            skip: SkipMode::PastLastRow,
            ..case.clone()
        });
    }
    if !matches!(case.cond, Cond::Table(_)) {
        out.push(Case {
            cond: Cond::Table(case.cond.table().to_vec()),
            ..case.clone()
        });
    }
    out.sort_by_key(|c| c.pattern.size() + c.n);
    out
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={text} is not a number")))
}

#[test]
fn matcher_agrees_with_backtracking_oracle() {
    let seeds: Vec<u64> = match env_u64("PATTERN_PROP_CASE") {
        Some(seed) => vec![seed],
        None => {
            let seed = env_u64("PATTERN_PROP_SEED").unwrap_or(0x5EED_ED01);
            let cases = env_u64("PATTERN_PROP_CASES").unwrap_or(50_000);
            (0..cases).map(|i| mix(seed ^ mix(i))).collect()
        }
    };
    let began = Instant::now();
    let mut skipped = 0;
    let mut timed_out = 0;
    for &seed in &seeds {
        let case = gen_case(seed);
        match check(&case) {
            Verdict::Pass => {
                let times_out =
                    |o: Outcome| o.found.iter().any(|f| matches!(f, Found::TimedOut(_)));
                if case.timeouts && oracle(&case, &[]).is_some_and(times_out) {
                    timed_out += 1;
                }
            }
            Verdict::Skipped => skipped += 1,
            Verdict::Fail(_) => {
                let small = shrink(case.clone());
                let Verdict::Fail(why) = check(&small) else {
                    unreachable!()
                };
                panic!(
                    "the matcher disagrees with the oracle (PATTERN_PROP_CASE={seed:#x} \
                     reproduces it)\nshrunk case:\n{small}\n{why}\n\noriginal case:\n{case}"
                );
            }
        }
    }
    eprintln!(
        "{} cases ({skipped} skipped: the oracle's search was too long, {timed_out} with an \
         attempt timed out) in {:?}",
        seeds.len(),
        began.elapsed()
    );
    assert!(
        seeds.len() < 1000 || timed_out * 40 >= seeds.len(),
        "too few cases time an attempt out: {timed_out}"
    );
    assert!(
        skipped * 100 <= seeds.len(),
        "too many cases skipped: {skipped}"
    );
}

// ---------------------------------------------------------------------------------------------
// Hand-written cases with known answers, checked against both the oracle and the VM.

/// `rows`: the variables each row satisfies, as letters ("AB": A and B).
fn table(rows: &[&str]) -> Vec<u8> {
    rows.iter()
        .map(|r| {
            r.chars()
                .map(|c| 1u8 << NAMES.iter().position(|n| n.starts_with(c)).unwrap())
                .fold(0, |a, b| a | b)
        })
        .collect()
}

/// A match as `start` and its labels, excluded rows in lower case.
fn mt(number: u64, start: usize, labels: &str) -> Found {
    Found::Match(Match {
        number,
        start,
        labels: labels
            .chars()
            .map(|c| {
                NAMES
                    .iter()
                    .position(|n| n.eq_ignore_ascii_case(&c.to_string()))
                    .unwrap() as VarId
            })
            .collect(),
        excluded: labels.chars().map(|c| c.is_lowercase()).collect(),
    })
}

fn known(pattern: P, rows: &[&str], skip: SkipMode, unmatched: bool, expected: Vec<Found>) {
    known_with(
        pattern,
        Cond::Table(table(rows)),
        skip,
        unmatched,
        expected,
        false,
    )
}

fn known_with(
    pattern: P,
    cond: Cond,
    skip: SkipMode,
    report_unmatched: bool,
    expected: Vec<Found>,
    error: bool,
) {
    let n = cond.table().len();
    let case = Case {
        pattern,
        vars: 3,
        n,
        cond,
        skip,
        report_unmatched,
        times: vec![0; n],
        within: None,
        timeouts: false,
        schedule: (0..=n).map(|a| (a, false)).collect(),
    };
    known_case(case, expected, error);
}

fn known_case(case: Case, expected: Vec<Found>, error: bool) {
    let expected = Outcome {
        found: expected,
        error,
    };
    let oracle = oracle(&case, &[]).expect("small case");
    assert_eq!(
        oracle,
        expected,
        "the oracle on\n{case}\n  gives    {}\n  expected {}",
        show(&oracle),
        show(&expected)
    );
    if let Verdict::Fail(why) = check(&case) {
        panic!("the matcher on\n{case}\n{why}");
    }
}

const A: VarId = 0;
const B: VarId = 1;
const C: VarId = 2;

#[test]
fn greedy_quantifier_gives_back_rows() {
    // A B+ C: the last B-row is the only C-row, so B+ gives it back.
    let p = cat(vec![var(A), rep(var(B), 1, None, true), var(C)]);
    known(
        p.clone(),
        &["A", "B", "BC", "A"],
        SkipMode::PastLastRow,
        true,
        vec![mt(1, 0, "ABC"), Found::Unmatched(3)],
    );
    // Nothing to give back: no match at all.
    known(
        p,
        &["A", "B", "B", "A"],
        SkipMode::PastLastRow,
        true,
        (0..4).map(Found::Unmatched).collect(),
    );
}

#[test]
fn reluctant_quantifier_takes_as_few_as_possible() {
    // A+? B over rows that are all both: one A, then B.
    let p = cat(vec![rep(var(A), 1, None, false), var(B)]);
    known(
        p.clone(),
        &["AB", "AB", "AB", "AB", "AB"],
        SkipMode::PastLastRow,
        false,
        vec![mt(1, 0, "AB"), mt(2, 2, "AB")],
    );
    // ... but as many as needed.
    known(
        p,
        &["A", "A", "AB", "B"],
        SkipMode::ToNextRow,
        true,
        vec![mt(1, 0, "AAB"), mt(2, 1, "AB"), mt(3, 2, "AB")],
    );
    // A reluctant quantifier at the end of the pattern matches its minimum.
    known(
        rep(var(A), 0, None, false),
        &["A", "A"],
        SkipMode::PastLastRow,
        false,
        vec![mt(1, 0, ""), mt(2, 1, "")],
    );
}

#[test]
fn alternation_prefers_the_left() {
    known(
        alt(vec![var(A), cat(vec![var(A), var(B)])]),
        &["AB", "B"],
        SkipMode::PastLastRow,
        true,
        vec![mt(1, 0, "A"), Found::Unmatched(1)],
    );
    known(
        alt(vec![cat(vec![var(A), var(B)]), var(A)]),
        &["AB", "B"],
        SkipMode::PastLastRow,
        true,
        vec![mt(1, 0, "AB")],
    );
    // (A | B)*: A wherever it holds, as long as possible; an empty match where neither does.
    known(
        rep(alt(vec![var(A), var(B)]), 0, None, true),
        &["A", "B", "AB", "C", "B"],
        SkipMode::PastLastRow,
        true,
        vec![mt(1, 0, "ABA"), mt(2, 3, ""), mt(3, 4, "B")],
    );
}

#[test]
fn permute_prefers_the_orders_lexicographically() {
    let p = P::Permute(vec![var(A), var(B), var(C)]);
    known(
        p.clone(),
        &["B", "A", "C", "ABC", "ABC", "ABC"],
        SkipMode::PastLastRow,
        false,
        vec![mt(1, 0, "BAC"), mt(2, 3, "ABC")],
    );
    // The order decides the labels, not the row's first variable.
    known(
        p,
        &["C", "AB", "AB"],
        SkipMode::PastLastRow,
        false,
        vec![mt(1, 0, "CAB")],
    );
}

#[test]
fn anchors_and_exclusion() {
    // ^ A+: only at the start of the partition.
    known(
        cat(vec![P::Start, rep(var(A), 1, None, true)]),
        &["A", "A", "B", "A"],
        SkipMode::PastLastRow,
        true,
        vec![mt(1, 0, "AA"), Found::Unmatched(2), Found::Unmatched(3)],
    );
    // A $: only the last row.
    known(
        cat(vec![var(A), P::End]),
        &["A", "A", "A"],
        SkipMode::ToNextRow,
        false,
        vec![mt(1, 2, "A")],
    );
    // A {- B+ -} C
    known(
        cat(vec![
            var(A),
            P::Exclude(Box::new(rep(var(B), 1, None, true))),
            var(C),
        ]),
        &["A", "B", "B", "C"],
        SkipMode::PastLastRow,
        false,
        vec![mt(1, 0, "AbbC")],
    );
}

#[test]
fn skip_modes() {
    // A B* C? with SKIP TO LAST B and TO FIRST B.
    let p = cat(vec![
        var(A),
        rep(var(B), 0, None, true),
        rep(var(C), 0, Some(1), true),
    ]);
    let rows = ["A", "AB", "AB", "B", "C"];
    let to = |first: bool, vars: Vec<VarId>| {
        let name = "B".to_string();
        if first {
            SkipMode::ToFirst { vars, name }
        } else {
            SkipMode::ToLast { vars, name }
        }
    };
    known(
        p.clone(),
        &rows,
        to(false, vec![B]),
        true,
        vec![mt(1, 0, "ABBBC")],
    );
    known(
        p.clone(),
        &rows,
        to(true, vec![B]),
        false,
        vec![mt(1, 0, "ABBBC"), mt(2, 1, "ABBC"), mt(3, 2, "ABC")],
    );
    // TO FIRST of a SUBSET {B, C}: the first row labelled either.
    known(
        p.clone(),
        &["A", "AB", "AB", "C"],
        to(true, vec![B, C]),
        true,
        vec![mt(1, 0, "ABBC"), mt(2, 1, "ABC"), mt(3, 2, "AC")],
    );
    // The second match has no B: skipping to it is an error, after the first match.
    known_with(
        p.clone(),
        Cond::Table(table(&["A", "B", "A", "C"])),
        to(true, vec![B]),
        false,
        vec![mt(1, 0, "AB")],
        true,
    );
    // SKIP TO FIRST A restarts at the match's own first row: an error.
    known_with(
        p,
        Cond::Table(table(&rows)),
        to(true, vec![A]),
        false,
        vec![],
        true,
    );
}

#[test]
fn empty_iterations() {
    // (() | A)*: the first iteration is empty, which ends the quantifier: an empty match,
    // though A holds.
    known(
        rep(alt(vec![P::Empty, var(A)]), 0, None, true),
        &["A", "A"],
        SkipMode::PastLastRow,
        false,
        vec![mt(1, 0, ""), mt(2, 1, "")],
    );
    // (B | () | A)*: B, then an empty iteration ends it before A is tried.
    known(
        rep(alt(vec![var(B), P::Empty, var(A)]), 0, None, true),
        &["B", "A"],
        SkipMode::PastLastRow,
        false,
        vec![mt(1, 0, "B"), mt(2, 1, "")],
    );
    // The same with a bounded quantifier.
    known(
        rep(alt(vec![var(B), P::Empty, var(A)]), 0, Some(3), true),
        &["B", "A"],
        SkipMode::PastLastRow,
        false,
        vec![mt(1, 0, "B"), mt(2, 1, "")],
    );
    // (^ | A | B){,2} C: at row 0, ^ is an empty first iteration, which ends the
    // quantifier; so the B of row 0 must be a first iteration, and A can follow.
    known(
        cat(vec![
            rep(alt(vec![P::Start, var(A), var(B)]), 0, Some(2), true),
            var(C),
        ]),
        &["B", "AC", "C"],
        SkipMode::PastLastRow,
        false,
        vec![mt(1, 0, "BAC")],
    );
    // (() | A | B){0,2} C where what holds depends on the previous row's label: "ε B" is
    // not an option (the empty iteration ended the quantifier), so A A C beats B C.
    let after = |s: &str| -> [u8; 3] {
        let t = table(&[s])[0];
        [t, 0, 0]
    };
    known_with(
        cat(vec![
            rep(alt(vec![P::Empty, var(A), var(B)]), 0, Some(2), true),
            var(C),
        ]),
        Cond::Follows {
            table: table(&["AB", "", ""]),
            after: vec![[0; 3], [table(&["A"])[0], table(&["C"])[0], 0], after("C")],
        },
        SkipMode::PastLastRow,
        false,
        vec![mt(1, 0, "AAC")],
        false,
    );
    // (A?){2,3} B: empty iterations count towards the minimum.
    known(
        cat(vec![
            rep(rep(var(A), 0, Some(1), true), 2, Some(3), true),
            var(B),
        ]),
        &["B", "A", "B"],
        SkipMode::PastLastRow,
        false,
        vec![mt(1, 0, "B"), mt(2, 1, "AB")],
    );
    // (A*)*: no endless loop, the inner star takes everything.
    known(
        rep(rep(var(A), 0, None, true), 0, None, true),
        &["A", "A", "B"],
        SkipMode::PastLastRow,
        false,
        vec![mt(1, 0, "AA"), mt(2, 2, "")],
    );
}

#[test]
fn history_dependent_conditions() {
    // A+ B where at most two rows may be A: the third A-row must be the B.
    let cond = Cond::Capped {
        table: table(&["A", "A", "AB", "AB"]),
        cap: [2, 3, 3],
    };
    known_with(
        cat(vec![rep(var(A), 1, None, true), var(B)]),
        cond,
        SkipMode::PastLastRow,
        false,
        vec![mt(1, 0, "AAB")],
        false,
    );
    // A+ while the value rises.
    let cond = Cond::Rising {
        table: table(&["A", "A", "A", "A", "A"]),
        value: vec![1, 2, 3, 1, 4],
    };
    known_with(
        rep(var(A), 1, None, true),
        cond,
        SkipMode::PastLastRow,
        false,
        vec![mt(1, 0, "AAA"), mt(2, 3, "AA")],
        false,
    );
}

/// A timed-out attempt's partial match, as `mt` writes a match.
fn timed_out(start: usize, labels: &str) -> Found {
    let Found::Match(m) = mt(0, start, labels) else {
        unreachable!()
    };
    Found::TimedOut(m)
}

/// `rows` at `times`, WITHIN `within`, timeouts reported; the VM is fed one row at a time.
fn known_timeouts(
    pattern: P,
    rows: &[&str],
    times: &[u8],
    within: u8,
    skip: SkipMode,
    expected: Vec<Found>,
) {
    let n = rows.len();
    let case = Case {
        pattern,
        vars: 3,
        n,
        cond: Cond::Table(table(rows)),
        skip,
        report_unmatched: false,
        times: times.to_vec(),
        within: Some(within),
        timeouts: true,
        schedule: (0..=n).map(|a| (a, false)).collect(),
    };
    known_case(case, expected, false);
}

#[test]
fn timeouts() {
    // Orders (A) and payments (B), WITHIN 15: the order at 0 is paid at 10; the one at 20 is
    // not paid within 15 (its payment at 35 is too late: 35 - 20 is not less than 15), so
    // it times out with A alone; the order at 40 is alive when the partition ends.
    let order_payment = cat(vec![var(A), var(B)]);
    known_timeouts(
        order_payment.clone(),
        &["A", "B", "A", "B", "A"],
        &[0, 10, 20, 35, 40],
        15,
        SkipMode::PastLastRow,
        vec![mt(1, 0, "AB"), timed_out(2, "A"), timed_out(4, "A")],
    );
    // A failed attempt is no timeout: an order followed by another order.
    known_timeouts(
        order_payment,
        &["A", "A", "B"],
        &[0, 1, 2],
        15,
        SkipMode::PastLastRow,
        vec![mt(1, 1, "AB")],
    );
    // A timed-out attempt consumes no row: the next attempt starts at the next row, and the
    // partial match is the preferred one (greedy B+ took both B rows).
    known_timeouts(
        cat(vec![var(A), rep(var(B), 1, None, true), var(C)]),
        &["A", "AB", "B", "C"],
        &[0, 1, 2, 3],
        3,
        SkipMode::PastLastRow,
        vec![timed_out(0, "ABB"), mt(1, 1, "ABC")],
    );
    // A match found before the window closed wins over a preferred path still growing.
    known_timeouts(
        cat(vec![var(A), rep(var(B), 1, None, true)]),
        &["A", "B", "B", "B"],
        &[0, 1, 2, 5],
        5,
        SkipMode::PastLastRow,
        vec![mt(1, 0, "ABB")],
    );
    // The partial match is the preferred path waiting for a row, not one waiting at `$`:
    // `A $` is preferred, but only `C B` could grow.
    known_timeouts(
        alt(vec![cat(vec![var(A), P::End]), cat(vec![var(C), var(B)])]),
        &["AC", "B"],
        &[0, 9],
        5,
        SkipMode::PastLastRow,
        vec![timed_out(0, "C")],
    );
    // Excluded rows are part of the partial match; at the end of the partition, `$` matches.
    known_timeouts(
        alt(vec![
            cat(vec![var(A), P::End]),
            cat(vec![var(A), P::Exclude(Box::new(var(B))), var(C)]),
        ]),
        &["A", "B", "A"],
        &[0, 1, 9],
        5,
        SkipMode::PastLastRow,
        vec![timed_out(0, "Ab"), mt(1, 2, "A")],
    );
}
