//! Row patterns of MATCH_RECOGNIZE: the pattern tree and the program it compiles to.
//!
//! [`Pattern`] is the `PATTERN (...)` clause with `PERMUTE` already expanded; [`Program`] is
//! what the matcher runs (`crate::operators::match_recognize::matcher`): a list of instructions in the
//! style of a backtracking regular-expression VM, where a [`Inst::Fork`] lists its branches in
//! the order the standard prefers them (greedy quantifiers prefer one more iteration,
//! reluctant ones one fewer, alternatives the leftmost).
//!
//! Once a quantifier has its minimum of iterations, an iteration that matches no row ends it:
//! the pattern goes on after the quantifier from there, as if the iteration had been the
//! last (`(A?)*` cannot loop, and `(() | A)*` matches empty, its first alternative). Where
//! the quantified pattern can match no row, its optional iterations are bracketed by
//! [`Inst::BeginIteration`] and [`Inst::EndIteration`] for the matcher to tell.

use std::fmt;

/// Index of a pattern variable (its position in [`Program::variables`]).
pub type VarId = u16;

/// The largest program a pattern may compile to (quantifiers with bounds are expanded).
pub const MAX_INSTRUCTIONS: usize = 100_000;

/// The most items `PERMUTE` may list (its expansion has n! alternatives).
pub const MAX_PERMUTE: usize = 6;

/// A row pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// One row that satisfies the variable's DEFINE condition.
    Var(VarId),
    /// `^`: the start of the partition.
    Start,
    /// `$`: the end of the partition.
    End,
    /// `()`: the empty pattern.
    Empty,
    /// `{- p -}`: rows matched by `p` are left out of ALL ROWS PER MATCH output.
    Exclude(Box<Pattern>),
    Concat(Vec<Pattern>),
    /// Alternatives, preferred left to right.
    Alt(Vec<Pattern>),
    Repeat {
        inner: Box<Pattern>,
        min: u32,
        max: Option<u32>,
        greedy: bool,
    },
}

impl Pattern {
    /// `PERMUTE(p1, ..., pn)`: every order of the items, the orders preferred
    /// lexicographically by the items' positions in the list.
    pub fn permute(items: Vec<Pattern>) -> Result<Pattern, PatternError> {
        if items.len() > MAX_PERMUTE {
            return Err(PatternError(format!(
                "PERMUTE of {} items is too large (at most {MAX_PERMUTE})",
                items.len()
            )));
        }
        let mut orders = Vec::new();
        permutations(&mut (0..items.len()).collect(), 0, &mut orders);
        orders.sort();
        Ok(Pattern::Alt(
            orders
                .into_iter()
                .map(|order| Pattern::Concat(order.into_iter().map(|i| items[i].clone()).collect()))
                .collect(),
        ))
    }

    /// Whether the pattern can match arbitrarily many rows (a `*`, `+` or `{n,}` over a
    /// pattern that consumes rows): the matcher's state is then bounded only by WITHIN.
    pub fn is_unbounded(&self) -> bool {
        match self {
            Pattern::Var(_) | Pattern::Start | Pattern::End | Pattern::Empty => false,
            Pattern::Exclude(p) => p.is_unbounded(),
            Pattern::Concat(ps) | Pattern::Alt(ps) => ps.iter().any(Pattern::is_unbounded),
            Pattern::Repeat { inner, max, .. } => {
                (max.is_none() && inner.consumes_rows()) || inner.is_unbounded()
            }
        }
    }

    /// Whether the pattern can match without consuming a row.
    fn can_match_empty(&self) -> bool {
        match self {
            Pattern::Var(_) => false,
            Pattern::Start | Pattern::End | Pattern::Empty => true,
            Pattern::Exclude(p) => p.can_match_empty(),
            Pattern::Concat(ps) => ps.iter().all(Pattern::can_match_empty),
            Pattern::Alt(ps) => ps.iter().any(Pattern::can_match_empty),
            Pattern::Repeat { inner, min, .. } => *min == 0 || inner.can_match_empty(),
        }
    }

