//! The `WITH (...)` options of a file source, parsed and checked.
//!
//! Keys arrive lower-cased and unquoted. Every key is either one Eddy honours (some under a
//! second, Flink-style spelling) or an error naming it and listing the accepted ones: an option
//! that would be silently ignored is a user mistake waiting to surprise.

use std::path::Path;

use eddy_engine::connector::{ConnectorError, ConnectorOptions, ConnectorResult};

/// Each accepted option: its canonical key and its other spellings.
const OPTIONS: &[(&str, &[&str])] = &[
    ("connector", &[]),
    ("path", &[]),
    ("format", &[]),
    ("follow", &[]),
    ("header", &["csv.ignore-first-line"]),
    ("delimiter", &["csv.field-delimiter"]),
    ("null_value", &["csv.null-literal"]),
    ("quote", &["csv.quote-character"]),
];

/// Options that only make sense for `format = 'csv'`.
const CSV_ONLY: &[&str] = &["header", "delimiter", "null_value", "quote"];

/// How the bytes of a file are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileFormat {
    /// Comma (or `delimiter`) separated values, one record per line; quoted fields may span lines.
    Csv,
    /// One JSON object per line.
    Json,
    /// Apache Parquet files.
    Parquet,
}

impl FileFormat {
    /// The format named by a `format = '...'` value.
    fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "csv" => Some(Self::Csv),
            "json" | "json-lines" | "jsonl" | "ndjson" => Some(Self::Json),
            "parquet" => Some(Self::Parquet),
            _ => None,
        }
    }

    /// The format a file name's extension stands for.
    pub(crate) fn from_extension(path: &Path) -> Option<Self> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "csv" => Some(Self::Csv),
            "json" | "jsonl" | "ndjson" => Some(Self::Json),
            "parquet" | "pq" => Some(Self::Parquet),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Json => "json",
            Self::Parquet => "parquet",
        }
    }
}

/// The CSV dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CsvOptions {
    /// Skip the first record of every file (`header = 'true'`). Columns are matched by position,
    /// not by the names in the header.
    pub header: bool,
    /// The field delimiter, one ASCII character (`\t` is accepted for a tab).
    pub delimiter: u8,
    /// The quote character; `None` when `quote = ''` turns quoting off.
    pub quote: Option<u8>,
    /// The text that stands for SQL NULL, when `null_value` is given. See [`super::decode`] for
    /// the complete NULL rule.
    pub null_value: Option<String>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            header: false,
            delimiter: b',',
            quote: Some(b'"'),
            null_value: None,
        }
    }
}

/// The parsed options of one file source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileOptions {
    /// A file, a folder or a glob, as the user wrote it.
    pub path: String,
    /// The format given by `format`; `None` means "infer it from file extensions".
    pub format: Option<FileFormat>,
    pub csv: CsvOptions,
    /// Keep polling for new files and appended lines (`follow = 'true'`): an unbounded source.
    pub follow: bool,
}

