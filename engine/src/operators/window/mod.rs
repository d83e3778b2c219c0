//! Window definitions and their arithmetic: which windows and which slice a timestamp is in.
//!
//! All times are nanoseconds since the epoch (`i64`). Windows are aligned to the epoch plus
//! their offset, start inclusive, end exclusive (DESIGN.md 1.4). HOP and CUMULATE windows are
//! unions of *slices*: HOP's slices are `gcd(slide, size)` wide, CUMULATE's are one step wide,
//! so a row is aggregated once into its slice and each window combines its slices.

use std::fmt;

/// Nanoseconds in a millisecond: `window_time` is `window_end` minus this.
pub const MILLISECOND: i64 = 1_000_000;

/// Nanoseconds per unit of an Arrow timestamp.
pub fn unit_nanos(unit: datafusion::arrow::datatypes::TimeUnit) -> i64 {
    use datafusion::arrow::datatypes::TimeUnit;
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

/// One kind of window with its sizes, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub enum WindowKind {
    Tumble {
        size: i64,
        offset: i64,
    },
    Hop {
        slide: i64,
        size: i64,
        offset: i64,
    },
    Cumulate {
        step: i64,
        max_size: i64,
        offset: i64,
    },
    /// Per partition key; a session ends `gap` after its last row.
    Session {
        gap: i64,
    },
}

/// A half-open time range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    pub start: i64,
    pub end: i64,
}

impl Span {
    pub fn new(start: i64, end: i64) -> Self {
        Self { start, end }
    }

    /// True once `watermark` closes a window ending here: `watermark >= end - lag`, where
    /// `lag` is the time column's resolution (0 for sessions).
    pub fn closed_by(&self, lag: i64, watermark: Option<i64>) -> bool {
        watermark.is_some_and(|wm| self.end.saturating_sub(lag) <= wm)
    }
}

/// Removes from `windows` the entries `watermark` closes, in window order.
pub fn take_closed<V>(
    windows: &mut std::collections::BTreeMap<Span, V>,
    lag: i64,
    watermark: i64,
) -> Vec<(Span, V)> {
    let closing: Vec<Span> = windows
        .keys()
        .filter(|w| w.closed_by(lag, Some(watermark)))
        .copied()
        .collect();
    closing
        .into_iter()
        .filter_map(|w| windows.remove(&w).map(|v| (w, v)))
        .collect()
}

