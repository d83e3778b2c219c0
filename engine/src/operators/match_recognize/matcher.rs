//! The row-pattern matcher: runs a compiled [`Program`] over one partition's rows, fed
//! incrementally, and reports matches in the order of their first row.
//!
//! Each match attempt starts at one row and runs the program as a Pike VM whose threads are
//! kept in order of preference. Unlike a text regex VM, a thread carries its labelling (which
//! variable each row was matched to), because DEFINE conditions may look at it (`LAST(A.x)`,
//! `SUM(A.x)`); two threads at the same instruction are merged only when the caller says the
//! conditions ignore history ([`PartitionMatcher::new`]'s `merge_threads`). When a thread
//! reaches the end of the pattern, every less preferred thread is cut; the attempt is decided
//! once no more preferred thread is alive. That is the standard's semantics: among all
//! labellings that satisfy the pattern and DEFINE, the first in preference order, found with
//! full backtracking of greedy and reluctant quantifiers.
//!
//! Rows are fed as they become final (the watermark passed them); an attempt that still has
//! live threads waits for the next row, so nothing is ever re-read from the partition's start.
//! The next attempt starts where AFTER MATCH SKIP says.
//!
//! A time bound (WITHIN) closes an attempt's window: at the first row outside it
//! ([`Conditions::in_window`]), when the caller knows no later row can fall inside it
//! ([`PartitionMatcher::expire`]), or at the end of the partition. The threads waiting for a
//! row then die. With timeouts reported ([`PartitionMatcher::report_timeouts`]), an attempt
//! that ends without a match although some of its threads were still waiting for a row when
//! its window closed is reported as [`Found::TimedOut`], with the most preferred of those
//! threads' labellings; like a failed attempt it consumes no row.
//!
//! Between two rows a thread follows the instructions that consume none ([`Inst::Fork`],
//! jumps, anchors) depth first, in order of preference; a state reached a second time at the
//! same row is dropped, the first visit being the preferred one. Besides the instruction, a
//! state tells which of the optional iterations around it (`BeginIteration` ..
//! `EndIteration`) began at this row. Those are the innermost ones up to some depth, since an
//! iteration nested in one that began at this row began there too, so the depth of the
//! outermost one (`entered`) tells them all. An `EndIteration` whose iteration began at this
//! row, having matched no row, ends its quantifier.

use std::sync::Arc;

use crate::error::{EngineError, EngineResult};
use crate::operators::match_recognize::pattern::{Inst, Program, VarId};

const NO_NODE: u32 = u32::MAX;

/// `entered` when no optional iteration around the instruction began at the current row.
const NOT_ENTERED: u16 = u16::MAX;

/// One labelled row of a thread's history: a persistent list shared between threads.
#[derive(Debug, Clone, Copy)]
struct Node {
    var: VarId,
    excluded: bool,
    parent: u32,
}

/// The rows a thread has labelled so far in an attempt, as seen by a DEFINE condition.
#[derive(Clone, Copy)]
pub struct History<'a> {
    nodes: &'a [Node],
    node: u32,
    start: usize,
    len: usize,
}

impl<'a> History<'a> {
    /// The first row of the attempt.
    pub fn start(&self) -> usize {
        self.start
    }

    /// How many rows are labelled.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `(row, variable)` from the last labelled row back to the first.
    pub fn iter_back(&self) -> impl Iterator<Item = (usize, VarId)> + 'a {
        let nodes = self.nodes;
        let mut node = self.node;
        let mut row = self.start + self.len;
        std::iter::from_fn(move || {
            if node == NO_NODE {
                return None;
            }
            let n = nodes[node as usize];
            node = n.parent;
            row -= 1;
            Some((row, n.var))
        })
    }

    /// The variables of the labelled rows, in row order.
    pub fn labels(&self) -> Vec<VarId> {
        let mut labels: Vec<VarId> = self.iter_back().map(|(_, v)| v).collect();
        labels.reverse();
        labels
    }
}

