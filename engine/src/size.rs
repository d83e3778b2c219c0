//! Memory sizes as users write them (`'512MB'`, `'1 GB'`, `'65536'`) and as messages show them.
//!
//! The units are Postgres' (`kB`, `MB`, `GB`, `TB`, each 1024 times the one before), accepted
//! in any case, with an optional `B`/`iB` spelling (`KiB`, `M`, `g`) and an optional space;
//! a plain number is bytes. `0` and `unlimited` mean no limit. `max_state_bytes`, a job's
//! `max.state.bytes` and the server's `--max-memory` all parse with [`parse_limit`].

/// Parses a memory limit: `Ok(None)` for `0` or `unlimited`, else the bytes. `Err` says what
/// is wrong, for a message that names the setting.
pub fn parse_limit(value: &str) -> Result<Option<usize>, String> {
    let text = value.trim().trim_matches('\'').trim();
    if text.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || {
        format!(
            "\"{text}\" is not a memory size (a number of bytes, or with a unit such as '64MB', \
             '512 kB' or '1GB'; '0' or 'unlimited' for no limit)"
        )
    };
    if number.is_empty() {
        return Err(bad());
    }
    let number: f64 = number.parse().map_err(|_| bad())?;
    let multiplier: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = (number * multiplier).round();
    if !bytes.is_finite() || bytes >= usize::MAX as f64 {
        return Err(format!("\"{text}\" is too large a memory size"));
    }
    let bytes = bytes as usize;
    Ok((bytes > 0).then_some(bytes))
}

/// A size for messages: bytes below 1 kB, else the largest unit with one decimal where it
/// matters (`512 MB`, `1.5 GB`, `530.2 kB`).
pub fn format_size(bytes: usize) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64;
    let mut unit = "";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    let rounded = (value * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 {
        format!("{rounded:.0} {unit}")
    } else {
        format!("{rounded:.1} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_plain_bytes_and_no_limit() {
        assert_eq!(parse_limit("512MB"), Ok(Some(512 << 20)));
        assert_eq!(parse_limit("'64 mb'"), Ok(Some(64 << 20)));
        assert_eq!(parse_limit("1GB"), Ok(Some(1 << 30)));
        assert_eq!(parse_limit("1.5GiB"), Ok(Some(3 << 29)));
        assert_eq!(parse_limit("512kB"), Ok(Some(512 << 10)));
        assert_eq!(parse_limit("2T"), Ok(Some(2 << 40)));
        assert_eq!(parse_limit("65536"), Ok(Some(65536)));
        assert_eq!(parse_limit("100 B"), Ok(Some(100)));
        assert_eq!(parse_limit("0"), Ok(None));
        assert_eq!(parse_limit("0MB"), Ok(None));
        assert_eq!(parse_limit("Unlimited"), Ok(None));
    }

    #[test]
    fn refuses_what_is_not_a_size() {
        for bad in [
            "",
            "MB",
            "-1",
            "-5MB",
            "12 parsecs",
            "1.2.3MB",
            "lots",
            "1e3",
        ] {
            let e = parse_limit(bad).unwrap_err();
            assert!(e.contains("not a memory size"), "{bad}: {e}");
        }
        assert!(
            parse_limit("99999999999TB")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn formats_with_the_largest_unit() {
        assert_eq!(format_size(100), "100 bytes");
        assert_eq!(format_size(512 << 20), "512 MB");
        assert_eq!(format_size(3 << 29), "1.5 GB");
        assert_eq!(format_size(530 * 1024 + 200), "530.2 kB");
    }
}