impl FileOptions {
    /// Parses and checks `options`; every error is [`ConnectorError::InvalidOption`].
    pub(crate) fn parse(options: &ConnectorOptions) -> ConnectorResult<Self> {
        let mut given: Vec<(&'static str, &str, &str)> = Vec::new();
        for (key, value) in options {
            let Some(canonical) = canonical_key(key) else {
                return Err(invalid(format!(
                    "unknown option '{key}' for connector 'file'; accepted options: {}",
                    accepted_keys()
                )));
            };
            if let Some((_, other, _)) = given.iter().find(|(c, _, _)| *c == canonical) {
                return Err(invalid(format!(
                    "options '{other}' and '{key}' mean the same thing; give only one"
                )));
            }
            given.push((canonical, key.as_str(), value.as_str()));
        }
        let lookup = |name: &str| {
            given
                .iter()
                .find(|(c, _, _)| *c == name)
                .map(|g| (g.1, g.2))
        };

        let Some((_, path)) = lookup("path") else {
            return Err(invalid(
                "option 'path' is required for connector 'file' (a file, a folder or a glob)",
            ));
        };
        if path.trim().is_empty() {
            return Err(invalid("option 'path' must not be empty"));
        }
        let format = match lookup("format") {
            None => None,
            Some((key, value)) => Some(FileFormat::from_name(value).ok_or_else(|| {
                invalid(format!(
                    "invalid value '{value}' for option '{key}'; expected 'csv', 'json' or 'parquet'"
                ))
            })?),
        };
        let follow = match lookup("follow") {
            None => false,
            Some((key, value)) => parse_bool(key, value)?,
        };

        let mut csv = CsvOptions::default();
        if let Some((key, value)) = lookup("header") {
            csv.header = parse_bool(key, value)?;
        }
        if let Some((key, value)) = lookup("delimiter") {
            csv.delimiter = parse_char(key, value)?.ok_or_else(|| {
                invalid(format!("option '{key}' must be one character, not empty"))
            })?;
        }
        if let Some((key, value)) = lookup("quote") {
            csv.quote = parse_char(key, value)?;
        }
        if let Some((_, value)) = lookup("null_value") {
            csv.null_value = Some(value.to_string());
        }
        if csv.quote == Some(csv.delimiter) {
            return Err(invalid(
                "the CSV quote character must differ from the delimiter",
            ));
        }
        if matches!(csv.delimiter, b'\n' | b'\r') || matches!(csv.quote, Some(b'\n' | b'\r')) {
            return Err(invalid(
                "the CSV delimiter and quote character cannot be a line break",
            ));
        }

        if let Some(format) = format.filter(|f| *f != FileFormat::Csv) {
            for name in CSV_ONLY {
                if let Some((key, _)) = lookup(name) {
                    return Err(invalid(format!(
                        "option '{key}' applies only to format 'csv', not '{}'",
                        format.name()
                    )));
                }
            }
        }

        Ok(Self {
            path: path.to_string(),
            format,
            csv,
            follow,
        })
    }

    /// Rejects CSV options once the format is known to be something else (it may have been
    /// inferred from file extensions after [`FileOptions::parse`]).
    pub(crate) fn check_format(
        &self,
        format: FileFormat,
        options: &ConnectorOptions,
    ) -> ConnectorResult<()> {
        if format == FileFormat::Csv {
            return Ok(());
        }
        for key in options.keys() {
            if canonical_key(key).is_some_and(|c| CSV_ONLY.contains(&c)) {
                return Err(invalid(format!(
                    "option '{key}' applies only to format 'csv', but the files of path '{}' are {}",
                    self.path,
                    format.name()
                )));
            }
        }
        Ok(())
    }
}

fn canonical_key(key: &str) -> Option<&'static str> {
    OPTIONS
        .iter()
        .find(|(name, aliases)| *name == key || aliases.contains(&key))
        .map(|(name, _)| *name)
}

fn accepted_keys() -> String {
    OPTIONS
        .iter()
        .flat_map(|(name, aliases)| std::iter::once(*name).chain(aliases.iter().copied()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_bool(key: &str, value: &str) -> ConnectorResult<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(format!(
            "invalid value '{value}' for option '{key}'; expected 'true' or 'false'"
        ))),
    }
}

/// One ASCII character, `\t` for a tab, or `None` for the empty string.
pub(crate) fn parse_char(key: &str, value: &str) -> ConnectorResult<Option<u8>> {
    match value {
        "" => Ok(None),
        "\\t" => Ok(Some(b'\t')),
        _ => match value.as_bytes() {
            [byte] if byte.is_ascii() => Ok(Some(*byte)),
            _ => Err(invalid(format!(
                "invalid value '{value}' for option '{key}'; expected one ASCII character"
            ))),
        },
    }
}

fn invalid(message: impl Into<String>) -> ConnectorError {
    ConnectorError::InvalidOption(message.into())
}