/// Decides DEFINE conditions for the matcher.
pub trait Conditions {
    /// Whether partition row `row` may be labelled `var`, when `history` labels the rows of
    /// the attempt before it.
    fn holds(&mut self, var: VarId, row: usize, history: History<'_>) -> EngineResult<bool>;

    /// [`Conditions::holds`] for every thread waiting for row `row` at once (an implementor
    /// may evaluate them together); the answer for each request, in order.
    fn holds_all(
        &mut self,
        row: usize,
        requests: &[(VarId, History<'_>)],
    ) -> EngineResult<Vec<bool>> {
        requests
            .iter()
            .map(|(var, history)| self.holds(*var, row, *history))
            .collect()
    }

    /// Whether partition row `row` may still belong to the attempt that started at row
    /// `start` (WITHIN). Once a row is outside, so is every later one: the attempt's window
    /// has closed.
    fn in_window(&mut self, _start: usize, _row: usize) -> bool {
        true
    }
}

/// Where the next attempt starts after a match (AFTER MATCH SKIP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipMode {
    PastLastRow,
    ToNextRow,
    /// `TO FIRST v`: the first row labelled with one of these variables (a variable or a
    /// SUBSET); `name` is what the user wrote, for errors.
    ToFirst {
        vars: Vec<VarId>,
        name: String,
    },
    ToLast {
        vars: Vec<VarId>,
        name: String,
    },
}

/// A match: rows `start .. start + labels.len()` of the partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// MATCH_NUMBER(): 1 for the partition's first match. 0 for a timed-out attempt, which
    /// is no match.
    pub number: u64,
    pub start: usize,
    pub labels: Vec<VarId>,
    /// Rows inside `{- ... -}`, per row.
    pub excluded: Vec<bool>,
}

impl Match {
    pub fn end(&self) -> usize {
        self.start + self.labels.len()
    }
}

/// What the matcher reports, in partition order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Match(Match),
    /// A row in no match (reported only for `WITH UNMATCHED ROWS`).
    Unmatched(usize),
    /// An attempt whose window (WITHIN) closed while it could still have grown into a match
    /// and that found none (reported only with [`PartitionMatcher::report_timeouts`]): the
    /// most preferred partial match the window cut off, numbered 0. Its first row is not
    /// also reported as unmatched.
    TimedOut(Match),
}

#[derive(Debug, Clone, Copy)]
struct Thread {
    pc: usize,
    node: u32,
    len: usize,
    /// The depth of the outermost optional iteration around `pc` that began at the thread's
    /// row, or NOT_ENTERED (see the module documentation). Kept across rows only by threads
    /// waiting at `$`: for one waiting for a row, the next row starts afresh.
    entered: u16,
}

/// One attempt to match from a start row.
#[derive(Debug)]
struct Attempt {
    start: usize,
    /// The next row the threads consume.
    pos: usize,
    /// Threads waiting for row `pos`, most preferred first.
    threads: Vec<Thread>,
    /// The most preferred match found so far: (node, len).
    best: Option<(u32, usize)>,
    /// When timeouts are reported and the attempt's window closed while threads waited for a
    /// row: the most preferred of them, (node, len).
    cut: Option<(u32, usize)>,
    nodes: Vec<Node>,
}

impl Attempt {
    /// The labels of thread `t` so far.
    fn history(&self, t: &Thread) -> History<'_> {
        History {
            nodes: &self.nodes,
            node: t.node,
            start: self.start,
            len: t.len,
        }
    }

    /// The labels and exclusions of the `len` rows ending at `node`.
    fn labelling(&self, node: u32, len: usize) -> (Vec<VarId>, Vec<bool>) {
        let mut labels = vec![0; len];
        let mut excluded = vec![false; len];
        let mut n = node;
        for i in (0..len).rev() {
            let entry = self.nodes[n as usize];
            labels[i] = entry.var;
            excluded[i] = entry.excluded;
            n = entry.parent;
        }
        (labels, excluded)
    }
}

/// Matches one partition.
#[derive(Debug)]
pub struct PartitionMatcher {
    program: Arc<Program>,
    skip: SkipMode,
    merge_threads: bool,
    report_unmatched: bool,
    report_timeouts: bool,
    next_start: usize,
    attempt: Option<Attempt>,
    matches: u64,
    /// Rows before this were part of a match.
    covered: usize,
    /// The stamp of the last visit to each state, `pc * depths + slot(entered)`.
    visited: Vec<u32>,
    /// How many values `entered` can take: the deepest `BeginIteration`, plus one.
    depths: usize,
    stamp: u32,
    stack: Vec<Thread>,
}

