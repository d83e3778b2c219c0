//! CSV decoding of a byte region of a file into a [`TextBatchBuilder`].
//!
//! Records are parsed by the `csv` crate (`flexible`, so a record with the wrong number of
//! fields is a malformed row rather than a parser error). Columns are matched by position; a
//! record must have exactly one field per declared column. Blank lines (empty or whitespace
//! only) are skipped. A UTF-8 byte order mark at the start of a file is ignored by the caller.
//!
//! Regions arrive in chunks that end at a line break, but a quoted field may contain line
//! breaks, so a chunk's last record may be unfinished. To tell, the region is parsed with one
//! extra "sentinel" byte after it: if the last record is complete the sentinel starts a record
//! of its own; if a quoted field is still open the sentinel lands inside it. An unfinished
//! record is left unconsumed and parsed again with the next chunk.

use ::csv::{ByteRecord, ReaderBuilder};
use datafusion::arrow::record_batch::RecordBatch;
use std::io::Read;

use eddy_engine::connector::{ConnectorError, ConnectorResult};

use super::csv_fast::FastCsv;
use super::decode::TextBatchBuilder;
use super::options::CsvOptions;

/// Parses CSV regions with one dialect.
pub(crate) struct CsvDecoder {
    delimiter: u8,
    quote: Option<u8>,
    /// A byte that is neither the delimiter, the quote nor a line break.
    sentinel: u8,
    /// When the query reads only some columns: how many fields a record has (the declared
    /// columns), and which of them to decode, in output order.
    projection: Option<(usize, Vec<usize>)>,
    /// Arrow's decoder, tried first on each region when it can decode the source exactly.
    fast: Option<FastCsv>,
}

/// Per-file parsing state that outlives a chunk.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CsvFileState {
    /// The next non-blank record is the header and is skipped.
    pub header_pending: bool,
}

impl CsvDecoder {
    pub(crate) fn new(options: &CsvOptions) -> Self {
        let sentinel = [b'x', b'y', b'z']
            .into_iter()
            .find(|b| *b != options.delimiter && Some(*b) != options.quote)
            .unwrap_or(b'x');
        Self {
            delimiter: options.delimiter,
            quote: options.quote,
            sentinel,
            projection: None,
            fast: None,
        }
    }

    /// Tries Arrow's decoder on each region first ([`super::csv_fast`]), when it can decode
    /// this source exactly as the row path does.
    pub(crate) fn with_fast_path(mut self, fast: Option<FastCsv>) -> Self {
        self.fast = fast;
        self
    }

    /// Decodes only the fields `columns` of records with `declared` fields. A value in
    /// another field is never parsed, so it cannot make its row malformed.
    pub(crate) fn with_projection(mut self, declared: usize, columns: Vec<usize>) -> Self {
        self.projection = Some((declared, columns));
        self
    }

    /// Decodes `region` in parts on up to `threads` threads at once, when the parts can be
    /// decoded apart: the fast path takes the region (no quote character, so every record ends
    /// at a line break, and no header to skip) and it is at least [`MIN_PART_BYTES`] a part.
    /// The region is cut at line breaks; the batches keep the file's order. Every part must
    /// decode on the fast path: otherwise (a malformed row somewhere) `None`, and the caller
    /// decodes the region in one piece with [`CsvDecoder::decode`], which reports the bad
    /// rows in file order. Decoding has no side effect until it succeeds, so trying costs
    /// only time.
    pub(crate) fn decode_in_parts(
        &self,
        region: &[u8],
        threads: usize,
        state: &CsvFileState,
    ) -> Option<Vec<RecordBatch>> {
        let fast = self.fast.as_ref()?;
        let parts = threads.min(region.len() / MIN_PART_BYTES);
        if parts < 2 || !fast.accepts(region, state.header_pending) {
            return None;
        }
        let parts = cut_at_line_breaks(region, parts);
        let decoded: Vec<Option<Vec<RecordBatch>>> = std::thread::scope(|scope| {
            let others: Vec<_> = parts[1..]
                .iter()
                .map(|part| scope.spawn(move || fast.decode(part).ok()))
                .collect();
            let first = fast.decode(parts[0]).ok();
            std::iter::once(first)
                .chain(others.into_iter().map(|h| h.join().ok().flatten()))
                .collect()
        });
        let mut batches = Vec::new();
        for part in decoded {
            batches.extend(part?);
        }
        Some(batches)
    }

