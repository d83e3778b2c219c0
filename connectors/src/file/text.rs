//! Chunked reading of one text file (CSV or JSON lines), resumable after new data is appended.
//!
//! A [`TextCursor`] remembers how far its file has been read. Each [`TextCursor::step`] opens
//! the file, reads up to [`CHUNK_BYTES`] from there, decodes every complete line (or CSV
//! record) and keeps the unfinished rest for the next step. At the end of a bounded read the
//! unfinished rest — a last line without a line break — is decoded too; while following, it
//! waits for its line break. Steps do blocking I/O: run them on a blocking thread.
//!
//! With several decode threads (the query's parallelism) a step reads a chunk per thread and,
//! when the CSV decoder can cut the region at line breaks ([`CsvDecoder::decode_in_parts`]),
//! decodes the parts at once; the batches keep the file's order.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use eddy_engine::connector::{ConnectorError, ConnectorResult};

use super::csv::{CsvDecoder, CsvFileState};
use super::decode::{DecodeConfig, TextBatchBuilder};
use super::json::JsonDecoder;

/// Bytes read from a file per step.
pub(crate) const CHUNK_BYTES: usize = 1 << 20;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The decoder of a text format.
pub(crate) enum TextDecoder {
    Csv(CsvDecoder),
    Json(JsonDecoder),
}

/// What a step achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// There is more to read right now.
    More,
    /// Everything the file holds now has been read; more may be appended (follow mode).
    CaughtUp,
    /// The file has been read to its end and will not be read again.
    Done,
}

/// The result of one step over a file.
pub(crate) struct StepOutput {
    pub batches: Vec<RecordBatch>,
    pub progress: Progress,
    /// Whether the step read any bytes (a following source sleeps only after a round that
    /// read nothing).
    pub read_bytes: bool,
    /// Rows of the file the step passed over without producing them (well-formed rows a
    /// restored source had already read, skipped without decoding).
    pub skipped: u64,
}

/// Reading position in one text file.
pub(crate) struct TextCursor {
    path: PathBuf,
    display: Arc<str>,
    /// Bytes read from the file so far, including `pending`.
    read_offset: u64,
    /// Bytes read but not decoded yet: an unfinished line or record.
    pending: Vec<u8>,
    /// The line number of `pending[0]`.
    line: u64,
    /// Nothing has been decoded yet (a byte order mark may still be skipped).
    at_start: bool,
    header: bool,
    csv: CsvFileState,
}

impl TextCursor {
    /// A cursor at the start of `path`; `header` skips the first CSV record.
    pub(crate) fn new(path: PathBuf, display: Arc<str>, header: bool) -> Self {
        Self {
            path,
            display,
            read_offset: 0,
            pending: Vec::new(),
            line: 1,
            at_start: true,
            header,
            csv: CsvFileState {
                header_pending: header,
            },
        }
    }

    /// Bytes of the file read so far: the file has new data when it is longer.
    pub(crate) fn read_offset(&self) -> u64 {
        self.read_offset
    }

    /// Reads and decodes the next chunk, one per thread of `threads`. `follow` keeps an
    /// unfinished last line for later instead of decoding it at the end of the file.
    /// `covered`: how many of the well-formed rows the step produces a restored checkpoint
    /// already covers.
    pub(crate) fn step(
        &mut self,
        decoder: &TextDecoder,
        config: &DecodeConfig,
        follow: bool,
        threads: usize,
        covered: u64,
    ) -> ConnectorResult<StepOutput> {
        let name = Arc::clone(&self.display);
        let io_error = |e: std::io::Error| ConnectorError::Io(format!("cannot read '{name}': {e}"));
        let mut file = File::open(&self.path).map_err(io_error)?;
        let length = file.metadata().map_err(io_error)?.len();
        let mut read_bytes = false;
        if length < self.read_offset {
            // Like `tail -F`: a file that shrank was replaced or truncated; read it anew.
            tracing::warn!("'{name}' was truncated; reading it from the start");
            *self = Self::new(self.path.clone(), Arc::clone(&self.display), self.header);
            read_bytes = true;
        }
        file.seek(SeekFrom::Start(self.read_offset))
            .map_err(io_error)?;

        let mut out = TextBatchBuilder::new(config, &name, covered);
        let chunk = CHUNK_BYTES * threads.max(1);
        let progress = loop {
            let before = self.pending.len();
            (&mut file)
                .take(chunk as u64)
                .read_to_end(&mut self.pending)
                .map_err(io_error)?;
            let read = self.pending.len() - before;
            read_bytes |= read > 0;
            self.read_offset += read as u64;
            let at_eof = read < chunk;
            let last = at_eof && !follow;

            if self.at_start
                && (last
                    || self.pending.len() >= UTF8_BOM.len()
                    || !UTF8_BOM.starts_with(&self.pending))
            {
                if self.pending.starts_with(UTF8_BOM) {
                    self.pending.drain(..UTF8_BOM.len());
                }
                self.at_start = false;
            }

            let region_end = if last {
                self.pending.len()
            } else {
                self.pending
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |p| p + 1)
            };
            let consumed = if region_end == 0 {
                0
            } else {
                let region = &self.pending[..region_end];
                match decoder {
                    TextDecoder::Csv(csv) => {
                        match csv.decode_in_parts(region, threads, &self.csv) {
                            Some(batches) => {
                                for batch in batches {
                                    out.push_batch(batch)?;
                                }
                                region.len()
                            }
                            None => csv.decode(region, last, self.line, &mut self.csv, &mut out)?,
                        }
                    }
                    TextDecoder::Json(json) => json.decode(region, self.line, &mut out)?,
                }
            };
            self.line += count_line_breaks(&self.pending[..consumed]);
            self.pending.drain(..consumed);

            if last {
                break Progress::Done;
            }
            if at_eof {
                break Progress::CaughtUp;
            }
            if consumed > 0 {
                break Progress::More;
            }
            // A line or record longer than a chunk: read on.
        };
        Ok(StepOutput {
            batches: out.finish()?,
            progress,
            read_bytes,
            skipped: 0,
        })
    }
}

/// The line breaks in `bytes`. Counted a block of at most 255 bytes at a time into a byte-wide
/// sum, which the compiler turns into vector instructions (a plain count of a filter is
/// several times slower: it was a twentieth of the cost of reading a CSV file).
fn count_line_breaks(bytes: &[u8]) -> u64 {
    bytes
        .chunks(255)
        .map(|block| {
            let breaks: u8 = block.iter().map(|b| u8::from(*b == b'\n')).sum();
            u64::from(breaks)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::count_line_breaks;

    #[test]
    fn line_breaks_are_counted_across_blocks() {
        let text: Vec<u8> = (0..10_000u32)
            .map(|i| if i % 7 == 0 { b'\n' } else { b'a' })
            .collect();
        for len in [0, 1, 254, 255, 256, 511, 10_000] {
            let expected = text[..len].iter().filter(|b| **b == b'\n').count() as u64;
            assert_eq!(count_line_breaks(&text[..len]), expected, "{len} bytes");
        }
    }
}
