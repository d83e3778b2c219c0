//! Java `SimpleDateFormat` patterns (what Flink's `DATE_FORMAT` takes: `'yyyy-MM-dd HH:mm'`)
//! translated into chrono's strftime syntax, which formats the values.

use thiserror::Error;

/// A pattern letter or construct Eddy does not translate.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("date format pattern '{pattern}': {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

/// Translates a Java date pattern into a chrono format string. Letters: `y` year (`yy` two
/// digits), `M` month (`MMM` abbreviated name, `MMMM` full name), `d` day of month, `H` hour
/// 0-23, `h` hour 1-12, `m` minute, `s` second, `SSS`/`SSSSSS`/`SSSSSSSSS` the fraction of a
/// second in 3, 6 or 9 digits, `a` AM/PM, `E` day name (`EEEE` full), `D` day of year, `Z` offset
/// `+0000`; a run of one letter shorter than the field's width is not padded. Text between
/// single quotes is literal (`''` is a quote); other non-letters are literal.
pub fn java_to_chrono(pattern: &str) -> Result<String, PatternError> {
    let error = |reason: String| PatternError {
        pattern: pattern.to_string(),
        reason,
    };
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // Quoted literal text; '' is one quote.
            if chars.get(i + 1) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            let mut j = i + 1;
            loop {
                match chars.get(j) {
                    None => return Err(error("an unterminated quote".to_string())),
                    Some('\'') if chars.get(j + 1) == Some(&'\'') => {
                        out.push('\'');
                        j += 2;
                    }
                    Some('\'') => break,
                    Some(&literal) => {
                        push_literal(&mut out, literal);
                        j += 1;
                    }
                }
            }
            i = j + 1;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            push_literal(&mut out, c);
            i += 1;
            continue;
        }
        let mut run = 1;
        while chars.get(i + run) == Some(&c) {
            run += 1;
        }
        let spec = match (c, run) {
            ('y', 2) => "%y".to_string(),
            ('y', _) => "%Y".to_string(),
            ('M', 1) => "%-m".to_string(),
            ('M', 2) => "%m".to_string(),
            ('M', 3) => "%b".to_string(),
            ('M', _) => "%B".to_string(),
            ('d', 1) => "%-d".to_string(),
            ('d', _) => "%d".to_string(),
            ('D', 1) => "%-j".to_string(),
            ('D', _) => "%j".to_string(),
            ('H', 1) => "%-H".to_string(),
            ('H', _) => "%H".to_string(),
            ('h', 1) => "%-I".to_string(),
            ('h', _) => "%I".to_string(),
            ('m', 1) => "%-M".to_string(),
            ('m', _) => "%M".to_string(),
            ('s', 1) => "%-S".to_string(),
            ('s', _) => "%S".to_string(),
            ('S', n @ (3 | 6 | 9)) => format!("%{n}f"),
            ('a', _) => "%p".to_string(),
            ('E', 1..=3) => "%a".to_string(),
            ('E', _) => "%A".to_string(),
            ('Z', _) => "%z".to_string(),
            (other, n) => {
                return Err(error(format!(
                    "the pattern letter '{}' is not supported",
                    other.to_string().repeat(n)
                )));
            }
        };
        out.push_str(&spec);
        i += run;
    }
    Ok(out)
}

fn push_literal(out: &mut String, c: char) {
    if c == '%' {
        out.push_str("%%");
    } else {
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patterns_flink_queries_use_translate() {
        assert_eq!(java_to_chrono("yyyy-MM-dd").unwrap(), "%Y-%m-%d");
        assert_eq!(java_to_chrono("HH:mm").unwrap(), "%H:%M");
        assert_eq!(
            java_to_chrono("yyyy-MM-dd HH:mm:ss.SSS").unwrap(),
            "%Y-%m-%d %H:%M:%S.%3f"
        );
        assert_eq!(
            java_to_chrono("d MMM yy, h a").unwrap(),
            "%-d %b %y, %-I %p"
        );
        assert_eq!(
            java_to_chrono("EEEE 'at' H'h' 100%").unwrap(),
            "%A at %-Hh 100%%"
        );
        assert_eq!(java_to_chrono("'o''clock'''").unwrap(), "o'clock'");
    }

    #[test]
    fn unknown_letters_and_open_quotes_are_errors() {
        assert!(
            java_to_chrono("yyyy-ww")
                .unwrap_err()
                .reason
                .contains("'ww'")
        );
        assert!(java_to_chrono("'open").is_err());
        assert!(java_to_chrono("ss.SS").is_err());
    }
}