/// The start of the aligned interval of width `width` (shifted by `offset`) holding `ts`.
pub fn align(ts: i64, width: i64, offset: i64) -> i64 {
    // In i64 where nothing overflows (i128 division is a library call, slow per row); in
    // i128 near the ends of the i64 range.
    if let Some(start) = ts
        .checked_sub(offset)
        .and_then(|shifted| shifted.div_euclid(width).checked_mul(width))
        .and_then(|aligned| aligned.checked_add(offset))
    {
        return start;
    }
    let shifted = ts as i128 - offset as i128;
    (shifted.div_euclid(width as i128) * width as i128 + offset as i128) as i64
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl WindowKind {
    /// The function name as written in SQL.
    pub fn name(&self) -> &'static str {
        match self {
            WindowKind::Tumble { .. } => "TUMBLE",
            WindowKind::Hop { .. } => "HOP",
            WindowKind::Cumulate { .. } => "CUMULATE",
            WindowKind::Session { .. } => "SESSION",
        }
    }

    /// The width of the slices rows are aggregated into (`None` for sessions, whose extent
    /// depends on the rows).
    pub fn slice_width(&self) -> Option<i64> {
        match *self {
            WindowKind::Tumble { size, .. } => Some(size),
            WindowKind::Hop { slide, size, .. } => Some(gcd(slide, size)),
            WindowKind::Cumulate { step, .. } => Some(step),
            WindowKind::Session { .. } => None,
        }
    }

    fn offset(&self) -> i64 {
        match *self {
            WindowKind::Tumble { offset, .. }
            | WindowKind::Hop { offset, .. }
            | WindowKind::Cumulate { offset, .. } => offset,
            WindowKind::Session { .. } => 0,
        }
    }

    /// The slice holding `ts`.
    pub fn slice_of(&self, ts: i64) -> Option<Span> {
        let width = self.slice_width()?;
        let start = align(ts, width, self.offset());
        Some(Span::new(start, start.saturating_add(width)))
    }

    /// The windows that contain the whole of `slice`, in order of their end (then start).
    pub fn windows_of_slice(&self, slice: Span) -> Vec<Span> {
        match *self {
            WindowKind::Tumble { .. } | WindowKind::Session { .. } => vec![slice],
            WindowKind::Hop {
                slide,
                size,
                offset,
            } => {
                // Window starts are aligned to `slide`; a window contains the slice when
                // start <= slice.start and start + size >= slice.end.
                let last = align(slice.start, slide, offset);
                let mut out = Vec::new();
                let mut start = last;
                while start.saturating_add(size) >= slice.end {
                    out.push(Span::new(start, start.saturating_add(size)));
                    start -= slide;
                }
                out.reverse();
                out
            }
            WindowKind::Cumulate {
                step,
                max_size,
                offset,
            } => {
                let block = align(slice.start, max_size, offset);
                let mut out = Vec::new();
                let mut end = block.saturating_add(step);
                let block_end = block.saturating_add(max_size);
                while end <= block_end {
                    if end >= slice.end {
                        out.push(Span::new(block, end));
                    }
                    end = end.saturating_add(step);
                }
                out
            }
        }
    }

    /// The windows a row at `ts` belongs to, in order of their end.
    pub fn windows_of(&self, ts: i64) -> Vec<Span> {
        match self.slice_of(ts) {
            Some(slice) => self.windows_of_slice(slice),
            None => Vec::new(),
        }
    }

    /// The slices a window is made of, in time order.
    pub fn slices_of_window(&self, window: Span) -> Vec<Span> {
        let Some(width) = self.slice_width() else {
            return vec![window];
        };
        let mut out = Vec::new();
        let mut start = window.start;
        while start < window.end {
            out.push(Span::new(start, start.saturating_add(width)));
            start = start.saturating_add(width);
        }
        out
    }

    /// Given one of a window's bounds as carried in a row, the whole window (for rows that
    /// already carry `window_start`/`window_end`). `None` when the bound is not enough.
    pub fn window_from_bounds(&self, start: Option<i64>, end: Option<i64>) -> Option<Span> {
        match (*self, start, end) {
            (_, Some(s), Some(e)) => Some(Span::new(s, e)),
            (WindowKind::Tumble { size, .. }, Some(s), None)
            | (WindowKind::Hop { size, .. }, Some(s), None) => Some(Span::new(s, s + size)),
            (WindowKind::Tumble { size, .. }, None, Some(e))
            | (WindowKind::Hop { size, .. }, None, Some(e)) => Some(Span::new(e - size, e)),
            (
                WindowKind::Cumulate {
                    max_size, offset, ..
                },
                None,
                Some(e),
            ) => Some(Span::new(align(e - 1, max_size, offset), e)),
            _ => None,
        }
    }
}

impl fmt::Display for WindowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |ns: i64| format_duration(ns);
        match *self {
            WindowKind::Tumble { size, offset } => {
                write!(f, "TUMBLE(size={}", d(size))?;
                if offset != 0 {
                    write!(f, ", offset={}", d(offset))?;
                }
            }
            WindowKind::Hop {
                slide,
                size,
                offset,
            } => {
                write!(f, "HOP(slide={}, size={}", d(slide), d(size))?;
                if offset != 0 {
                    write!(f, ", offset={}", d(offset))?;
                }
            }
            WindowKind::Cumulate {
                step,
                max_size,
                offset,
            } => {
                write!(f, "CUMULATE(step={}, max_size={}", d(step), d(max_size))?;
                if offset != 0 {
                    write!(f, ", offset={}", d(offset))?;
                }
            }
            WindowKind::Session { gap } => write!(f, "SESSION(gap={}", d(gap))?,
        }
        write!(f, ")")
    }
}

/// Like [`format_duration`], with a sign for negative durations.
pub fn format_signed_duration(ns: i64) -> String {
    if ns < 0 {
        format!(
            "-{}",
            format_duration(ns.unsigned_abs().min(i64::MAX as u64) as i64)
        )
    } else {
        format_duration(ns)
    }
}