    fn consumes_rows(&self) -> bool {
        match self {
            Pattern::Var(_) => true,
            Pattern::Start | Pattern::End | Pattern::Empty => false,
            Pattern::Exclude(p) => p.consumes_rows(),
            Pattern::Concat(ps) | Pattern::Alt(ps) => ps.iter().any(Pattern::consumes_rows),
            Pattern::Repeat { inner, max, .. } => max != &Some(0) && inner.consumes_rows(),
        }
    }

    /// Writes the pattern with variable names from `names`.
    pub fn display<'a>(&'a self, names: &'a [String]) -> impl fmt::Display + 'a {
        DisplayPattern {
            pattern: self,
            names,
        }
    }
}

fn permutations(items: &mut Vec<usize>, k: usize, out: &mut Vec<Vec<usize>>) {
    if k == items.len() {
        out.push(items.clone());
        return;
    }
    for i in k..items.len() {
        items.swap(k, i);
        permutations(items, k + 1, out);
        items.swap(k, i);
    }
}

struct DisplayPattern<'a> {
    pattern: &'a Pattern,
    names: &'a [String],
}

impl<'a> fmt::Display for DisplayPattern<'a> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sub = |p: &'a Pattern| -> DisplayPattern<'a> {
            DisplayPattern {
                pattern: p,
                names: self.names,
            }
        };
        match self.pattern {
            Pattern::Var(v) => match self.names.get(*v as usize) {
                Some(name) => write!(f, "{name}"),
                None => write!(f, "?{v}"),
            },
            Pattern::Start => write!(f, "^"),
            Pattern::End => write!(f, "$"),
            Pattern::Empty => write!(f, "()"),
            Pattern::Exclude(p) => write!(f, "{{- {} -}}", sub(p)),
            Pattern::Concat(ps) => {
                for (i, p) in ps.iter().enumerate() {
                    if i > 0 {
                        write!(f, " ")?;
                    }
                    match p {
                        Pattern::Alt(_) => write!(f, "({})", sub(p))?,
                        _ => write!(f, "{}", sub(p))?,
                    }
                }
                Ok(())
            }
            Pattern::Alt(ps) => {
                for (i, p) in ps.iter().enumerate() {
                    if i > 0 {
                        write!(f, " | ")?;
                    }
                    write!(f, "{}", sub(p))?;
                }
                Ok(())
            }
            Pattern::Repeat {
                inner,
                min,
                max,
                greedy,
            } => {
                match inner.as_ref() {
                    Pattern::Var(_) | Pattern::Start | Pattern::End | Pattern::Empty => {
                        write!(f, "{}", sub(inner))?
                    }
                    Pattern::Exclude(_) => write!(f, "{}", sub(inner))?,
                    _ => write!(f, "({})", sub(inner))?,
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

/// A pattern that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatternError(pub String);

/// One instruction of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inst {
    /// Consume the current row as `var`; `excluded` rows are left out of ALL ROWS output.
    Label {
        var: VarId,
        excluded: bool,
    },
    /// Continue at each target in turn, the first preferred.
    Fork(Vec<usize>),
    Jump(usize),
    /// An optional iteration of a quantifier whose pattern can match no row begins. `depth`:
    /// how many such iterations enclose this one's pattern, itself included (1 for the
    /// outermost).
    BeginIteration {
        depth: u16,
    },
    /// The iteration begun at the same `depth` ends: when it matched no row, the quantifier
    /// ends too (continue at `exit`); otherwise continue at `next` (the next iteration).
    EndIteration {
        depth: u16,
        next: usize,
        exit: usize,
    },
    /// Continue only at the first row of the partition.
    AssertStart,
    /// Continue only after the last row of the partition.
    AssertEnd,
    Match,
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub insts: Vec<Inst>,
    /// How many variables the pattern names.
    pub variables: usize,
}

impl Program {
    /// Compiles `pattern` over `variables` variables.
    pub fn compile(pattern: &Pattern, variables: usize) -> Result<Program, PatternError> {
        let mut c = Compiler {
            insts: Vec::new(),
            depth: 0,
        };
        c.emit(pattern, false)?;
        c.push(Inst::Match)?;
        Ok(Program {
            insts: c.insts,
            variables,
        })
    }
}

struct Compiler {
    insts: Vec<Inst>,
    /// Optional iterations (bracketed by `BeginIteration`) around the code being emitted.
    depth: u16,
}

impl Compiler {
    fn push(&mut self, inst: Inst) -> Result<usize, PatternError> {
        if self.insts.len() >= MAX_INSTRUCTIONS {
            return Err(PatternError(format!(
                "the pattern is too large: its quantifiers expand to more than \
                 {MAX_INSTRUCTIONS} steps"
            )));
        }
        self.insts.push(inst);
        Ok(self.insts.len() - 1)
    }

    fn emit(&mut self, pattern: &Pattern, excluded: bool) -> Result<(), PatternError> {
        match pattern {
            Pattern::Var(var) => {
                self.push(Inst::Label {
                    var: *var,
                    excluded,
                })?;
            }
            Pattern::Start => {
                self.push(Inst::AssertStart)?;
            }
            Pattern::End => {
                self.push(Inst::AssertEnd)?;
            }
            Pattern::Empty => {}
            Pattern::Exclude(p) => self.emit(p, true)?,
            Pattern::Concat(ps) => {
                for p in ps {
                    self.emit(p, excluded)?;
                }
            }
            Pattern::Alt(ps) => {
                let fork = self.push(Inst::Fork(Vec::new()))?;
                let mut starts = Vec::new();
                let mut jumps = Vec::new();
                for p in ps {
                    starts.push(self.insts.len());
                    self.emit(p, excluded)?;
                    jumps.push(self.push(Inst::Jump(0))?);
                }
                let end = self.insts.len();
                self.insts[fork] = Inst::Fork(starts);
                for j in jumps {
                    self.insts[j] = Inst::Jump(end);
                }
            }
            Pattern::Repeat {
                inner,
                min,
                max,
                greedy,
            } => {
                if let Some(max) = max
                    && max < min
                {
                    return Err(PatternError(format!(
                        "the quantifier {{{min},{max}}} has a lower bound above its upper bound"
                    )));
                }
                // Iterations up to the minimum are needed even when they match no row.
                for _ in 0..*min {
                    self.emit(inner, excluded)?;
                }
                let may_be_empty = inner.can_match_empty();
                match max {
                    None => {
                        // L: Fork(body, exit); body; Jump L; exit:
                        // or, when the body can match no row,
                        // L: Fork(B, exit); B: BeginIteration; body; EndIteration(L, exit); exit:
                        let fork = self.push(Inst::Fork(Vec::new()))?;
                        let end = self.emit_iteration(inner, excluded, may_be_empty)?;
                        if end.is_none() {
                            self.push(Inst::Jump(fork))?;
                        }
                        let exit = self.insts.len();
                        self.insts[fork] = Inst::Fork(order(fork + 1, exit, *greedy));
                        if let Some(end) = end {
                            self.end_iteration(end, fork, exit);
                        }
                    }
                    Some(max) => {
                        // (body (body ...)?)?: every optional iteration may exit to the end.
                        let mut forks = Vec::new();
                        let mut ends = Vec::new();
                        for _ in *min..*max {
                            forks.push(self.push(Inst::Fork(Vec::new()))?);
                            ends.extend(self.emit_iteration(inner, excluded, may_be_empty)?);
                        }
                        let exit = self.insts.len();
                        for fork in forks {
                            self.insts[fork] = Inst::Fork(order(fork + 1, exit, *greedy));
                        }
                        for end in ends {
                            // The next iteration's fork follows (or the exit, after the last).
                            self.end_iteration(end, end + 1, exit);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// One optional iteration of `inner`; when it can match no row, bracketed by
    /// `BeginIteration` and an `EndIteration` whose position is returned, to be completed
    /// by [`Compiler::end_iteration`].
    fn emit_iteration(
        &mut self,
        inner: &Pattern,
        excluded: bool,
        may_be_empty: bool,
    ) -> Result<Option<usize>, PatternError> {
        if !may_be_empty {
            self.emit(inner, excluded)?;
            return Ok(None);
        }
        self.depth = self
            .depth
            .checked_add(1)
            .ok_or_else(|| PatternError("the pattern nests too deeply".into()))?;
        let depth = self.depth;
        self.push(Inst::BeginIteration { depth })?;
        self.emit(inner, excluded)?;
        let end = self.push(Inst::EndIteration {
            depth,
            next: 0,
            exit: 0,
        })?;
        self.depth -= 1;
        Ok(Some(end))
    }

    fn end_iteration(&mut self, end: usize, next: usize, exit: usize) {
        if let Inst::EndIteration { depth, .. } = self.insts[end] {
            self.insts[end] = Inst::EndIteration { depth, next, exit };
        }
    }
}

fn order(body: usize, exit: usize, greedy: bool) -> Vec<usize> {
    if greedy {
        vec![body, exit]
    } else {
        vec![exit, body]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(v: VarId) -> Pattern {
        Pattern::Var(v)
    }

    #[test]
    fn permute_lists_orders_lexicographically() {
        let p = Pattern::permute(vec![var(0), var(1), var(2)]).unwrap();
        let names = ["A", "B", "C"].map(String::from);
        assert_eq!(
            p.display(&names).to_string(),
            "A B C | A C B | B A C | B C A | C A B | C B A"
        );
    }

    #[test]
    fn quantifiers_compile_to_preferred_forks() {
        let p = Pattern::Repeat {
            inner: Box::new(var(0)),
            min: 1,
            max: None,
            greedy: false,
        };
        let program = Program::compile(&p, 1).unwrap();
        assert_eq!(
            program.insts,
            vec![
                Inst::Label {
                    var: 0,
                    excluded: false
                },
                Inst::Fork(vec![4, 2]),
                Inst::Label {
                    var: 0,
                    excluded: false
                },
                Inst::Jump(1),
                Inst::Match,
            ]
        );
    }

    #[test]
    fn iterations_that_may_match_no_row_are_bracketed() {
        // (() | A)*: L: Fork(body, exit); BeginIteration; the alternation; EndIteration.
        let p = Pattern::Repeat {
            inner: Box::new(Pattern::Alt(vec![Pattern::Empty, var(0)])),
            min: 0,
            max: None,
            greedy: true,
        };
        let program = Program::compile(&p, 1).unwrap();
        assert_eq!(
            program.insts,
            vec![
                Inst::Fork(vec![1, 7]),
                Inst::BeginIteration { depth: 1 },
                Inst::Fork(vec![3, 4]),
                Inst::Jump(6),
                Inst::Label {
                    var: 0,
                    excluded: false
                },
                Inst::Jump(6),
                Inst::EndIteration {
                    depth: 1,
                    next: 0,
                    exit: 7
                },
                Inst::Match,
            ]
        );
        // A pattern that always consumes a row needs no brackets: A* is as before.
        let p = Pattern::Repeat {
            inner: Box::new(var(0)),
            min: 0,
            max: None,
            greedy: true,
        };
        let insts = Program::compile(&p, 1).unwrap().insts;
        assert!(
            !insts
                .iter()
                .any(|i| matches!(i, Inst::BeginIteration { .. })),
            "{insts:?}"
        );
    }

    #[test]
    fn huge_bounded_quantifiers_are_refused() {
        let p = Pattern::Repeat {
            inner: Box::new(var(0)),
            min: 0,
            max: Some(1_000_000),
            greedy: true,
        };
        assert!(Program::compile(&p, 1).is_err());
        let bad = Pattern::Repeat {
            inner: Box::new(var(0)),
            min: 3,
            max: Some(2),
            greedy: true,
        };
        assert!(Program::compile(&bad, 1).is_err());
    }

    #[test]
    fn unbounded_patterns_are_recognised() {
        let star = |p: Pattern| Pattern::Repeat {
            inner: Box::new(p),
            min: 0,
            max: None,
            greedy: true,
        };
        assert!(star(var(0)).is_unbounded());
        assert!(!star(Pattern::Empty).is_unbounded());
        assert!(!Pattern::Concat(vec![var(0), var(1)]).is_unbounded());
    }
}
