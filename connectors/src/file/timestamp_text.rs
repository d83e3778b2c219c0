//! Timestamps from text, fast for the form files usually hold.
//!
//! Arrow's CSV decoder parses every timestamp with `string_to_datetime`, which accepts many
//! forms (time zones, offsets, compact times) and goes through chrono for each value: a fifth
//! of the cost of reading a CSV file of bids. Most files write one form, `2024-01-01
//! 00:00:00.366` (or with a `T`, or without a fraction, or a bare date). [`parse`] reads
//! exactly that form with integer arithmetic, and declines anything else (a time zone, a leap
//! second, more than nine fractional digits, any other character), which then goes to Arrow's
//! parser. Its results equal Arrow's on every string it accepts: the unit tests compare both
//! over many generated strings, valid and invalid.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, PrimitiveArray};
use datafusion::arrow::compute::kernels::cast_utils::string_to_datetime;
use datafusion::arrow::datatypes::{
    ArrowTimestampType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use datafusion::arrow::error::ArrowError;

/// Seconds in a day.
const DAY: i64 = 86_400;

/// The last date read and its day number: consecutive values of a column mostly share their
/// date, which is then neither validated nor converted again.
#[derive(Debug, Default)]
pub(crate) struct DateCache {
    text: [u8; 10],
    days: Option<i64>,
}

/// The timestamp `text` denotes in `unit` since the epoch (no time zone: read as UTC, as
/// Arrow reads it), or `None` when it is not of the form `YYYY-MM-DD[( |T|t)HH:MM:SS[.f...]]`
/// with one to nine fractional digits, or names no valid date and time, or does not fit. The
/// last date read is remembered in `cache`.
pub(crate) fn parse(text: &[u8], unit: TimeUnit, cache: &mut DateCache) -> Option<i64> {
    let (days, seconds, nanos) = fields(text, cache)?;
    let seconds = days * DAY + seconds;
    match unit {
        TimeUnit::Second => Some(seconds),
        TimeUnit::Millisecond => Some(seconds * 1_000 + i64::from(nanos / 1_000_000)),
        TimeUnit::Microsecond => Some(seconds * 1_000_000 + i64::from(nanos / 1_000)),
        TimeUnit::Nanosecond => seconds
            .checked_mul(1_000_000_000)?
            .checked_add(i64::from(nanos)),
    }
}

/// Days since 1970-01-01, seconds into the day and nanoseconds into the second.
fn fields(text: &[u8], cache: &mut DateCache) -> Option<(i64, i64, u32)> {
    let digit = |i: usize| -> Option<u32> {
        let d = text.get(i)?.wrapping_sub(b'0');
        (d < 10).then_some(u32::from(d))
    };
    let two = |i: usize| -> Option<u32> { Some(digit(i)? * 10 + digit(i + 1)?) };
    if text.len() < 10 {
        return None;
    }
    let days = match cache.days {
        Some(days) if cache.text == text[..10] => days,
        _ => {
            if text[4] != b'-' || text[7] != b'-' {
                return None;
            }
            let year = two(0)? * 100 + two(2)?;
            let month = two(5)?;
            let day = two(8)?;
            if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
                return None;
            }
            let days = days_from_civil(i64::from(year), month, day);
            cache.text.copy_from_slice(&text[..10]);
            cache.days = Some(days);
            days
        }
    };
    if text.len() == 10 {
        return Some((days, 0, 0));
    }
    if text.len() < 19
        || !matches!(text[10], b' ' | b'T' | b't')
        || text[13] != b':'
        || text[16] != b':'
    {
        return None;
    }
    let (hour, minute, second) = (two(11)?, two(14)?, two(17)?);
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let nanos = match text.len() {
        19 => 0,
        // A point and one to nine digits.
        21..=29 if text[19] == b'.' => {
            let mut nanos = 0;
            for i in 20..text.len() {
                nanos = nanos * 10 + digit(i)?;
            }
            nanos * 10u32.pow(29 - text.len() as u32)
        }
        _ => return None,
    };
    Some((days, i64::from(hour * 3600 + minute * 60 + second), nanos))
}