impl PartitionMatcher {
    /// `merge_threads`: DEFINE conditions depend only on the row (and its neighbours), never
    /// on a thread's history, so threads at the same instruction are interchangeable and the
    /// less preferred one can be dropped.
    pub fn new(
        program: Arc<Program>,
        skip: SkipMode,
        merge_threads: bool,
        report_unmatched: bool,
    ) -> Self {
        let deepest = program
            .insts
            .iter()
            .map(|inst| match inst {
                Inst::BeginIteration { depth } => *depth as usize,
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        let depths = deepest + 1;
        let visited = vec![0; program.insts.len() * depths];
        Self {
            program,
            skip,
            merge_threads,
            report_unmatched,
            report_timeouts: false,
            next_start: 0,
            attempt: None,
            matches: 0,
            covered: 0,
            visited,
            depths,
            stamp: 0,
            stack: Vec::new(),
        }
    }

    /// Reports attempts that time out ([`Found::TimedOut`]): `WITH TIMEOUTS`.
    pub fn report_timeouts(mut self, report: bool) -> Self {
        self.report_timeouts = report;
        self
    }

    /// The first row a pending or future match can include.
    pub fn first_needed_row(&self) -> usize {
        self.attempt.as_ref().map_or(self.next_start, |a| a.start)
    }

    /// The start row of the running attempt, if one is waiting for rows.
    pub fn pending_start(&self) -> Option<usize> {
        self.attempt.as_ref().map(|a| a.start)
    }

    /// The row the running attempt waits for, if one is running.
    pub fn waiting_row(&self) -> Option<usize> {
        self.attempt.as_ref().map(|a| a.pos)
    }

    /// MATCH_NUMBER() of the last match so far (0 before the first).
    pub fn matches(&self) -> u64 {
        self.matches
    }

    /// Rows before this were part of a match (for `WITH UNMATCHED ROWS`).
    pub fn covered(&self) -> usize {
        self.covered
    }

    /// True when an attempt is running and every thread of it waits at `$` (as after
    /// [`PartitionMatcher::expire`] gave up the others).
    pub fn waits_only_at_end(&self) -> bool {
        self.attempt.as_ref().is_some_and(|a| {
            !a.threads.is_empty()
                && a.threads
                    .iter()
                    .all(|t| matches!(self.program.insts.get(t.pc), Some(Inst::AssertEnd)))
        })
    }

    /// Puts a fresh matcher where a checkpointed one was, before any row: the next attempt
    /// starts at row `next_start` (the checkpointed one's [`PartitionMatcher::first_needed_row`]),
    /// after `matches` matches covering the rows before `covered`. Feeding it the rows from
    /// `next_start` on with [`PartitionMatcher::advance`] then rebuilds the running attempt:
    /// the matcher is deterministic, so the replay labels them exactly as the original did.
    pub fn resume(&mut self, next_start: usize, matches: u64, covered: usize) {
        self.attempt = None;
        self.next_start = next_start;
        self.matches = matches;
        self.covered = covered;
    }

    /// Matches as far as the first `available` rows allow (`ended`: there are no more rows).
    pub fn advance(
        &mut self,
        available: usize,
        ended: bool,
        cond: &mut dyn Conditions,
        out: &mut Vec<Found>,
    ) -> EngineResult<()> {
        loop {
            let Some(attempt) = &self.attempt else {
                if self.next_start >= available {
                    return Ok(());
                }
                self.begin(self.next_start);
                continue;
            };
            if attempt.threads.is_empty() {
                self.conclude(out)?;
                continue;
            }
            if attempt.pos < available {
                self.step(cond)?;
            } else if ended {
                self.finish(true);
            } else {
                return Ok(());
            }
        }
    }

    /// Gives up the running attempt's threads that wait for a row (the caller knows no
    /// future row can satisfy them, e.g. WITHIN has expired: the attempt's window closed),
    /// keeping its best match.
    pub fn expire(&mut self, out: &mut Vec<Found>) -> EngineResult<()> {
        if self.attempt.is_some() {
            self.finish(false);
            if self.attempt.as_ref().is_some_and(|a| a.threads.is_empty()) {
                self.conclude(out)?;
            }
        }
        Ok(())
    }

    fn begin(&mut self, start: usize) {
        let mut attempt = Attempt {
            start,
            pos: start,
            threads: Vec::new(),
            best: None,
            cut: None,
            nodes: Vec::new(),
        };
        self.new_stamp();
        let mut threads = Vec::new();
        let first = Thread {
            pc: 0,
            node: NO_NODE,
            len: 0,
            entered: NOT_ENTERED,
        };
        self.closure(&mut attempt, first, start, None, &mut threads);
        attempt.threads = threads;
        self.attempt = Some(attempt);
    }

    fn new_stamp(&mut self) {
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.visited.iter_mut().for_each(|v| *v = 0);
            self.stamp = 1;
        }
    }

    /// Follows the instructions that consume no row from `from`, in order of preference,
    /// adding the threads that wait for a row to `out`. Returns true when a match cut the
    /// rest. `at_end`: Some(true) when the partition has ended at `pos` (`$` holds), None
    /// while more rows may come.
    fn closure(
        &mut self,
        attempt: &mut Attempt,
        from: Thread,
        pos: usize,
        at_end: Option<bool>,
        out: &mut Vec<Thread>,
    ) -> bool {
        if !self.merge_threads {
            self.new_stamp();
        }
        self.stack.clear();
        self.stack.push(from);
        while let Some(t) = self.stack.pop() {
            let slot = if t.entered == NOT_ENTERED {
                0
            } else {
                t.entered as usize
            };
            let state = t.pc * self.depths + slot;
            if self.visited[state] == self.stamp {
                continue;
            }
            self.visited[state] = self.stamp;
            let at = |pc: usize| Thread { pc, ..t };
            match &self.program.insts[t.pc] {
                Inst::Label { .. } => {
                    if at_end.is_none() {
                        out.push(t);
                    }
                }
                Inst::Fork(targets) => {
                    for &target in targets.iter().rev() {
                        self.stack.push(at(target));
                    }
                }
                Inst::Jump(target) => self.stack.push(at(*target)),
                Inst::BeginIteration { depth } => self.stack.push(Thread {
                    pc: t.pc + 1,
                    entered: t.entered.min(*depth),
                    ..t
                }),
                &Inst::EndIteration { depth, next, exit } => {
                    if t.entered <= depth {
                        // The iteration began at this row: it matched no row, and ends the
                        // quantifier. Outside it, iterations begun here are the outer ones.
                        let entered = if t.entered == depth {
                            NOT_ENTERED
                        } else {
                            t.entered
                        };
                        self.stack.push(Thread {
                            pc: exit,
                            entered,
                            ..t
                        });
                    } else {
                        // Only iterations around this one can have begun at this row.
                        debug_assert_eq!(t.entered, NOT_ENTERED);
                        self.stack.push(at(next));
                    }
                }
                Inst::AssertStart => {
                    if pos == 0 {
                        self.stack.push(at(t.pc + 1));
                    }
                }
                Inst::AssertEnd => match at_end {
                    Some(true) => self.stack.push(at(t.pc + 1)),
                    Some(false) => {}
                    None => out.push(t),
                },
                Inst::Match => {
                    attempt.best = Some((t.node, t.len));
                    self.stack.clear();
                    return true;
                }
            }
        }
        false
    }

    fn step(&mut self, cond: &mut dyn Conditions) -> EngineResult<()> {
        if let Some(attempt) = &self.attempt
            && !cond.in_window(attempt.start, attempt.pos)
        {
            // The row is outside the attempt's window: the threads waiting for a row die
            // (those at `$` die below, as a row exists).
            self.finish(false);
        }
        let Some(mut attempt) = self.attempt.take() else {
            return Ok(());
        };
        let row = attempt.pos;
        let threads = std::mem::take(&mut attempt.threads);
        // Conditions that ignore history are cheap lookups, asked one thread at a time (a
        // match cuts the asking short). Others are asked for every waiting thread together:
        // a condition depends only on its own thread's history, so the answers are the same.
        let mut answers = if self.merge_threads {
            None
        } else {
            let requests: Vec<(VarId, History<'_>)> = threads
                .iter()
                .filter_map(|t| match self.program.insts[t.pc] {
                    Inst::Label { var, .. } => Some((var, attempt.history(t))),
                    _ => None,
                })
                .collect();
            Some(cond.holds_all(row, &requests)?.into_iter())
        };
        let mut next = Vec::with_capacity(threads.len());
        self.new_stamp();
        for t in threads {
            let Inst::Label { var, excluded } = self.program.insts[t.pc] else {
                // `$` before a row that exists: the thread dies.
                continue;
            };
            let holds = match &mut answers {
                Some(answers) => answers.next().unwrap_or(false),
                None => cond.holds(var, row, attempt.history(&t))?,
            };
            if holds && self.advance_thread(&mut attempt, t, var, excluded, row, &mut next) {
                break;
            }
        }
        attempt.pos = row + 1;
        attempt.threads = next;
        self.attempt = Some(attempt);
        Ok(())
    }

    /// Labels row `row` for thread `t` and follows it to the threads waiting for the next
    /// row; true when it reached a match that cuts the less preferred threads.
    fn advance_thread(
        &mut self,
        attempt: &mut Attempt,
        t: Thread,
        var: VarId,
        excluded: bool,
        row: usize,
        next: &mut Vec<Thread>,
    ) -> bool {
        attempt.nodes.push(Node {
            var,
            excluded,
            parent: t.node,
        });
        let node = (attempt.nodes.len() - 1) as u32;
        let after = Thread {
            pc: t.pc + 1,
            node,
            len: t.len + 1,
            entered: NOT_ENTERED,
        };
        self.closure(attempt, after, row + 1, None, next)
    }

    /// No row will come for the waiting threads (the attempt's window closed, or the
    /// partition `ended`): a thread at `$` goes on when the partition ended, every other one
    /// dies. With timeouts reported, the most preferred thread waiting for a row is kept as
    /// the attempt's partial match (the first closing counts: later ones find only `$`).
    fn finish(&mut self, ended: bool) {
        let Some(mut attempt) = self.attempt.take() else {
            return;
        };
        let threads = std::mem::take(&mut attempt.threads);
        if self.report_timeouts && attempt.cut.is_none() {
            attempt.cut = threads
                .iter()
                .find(|t| matches!(self.program.insts[t.pc], Inst::Label { .. }))
                .map(|t| (t.node, t.len));
        }
        let mut kept = Vec::new();
        let pos = attempt.pos;
        self.new_stamp();
        for t in threads {
            match self.program.insts[t.pc] {
                Inst::AssertEnd if ended => {
                    let mut none = Vec::new();
                    let after = Thread { pc: t.pc + 1, ..t };
                    if self.closure(&mut attempt, after, pos, Some(true), &mut none) {
                        break;
                    }
                }
                // The partition may still end here: `$` waits.
                Inst::AssertEnd => kept.push(t),
                _ => {}
            }
        }
        attempt.threads = kept;
        self.attempt = Some(attempt);
    }

    /// The attempt has no live thread: report its match (or the unmatched row) and start
    /// the next one where AFTER MATCH SKIP says.
    fn conclude(&mut self, out: &mut Vec<Found>) -> EngineResult<()> {
        let Some(attempt) = self.attempt.take() else {
            return Ok(());
        };
        let start = attempt.start;
        let Some((node, len)) = attempt.best else {
            if let Some((node, len)) = attempt.cut {
                let (labels, excluded) = attempt.labelling(node, len);
                out.push(Found::TimedOut(Match {
                    number: 0,
                    start,
                    labels,
                    excluded,
                }));
            } else if self.report_unmatched && start >= self.covered {
                out.push(Found::Unmatched(start));
            }
            self.next_start = start + 1;
            return Ok(());
        };
        let (labels, excluded) = attempt.labelling(node, len);
        self.matches += 1;
        let found = Match {
            number: self.matches,
            start,
            labels,
            excluded,
        };
        let end = found.end();
        self.next_start = match &self.skip {
            // An empty match resumes at the next row, whatever the skip mode.
            _ if found.labels.is_empty() => start + 1,
            SkipMode::PastLastRow => end.max(start + 1),
            SkipMode::ToNextRow => start + 1,
            SkipMode::ToFirst { vars, name } | SkipMode::ToLast { vars, name } => {
                let mut rows = found
                    .labels
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| vars.contains(v))
                    .map(|(i, _)| start + i);
                let row = if matches!(self.skip, SkipMode::ToFirst { .. }) {
                    rows.next()
                } else {
                    rows.next_back()
                };
                match row {
                    None => {
                        return Err(EngineError::Data(format!(
                            "AFTER MATCH SKIP TO {name}: match {} has no row labelled {name}",
                            found.number
                        )));
                    }
                    Some(r) if r == start => {
                        return Err(EngineError::Data(format!(
                            "AFTER MATCH SKIP TO {name}: match {} would restart at its own \
                             first row (an endless loop)",
                            found.number
                        )));
                    }
                    Some(r) => r,
                }
            }
        };
        self.covered = self.covered.max(end);
        out.push(Found::Match(found));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::match_recognize::pattern::Pattern;

    /// Conditions given as a table: `rows[r]` lists the variables row r satisfies.
    struct Table(Vec<Vec<VarId>>);

    impl Conditions for Table {
        fn holds(&mut self, var: VarId, row: usize, _: History<'_>) -> EngineResult<bool> {
            Ok(self.0[row].contains(&var))
        }
    }

    fn rep(p: Pattern, min: u32, max: Option<u32>, greedy: bool) -> Pattern {
        Pattern::Repeat {
            inner: Box::new(p),
            min,
            max,
            greedy,
        }
    }

    fn run(pattern: &Pattern, rows: Vec<Vec<VarId>>, skip: SkipMode) -> Vec<(usize, Vec<VarId>)> {
        let program = Arc::new(Program::compile(pattern, 3).unwrap());
        let n = rows.len();
        let mut cond = Table(rows);
        let mut m = PartitionMatcher::new(program, skip, false, false);
        let mut out = Vec::new();
        for available in 1..=n {
            m.advance(available, false, &mut cond, &mut out).unwrap();
        }
        m.advance(n, true, &mut cond, &mut out).unwrap();
        out.into_iter()
            .map(|f| match f {
                Found::Match(m) | Found::TimedOut(m) => (m.start, m.labels),
                Found::Unmatched(r) => (r, vec![]),
            })
            .collect()
    }

    #[test]
    fn greedy_backtracks_to_let_the_last_variable_match() {
        // A B+ C where the last B-row is also the only C-row: B+ gives it back.
        let p = Pattern::Concat(vec![
            Pattern::Var(0),
            rep(Pattern::Var(1), 1, None, true),
            Pattern::Var(2),
        ]);
        let rows = vec![vec![0], vec![1], vec![1, 2], vec![0]];
        assert_eq!(
            run(&p, rows, SkipMode::PastLastRow),
            vec![(0, vec![0, 1, 2])]
        );
    }

    #[test]
    fn reluctant_takes_as_few_as_possible() {
        let p = Pattern::Concat(vec![rep(Pattern::Var(0), 1, None, false), Pattern::Var(1)]);
        let rows = vec![vec![0, 1], vec![0, 1], vec![0, 1]];
        assert_eq!(
            run(&p, rows, SkipMode::ToNextRow),
            vec![(0, vec![0, 1]), (1, vec![0, 1])]
        );
    }

    #[test]
    fn empty_matches_advance_one_row() {
        let p = rep(Pattern::Var(0), 0, None, true);
        let rows = vec![vec![1], vec![0], vec![0]];
        assert_eq!(
            run(&p, rows, SkipMode::PastLastRow),
            vec![(0, vec![]), (1, vec![0, 0])]
        );
    }

    #[test]
    fn an_empty_iteration_ends_the_quantifier() {
        let a_or_empty = |min, max| {
            let body = Pattern::Alt(vec![Pattern::Empty, Pattern::Var(0)]);
            rep(body, min, max, true)
        };
        // (() | A)* and (() | A){0,3}: the first iteration prefers to match no row, which
        // ends the quantifier: an empty match, though A holds. (The VM used to drop such a
        // path under `*` and go on to A, and to keep iterating under `{0,3}`.)
        for max in [None, Some(3)] {
            assert_eq!(
                run(
                    &a_or_empty(0, max),
                    vec![vec![0], vec![0]],
                    SkipMode::PastLastRow
                ),
                vec![(0, vec![]), (1, vec![])],
                "max {max:?}"
            );
        }
        // Up to the minimum, empty iterations count: (A?){2,3} B matches a lone B.
        let p = Pattern::Concat(vec![
            rep(rep(Pattern::Var(0), 0, Some(1), true), 2, Some(3), true),
            Pattern::Var(1),
        ]);
        assert_eq!(
            run(&p, vec![vec![1]], SkipMode::PastLastRow),
            vec![(0, vec![1])]
        );
        // (B | () | A)*: B, then an empty iteration ends it before A is tried.
        let p = rep(
            Pattern::Alt(vec![Pattern::Var(1), Pattern::Empty, Pattern::Var(0)]),
            0,
            None,
            true,
        );
        assert_eq!(
            run(&p, vec![vec![1], vec![0]], SkipMode::PastLastRow),
            vec![(0, vec![1]), (1, vec![])]
        );
        // (^ | A | B){,2} C: at row 0 `^` is an empty first iteration; the B of row 0 must
        // then be the first iteration, and A the second. (The VM used to match B C, taking
        // `^` as the first iteration and B as the second.)
        let p = Pattern::Concat(vec![
            rep(
                Pattern::Alt(vec![Pattern::Start, Pattern::Var(0), Pattern::Var(1)]),
                0,
                Some(2),
                true,
            ),
            Pattern::Var(2),
        ]);
        assert_eq!(
            run(
                &p,
                vec![vec![1], vec![0, 2], vec![2]],
                SkipMode::PastLastRow
            ),
            vec![(0, vec![1, 0, 2])]
        );
    }

    #[test]
    fn nested_empty_iterations_end_only_their_own_quantifier() {
        // (B (() | A)*)*: in each outer iteration the inner star's first iteration matches
        // no row and ends the inner star, not the outer one, whose iterations matched B.
        let inner = rep(
            Pattern::Alt(vec![Pattern::Empty, Pattern::Var(0)]),
            0,
            None,
            true,
        );
        let p = rep(Pattern::Concat(vec![Pattern::Var(1), inner]), 0, None, true);
        assert_eq!(
            run(&p, vec![vec![1], vec![1], vec![0]], SkipMode::PastLastRow),
            vec![(0, vec![1, 1]), (2, vec![])]
        );
        // (A* B*)*: the outer star goes on while its iterations match rows.
        let p = rep(
            Pattern::Concat(vec![
                rep(Pattern::Var(0), 0, None, true),
                rep(Pattern::Var(1), 0, None, true),
            ]),
            0,
            None,
            true,
        );
        assert_eq!(
            run(
                &p,
                vec![vec![0], vec![1], vec![0], vec![2]],
                SkipMode::PastLastRow
            ),
            vec![(0, vec![0, 1, 0]), (3, vec![])]
        );
    }

    #[test]
    fn end_anchor_waits_for_the_end_of_the_partition() {
        let p = Pattern::Concat(vec![Pattern::Var(0), Pattern::End]);
        let rows = vec![vec![0], vec![0], vec![0]];
        assert_eq!(run(&p, rows, SkipMode::PastLastRow), vec![(2, vec![0])]);
    }

    #[test]
    fn skip_to_first_row_of_the_match_is_an_error() {
        let program = Arc::new(
            Program::compile(&Pattern::Concat(vec![Pattern::Var(0), Pattern::Var(1)]), 2).unwrap(),
        );
        let skip = SkipMode::ToFirst {
            vars: vec![0],
            name: "A".into(),
        };
        let mut m = PartitionMatcher::new(program, skip, true, false);
        let mut cond = Table(vec![vec![0], vec![1]]);
        let err = m.advance(2, true, &mut cond, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("endless loop"), "{err}");
    }
}
