//! Mutations of an input: libFuzzer-style byte mutations, and token-level ones for text
//! targets (SQL) that keep the input looking like SQL while changing its structure.

use crate::rng::Rng;

/// Inputs never grow past this many bytes (libFuzzer's `-max_len` analogue).
pub const MAX_LEN: usize = 64 * 1024;

/// Byte values that tend to hit boundaries of parsers and length fields.
const INTERESTING: &[&[u8]] = &[
    b"\0",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\xff\xff\xff\xff",
    b"\x7f\xff\xff\xff",
    b"\0\0\0\0",
    b"\0\0\0\x04",
    b"\"",
    b"'",
    b",",
    b"\n",
    b"\r\n",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\\",
    b"-1",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"1e308",
    b"NaN",
    b"null",
    b"\xc3\xa9",
    b"\xf0\x9f\x98\x80",
];

/// One to four random byte mutations of `input`; `other` is a second corpus entry to splice in.
pub fn mutate_bytes(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        byte_mutation(rng, &mut out, other);
    }
    out.truncate(MAX_LEN);
    out
}

fn byte_mutation(rng: &mut Rng, out: &mut Vec<u8>, other: &[u8]) {
    let len = out.len();
    match rng.below(9) {
        0 if len > 0 => {
            let i = rng.below(len);
            out[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            out[i] = rng.below(256) as u8;
        }
        2 => {
            let i = rng.below(len + 1);
            let bytes: Vec<u8> = (0..1 + rng.below(8))
                .map(|_| rng.below(256) as u8)
                .collect();
            out.splice(i..i, bytes);
        }
        3 => {
            let i = rng.below(len + 1);
            let bytes = INTERESTING[rng.below(INTERESTING.len())];
            out.splice(i..i, bytes.iter().copied());
        }
        4 if len > 0 => {
            let i = rng.below(len);
            let n = 1 + rng.below((len - i).min(32));
            out.drain(i..i + n);
        }
        5 if len > 0 => {
            // Duplicate a range (repetition finds quadratic and unbounded paths).
            let i = rng.below(len);
            let n = 1 + rng.below((len - i).min(64));
            let copy = out[i..i + n].to_vec();
            let at = rng.below(len + 1);
            for _ in 0..1 + rng.below(4) {
                out.splice(at..at, copy.iter().copied());
            }
        }
        6 if !other.is_empty() => {
            // Splice: a prefix of this input, a suffix of the other.
            let cut = rng.below(len + 1);
            let from = rng.below(other.len());
            out.truncate(cut);
            out.extend_from_slice(&other[from..]);
        }
        7 if !other.is_empty() => {
            let from = rng.below(other.len());
            let n = 1 + rng.below((other.len() - from).min(64));
            let at = rng.below(len + 1);
            out.splice(at..at, other[from..from + n].iter().copied());
        }
        _ if len > 1 => {
            let i = rng.below(len);
            let j = rng.below(len);
            out.swap(i, j);
        }
        _ => out.push(rng.below(256) as u8),
    }
}

/// Splits text into tokens: words, quoted strings, numbers, whitespace runs, single symbols.
/// Concatenating the tokens gives the text back.
pub fn tokens(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        let mut end = start + c.len_utf8();
        let same = |d: char| -> bool {
            if c.is_alphanumeric() || c == '_' {
                d.is_alphanumeric() || d == '_' || d == '.'
            } else if c.is_whitespace() {
                d.is_whitespace()
            } else {
                false
            }
        };
        if c == '\'' || c == '"' {
            for (i, d) in chars.by_ref() {
                end = i + d.len_utf8();
                if d == c {
                    break;
                }
            }
        } else {
            while let Some(&(i, d)) = chars.peek() {
                if !same(d) {
                    break;
                }
                end = i + d.len_utf8();
                chars.next();
            }
        }
        out.push(&text[start..end]);
    }
    out
}

/// One to three token-level mutations: a token replaced by, or a new one inserted from,
/// `dictionary`; a token deleted, duplicated or swapped; a run of tokens spliced in from
/// `other`.
pub fn mutate_tokens(rng: &mut Rng, input: &[u8], other: &[u8], dictionary: &[&str]) -> Vec<u8> {
    let text = String::from_utf8_lossy(input);
    let other = String::from_utf8_lossy(other);
    let mut toks: Vec<String> = tokens(&text).into_iter().map(str::to_string).collect();
    let other_toks = tokens(&other);
    for _ in 0..1 + rng.below(3) {
        let len = toks.len();
        match rng.below(6) {
            0 if len > 0 => {
                let i = rng.below(len);
                toks[i] = rng.pick(dictionary).to_string();
            }
            1 => {
                let i = rng.below(len + 1);
                toks.insert(i, format!(" {} ", rng.pick(dictionary)));
            }
            2 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(6));
                toks.drain(i..i + n);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(12));
                let copy: Vec<String> = toks[i..i + n].to_vec();
                let at = rng.below(len + 1);
                toks.splice(at..at, copy);
            }
            4 if !other_toks.is_empty() => {
                let from = rng.below(other_toks.len());
                let n = 1 + rng.below((other_toks.len() - from).min(16));
                let at = rng.below(len + 1);
                let cut = (at + rng.below(4)).min(len);
                toks.splice(
                    at..cut,
                    other_toks[from..from + n].iter().map(|t| t.to_string()),
                );
            }
            _ if len > 1 => {
                let i = rng.below(len);
                let j = rng.below(len);
                toks.swap(i, j);
            }
            _ => toks.push(rng.pick(dictionary).to_string()),
        }
    }
    let mut out = toks.concat().into_bytes();
    out.truncate(MAX_LEN);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_concatenate_back_to_the_text() {
        let text = "SELECT a.b, 'it''s' FROM t WHERE x >= 10 -- é\n";
        assert_eq!(tokens(text).concat(), text);
        assert!(tokens(text).contains(&"a.b"));
    }

    #[test]
    fn mutations_are_deterministic_for_a_seed() {
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..50)
                .map(|_| mutate_bytes(&mut rng, b"SELECT 1", b"abc"))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }
}