fn is_leap(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Parses a column of timestamp text (as Arrow's CSV decoder read it, NULL where the field
/// was empty) into timestamps of `unit`: [`parse`] where it accepts the value, Arrow's parser
/// otherwise; an error when Arrow's parser fails too, as Arrow's CSV decoder would fail.
pub(crate) fn parse_column(text: &ArrayRef, unit: TimeUnit) -> Result<ArrayRef, ArrowError> {
    Ok(match unit {
        TimeUnit::Second => parse_as::<TimestampSecondType>(text)?,
        TimeUnit::Millisecond => parse_as::<TimestampMillisecondType>(text)?,
        TimeUnit::Microsecond => parse_as::<TimestampMicrosecondType>(text)?,
        TimeUnit::Nanosecond => parse_as::<TimestampNanosecondType>(text)?,
    })
}

fn parse_as<T: ArrowTimestampType>(text: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let strings = text
        .as_string_opt::<i32>()
        .ok_or_else(|| ArrowError::CastError("timestamp text is not a string column".into()))?;
    let mut cache = DateCache::default();
    let parsed: PrimitiveArray<T> = strings
        .iter()
        .map(|value| {
            value
                .map(|s| {
                    parse(s.as_bytes(), T::UNIT, &mut cache).map_or_else(|| slow(s, T::UNIT), Ok)
                })
                .transpose()
        })
        .collect::<Result<_, ArrowError>>()?;
    Ok(Arc::new(parsed))
}

/// Arrow's parse of one value, as its CSV decoder does it.
fn slow(text: &str, unit: TimeUnit) -> Result<i64, ArrowError> {
    let date = string_to_datetime(&chrono::Utc, text)?;
    match unit {
        TimeUnit::Second => Ok(date.timestamp()),
        TimeUnit::Millisecond => Ok(date.timestamp_millis()),
        TimeUnit::Microsecond => Ok(date.timestamp_micros()),
        TimeUnit::Nanosecond => date.timestamp_nanos_opt().ok_or_else(|| {
            ArrowError::ParseError(format!("{text} would overflow 64-bit signed nanoseconds"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Array;

    use super::*;

    const UNITS: [TimeUnit; 4] = [
        TimeUnit::Second,
        TimeUnit::Millisecond,
        TimeUnit::Microsecond,
        TimeUnit::Nanosecond,
    ];

    /// Wherever the fast parser accepts a string, Arrow gives the same value (with a fresh
    /// date cache, and with `cache`, which holds earlier strings' dates).
    fn agrees_with(text: &str, cache: &mut DateCache) -> bool {
        let mut accepted = false;
        for unit in UNITS {
            let cached = parse(text.as_bytes(), unit, cache);
            let fresh = parse(text.as_bytes(), unit, &mut DateCache::default());
            assert_eq!(cached, fresh, "{text:?}: the cache changed it");
            if let Some(fast) = cached {
                accepted = true;
                let arrow = slow(text, unit).ok();
                assert_eq!(Some(fast), arrow, "{text:?} as {unit:?}");
            }
        }
        accepted
    }

    fn agrees(text: &str) -> bool {
        agrees_with(text, &mut DateCache::default())
    }

    #[test]
    fn the_usual_forms_are_read_as_arrow_reads_them() {
        for text in [
            "2024-01-01 00:00:00.366",
            "2023-01-01T00:00:09.366",
            "2023-01-01t00:00:09",
            "1970-01-01 00:00:00",
            "1969-12-31 23:59:59.999999999",
            "1900-02-28 12:00:00.5",
            "2000-02-29 23:59:59.123456",
            "0000-01-01 00:00:00",
            "9999-12-31 23:59:59.999999999",
            "2024-03-10",
            "1677-09-21 00:12:43.145224192",
            "2262-04-11 23:47:16.854775807",
        ] {
            assert!(agrees(text), "{text:?} should take the fast path");
        }
    }

    #[test]
    fn other_forms_are_declined() {
        for text in [
            "2024-01-01 00:00:00Z",
            "2024-01-01 00:00:00+01:00",
            "2024-01-01 000000",
            "2024-01-01 00:00:60",
            "2024-01-01 24:00:00",
            "2024-02-30 00:00:00",
            "2023-02-29",
            "2024-13-01",
            "2024-00-01",
            "2024-01-01 00:00:00.",
            "2024-01-01 00:00:00.1234567890",
            "2024-01-01  00:00:00",
            "2024-1-01 00:00:00",
            "+2024-01-01",
            "2024-01-01 00:00:0x",
            "",
        ] {
            assert!(!agrees(text), "{text:?} should be declined");
        }
        // Nanoseconds past 2262 do not fit: declined (Arrow fails too).
        let mut cache = DateCache::default();
        let late = b"2263-01-01 00:00:00";
        assert_eq!(parse(late, TimeUnit::Nanosecond, &mut cache), None);
        assert!(parse(late, TimeUnit::Millisecond, &mut cache).is_some());
    }

    #[test]
    fn generated_strings_agree_with_arrow() {
        // A fixed-seed generator: dates and times near the valid ranges, and mutations of them.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let mut accepted = 0;
        // One cache for the whole run, and half the strings repeating the date before them
        // (as a file's do), so that the cache is hit with valid and mutated dates alike.
        let mut cache = DateCache::default();
        let mut date = String::new();
        for _ in 0..200_000 {
            if date.is_empty() || next(2) == 0 {
                date = format!("{:04}-{:02}-{:02}", next(10_000), next(14), next(33));
            }
            let mut text = format!(
                "{date}{}{:02}:{:02}:{:02}",
                [" ", "T", "t", "_"][next(4) as usize],
                next(26),
                next(62),
                next(62)
            );
            match next(4) {
                0 => {}
                1 => text.truncate(10),
                _ => {
                    text.push('.');
                    for _ in 0..next(12) {
                        text.push(char::from(b'0' + next(10) as u8));
                    }
                }
            }
            if next(8) == 0 {
                // One byte replaced by a character that may or may not belong there.
                let at = next(text.len() as u64) as usize;
                let with = [b'0', b'9', b'-', b':', b'.', b' ', b'Z', b'/'][next(8) as usize];
                let mut bytes = text.into_bytes();
                bytes[at] = with;
                text = String::from_utf8(bytes).unwrap();
            }
            if agrees_with(&text, &mut cache) {
                accepted += 1;
            } else {
                // Declined: whatever Arrow makes of it is what the column gets.
            }
        }
        assert!(
            accepted > 50_000,
            "only {accepted} strings took the fast path"
        );
    }

    #[test]
    fn columns_fall_back_to_arrow_and_keep_nulls() {
        let text: ArrayRef = Arc::new(datafusion::arrow::array::StringArray::from(vec![
            Some("2024-01-01 00:00:00.366"),
            None,
            Some("2024-01-01T00:00:00.366Z"),
        ]));
        let parsed = parse_column(&text, TimeUnit::Millisecond).unwrap();
        let parsed = parsed.as_primitive::<TimestampMillisecondType>();
        assert_eq!(parsed.value(0), 1_704_067_200_366);
        assert!(parsed.is_null(1));
        assert_eq!(parsed.value(2), 1_704_067_200_366);
        let bad: ArrayRef = Arc::new(datafusion::arrow::array::StringArray::from(vec!["soon"]));
        assert!(parse_column(&bad, TimeUnit::Millisecond).is_err());
    }
}