/// `90s`, `10min`, `1h`, `250ms`: the largest unit that divides the duration.
pub fn format_duration(ns: i64) -> String {
    const UNITS: [(i64, &str); 7] = [
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "min"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    if ns == 0 {
        return "0s".to_string();
    }
    for (unit, name) in UNITS {
        if ns % unit == 0 {
            return format!("{}{name}", ns / unit);
        }
    }
    format!("{ns}ns")
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;
    const MIN: i64 = 60 * S;

    fn spans(v: &[(i64, i64)]) -> Vec<Span> {
        v.iter().map(|&(s, e)| Span::new(s, e)).collect()
    }

    #[test]
    fn alignment_in_i64_equals_alignment_in_i128() {
        let wide = |ts: i64, width: i64, offset: i64| {
            let shifted = ts as i128 - offset as i128;
            (shifted.div_euclid(width as i128) * width as i128 + offset as i128) as i64
        };
        for ts in [
            0,
            1,
            -1,
            10 * S - 1,
            -10 * S,
            1_704_067_200_366 * 1_000_000,
            i64::MIN,
            i64::MIN + 1,
            i64::MAX,
            i64::MAX - 5 * S,
        ] {
            for width in [1, 7, 10 * S, MIN, 86_400 * S] {
                for offset in [0, 3 * S, -3 * S] {
                    assert_eq!(
                        align(ts, width, offset),
                        wide(ts, width, offset),
                        "{ts} {width} {offset}"
                    );
                }
            }
        }
    }

    #[test]
    fn tumble_assignment_with_boundaries_offsets_and_negative_times() {
        let t = WindowKind::Tumble {
            size: 10 * S,
            offset: 0,
        };
        assert_eq!(t.windows_of(0), spans(&[(0, 10 * S)]));
        assert_eq!(t.windows_of(10 * S - 1), spans(&[(0, 10 * S)]));
        // A row exactly at a window's end belongs to the next window.
        assert_eq!(t.windows_of(10 * S), spans(&[(10 * S, 20 * S)]));
        // Before the epoch: floor, not truncation towards zero.
        assert_eq!(t.windows_of(-1), spans(&[(-10 * S, 0)]));
        assert_eq!(t.windows_of(-10 * S), spans(&[(-10 * S, 0)]));
        let shifted = WindowKind::Tumble {
            size: 10 * S,
            offset: 3 * S,
        };
        assert_eq!(shifted.windows_of(2 * S), spans(&[(-7 * S, 3 * S)]));
        assert_eq!(shifted.windows_of(3 * S), spans(&[(3 * S, 13 * S)]));
    }

    #[test]
    fn hop_windows_and_slices() {
        // Flink's example: HOP(slide = 5 min, size = 10 min).
        let h = WindowKind::Hop {
            slide: 5 * MIN,
            size: 10 * MIN,
            offset: 0,
        };
        assert_eq!(h.slice_width(), Some(5 * MIN));
        assert_eq!(
            h.windows_of(7 * MIN),
            spans(&[(0, 10 * MIN), (5 * MIN, 15 * MIN)])
        );
        assert_eq!(
            h.windows_of(5 * MIN),
            spans(&[(0, 10 * MIN), (5 * MIN, 15 * MIN)])
        );
        assert_eq!(
            h.slices_of_window(Span::new(5 * MIN, 15 * MIN)),
            spans(&[(5 * MIN, 10 * MIN), (10 * MIN, 15 * MIN)])
        );
        // Slide not dividing size: slices are gcd wide (here 2 s of HOP 4 s / 6 s).
        let odd = WindowKind::Hop {
            slide: 4 * S,
            size: 6 * S,
            offset: 0,
        };
        assert_eq!(odd.slice_width(), Some(2 * S));
        assert_eq!(odd.windows_of(5 * S), spans(&[(0, 6 * S), (4 * S, 10 * S)]));
        assert_eq!(odd.windows_of(7 * S), spans(&[(4 * S, 10 * S)]));
        // Slide larger than size: some rows are in no window.
        let gappy = WindowKind::Hop {
            slide: 10 * S,
            size: 5 * S,
            offset: 0,
        };
        assert_eq!(gappy.windows_of(7 * S), Vec::<Span>::new());
        assert_eq!(gappy.windows_of(-6 * S), spans(&[(-10 * S, -5 * S)]));
    }

    #[test]
    fn cumulate_windows_grow_by_step_within_a_block() {
        let c = WindowKind::Cumulate {
            step: 2 * MIN,
            max_size: 6 * MIN,
            offset: 0,
        };
        assert_eq!(
            c.windows_of(MIN),
            spans(&[(0, 2 * MIN), (0, 4 * MIN), (0, 6 * MIN)])
        );
        assert_eq!(c.windows_of(5 * MIN), spans(&[(0, 6 * MIN)]));
        assert_eq!(
            c.windows_of(6 * MIN),
            spans(&[(6 * MIN, 8 * MIN), (6 * MIN, 10 * MIN), (6 * MIN, 12 * MIN)])
        );
        assert_eq!(
            c.slices_of_window(Span::new(0, 4 * MIN)),
            spans(&[(0, 2 * MIN), (2 * MIN, 4 * MIN)])
        );
        assert_eq!(
            c.window_from_bounds(None, Some(4 * MIN)),
            Some(Span::new(0, 4 * MIN))
        );
        assert_eq!(c.window_from_bounds(Some(0), None), None);
    }

    #[test]
    fn durations_print_in_their_largest_unit() {
        assert_eq!(format_duration(10 * S), "10s");
        assert_eq!(format_duration(90 * S), "90s");
        assert_eq!(format_duration(60 * MIN), "1h");
        assert_eq!(format_duration(1_500_000), "1500us");
    }
}