    /// Decodes the records of `region`, whose first byte is on line `first_line` of the file.
    ///
    /// When `last` is false, `region` ends with a line break and more of the file may follow;
    /// an unfinished last record is then left unconsumed. Returns how many bytes of `region`
    /// were consumed.
    pub(crate) fn decode(
        &self,
        region: &[u8],
        last: bool,
        first_line: u64,
        state: &mut CsvFileState,
        out: &mut TextBatchBuilder<'_>,
    ) -> ConnectorResult<usize> {
        if let Some(fast) = &self.fast
            && fast.accepts(region, state.header_pending)
        {
            // On an error the row path below decodes the region again and reports its bad
            // rows.
            if let Ok(batches) = fast.decode(region) {
                for batch in batches {
                    out.push_batch(batch)?;
                }
                return Ok(region.len());
            }
        }
        let mut builder = ReaderBuilder::new();
        builder
            .delimiter(self.delimiter)
            .has_headers(false)
            .flexible(true);
        match self.quote {
            Some(quote) => builder.quote(quote),
            None => builder.quoting(false),
        };
        let sentinel = [self.sentinel];
        let tail: &[u8] = if last { &[] } else { &sentinel };
        let mut reader = builder.from_reader(region.chain(tail));

        // Each record is decoded only once the next one has been read, since only then is it
        // known to be complete.
        let mut current = ByteRecord::new();
        let mut previous = ByteRecord::new();
        let mut have_previous = false;
        loop {
            match reader.read_byte_record(&mut current) {
                Ok(true) => {
                    if have_previous {
                        // The previous record ends where this one starts.
                        let end = record_start(&current).min(region.len());
                        self.decode_record(&previous, region, end, first_line, state, out)?;
                    }
                    std::mem::swap(&mut current, &mut previous);
                    have_previous = true;
                }
                Ok(false) => break,
                Err(e) => {
                    return Err(ConnectorError::Io(format!(
                        "{}: cannot parse CSV: {e}",
                        out.file()
                    )));
                }
            }
        }
        if !have_previous {
            return Ok(region.len());
        }
        if last {
            self.decode_record(&previous, region, region.len(), first_line, state, out)?;
            return Ok(region.len());
        }
        let start = record_start(&previous);
        if start >= region.len() {
            // The last record is the sentinel: everything before it was complete.
            Ok(region.len())
        } else {
            Ok(start)
        }
    }

    /// Decodes `record`, which ends at byte `end` of `region` (its text is what lies between
    /// its start and `end`, without the line breaks at the end).
    fn decode_record(
        &self,
        record: &ByteRecord,
        region: &[u8],
        end: usize,
        first_line: u64,
        state: &mut CsvFileState,
        out: &mut TextBatchBuilder<'_>,
    ) -> ConnectorResult<()> {
        if record.len() == 1
            && record
                .get(0)
                .is_some_and(|f| f.iter().all(u8::is_ascii_whitespace))
        {
            return Ok(());
        }
        if state.header_pending {
            state.header_pending = false;
            return Ok(());
        }
        let line = record_line(record, region, first_line);
        let start = record_start(record).min(end);
        let raw = trim_line_breaks(&region[start..end]);
        let declared = self.projection.as_ref().map_or(out.columns(), |(n, _)| *n);
        if record.len() != declared {
            out.malformed(
                line,
                &format!("expected {declared} fields, found {}", record.len()),
                Some(raw),
            )?;
            return Ok(());
        }
        match &self.projection {
            None => {
                if let Some(index) = record.iter().position(|f| std::str::from_utf8(f).is_err()) {
                    out.malformed(
                        line,
                        &format!("field {} is not valid UTF-8", index + 1),
                        Some(raw),
                    )?;
                    return Ok(());
                }
                out.push_row(
                    line,
                    raw,
                    record.iter().map(|f| std::str::from_utf8(f).ok()),
                )
            }
            Some((_, columns)) => {
                let field = |i: usize| record.get(i).map(std::str::from_utf8);
                if let Some(&index) = columns.iter().find(|&&i| matches!(field(i), Some(Err(_)))) {
                    out.malformed(
                        line,
                        &format!("field {} is not valid UTF-8", index + 1),
                        Some(raw),
                    )?;
                    return Ok(());
                }
                out.push_row(
                    line,
                    raw,
                    columns.iter().map(|&i| field(i).and_then(Result::ok)),
                )
            }
        }
    }
}

/// The smallest part of a region [`CsvDecoder::decode_in_parts`] hands to a thread of its own.
pub(crate) const MIN_PART_BYTES: usize = 256 * 1024;

/// `region` cut into at most `parts` pieces of about equal size, each but the last ending
/// with a line break.
fn cut_at_line_breaks(region: &[u8], parts: usize) -> Vec<&[u8]> {
    let mut pieces = Vec::with_capacity(parts);
    let mut start = 0;
    for i in 1..parts {
        let target = (region.len() * i / parts).max(start);
        let Some(offset) = region[target..].iter().position(|b| *b == b'\n') else {
            break;
        };
        let end = target + offset + 1;
        if end > start {
            pieces.push(&region[start..end]);
            start = end;
        }
    }
    if start < region.len() {
        pieces.push(&region[start..]);
    }
    pieces
}

/// A record's bytes without the line breaks around it: the blank lines after it, and the
/// `\n` of a `\r\n` before it (the parser ends a record at the `\r`).
fn trim_line_breaks(bytes: &[u8]) -> &[u8] {
    let line_break = |b: &u8| matches!(b, b'\n' | b'\r');
    let start = bytes
        .iter()
        .position(|b| !line_break(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !line_break(b))
        .map_or(start, |p| p + 1);
    &bytes[start..end.max(start)]
}

fn record_start(record: &ByteRecord) -> usize {
    record
        .position()
        .map(|p| usize::try_from(p.byte()).unwrap_or(usize::MAX))
        .unwrap_or(0)
}

/// The line a record starts on. The parser reports the line after the previous record, which
/// is earlier when blank lines come in between.
fn record_line(record: &ByteRecord, region: &[u8], first_line: u64) -> u64 {
    let relative = record.position().map(|p| p.line()).unwrap_or(1);
    let start = record_start(record).min(region.len());
    let blank_lines = region[start..]
        .iter()
        .take_while(|b| matches!(b, b'\n' | b'\r'))
        .filter(|b| **b == b'\n')
        .count() as u64;
    first_line + relative.saturating_sub(1) + blank_lines
}
