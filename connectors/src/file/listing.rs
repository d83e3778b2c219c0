//! Which files a `path` option names, in the order they are read.
//!
//! A path is a single file, a folder (its regular files, not recursively; hidden ones and
//! markers starting with `_` skipped)
//! or a glob (`data/*.csv`, `logs/**/*.json`; `*` does not match a leading dot or cross a `/`).
//! Listings are sorted by path, so files are read in name order. These functions touch the
//! file system synchronously: call them at `CREATE SOURCE` time or on a blocking thread.

use std::path::{Path, PathBuf};

use eddy_engine::connector::{ConnectorError, ConnectorResult};
use eddy_engine::paths::PathPolicy;

use super::options::FileFormat;

/// A file found by a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListedFile {
    pub path: PathBuf,
    /// Its size when listed.
    pub size: u64,
}

/// What a `path` option names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathSpec {
    File(PathBuf),
    Folder(PathBuf),
    Glob(String),
}

impl PathSpec {
    /// Classifies `path`. A path without glob characters must exist; relative paths are
    /// relative to the server's current directory.
    pub(crate) fn parse(path: &str) -> ConnectorResult<Self> {
        if path.contains(['*', '?', '[']) {
            glob::Pattern::new(path).map_err(|e| {
                ConnectorError::InvalidOption(format!("invalid glob in path '{path}': {e}"))
            })?;
            return Ok(Self::Glob(path.to_string()));
        }
        let buf = PathBuf::from(path);
        match std::fs::metadata(&buf) {
            Ok(meta) if meta.is_dir() => Ok(Self::Folder(buf)),
            Ok(meta) if meta.is_file() => Ok(Self::File(buf)),
            Ok(_) => Err(ConnectorError::InvalidOption(format!(
                "path '{path}' is neither a regular file nor a folder"
            ))),
            Err(_) => Err(ConnectorError::InvalidOption(format!(
                "no file matches path '{path}'"
            ))),
        }
    }

    /// Checks the folder the path names (the part of a glob before its first wildcard)
    /// against the policy, before anything is listed.
    pub(crate) fn check_base(path: &str, paths: &PathPolicy) -> ConnectorResult<()> {
        let literal: PathBuf = Path::new(path)
            .components()
            .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
            .collect();
        paths.check_new(&literal)?;
        Ok(())
    }

    /// [`PathSpec::list`], failing if a file found resolves outside the allowed directories
    /// (a symbolic link out of them).
    pub(crate) fn list_allowed(&self, paths: &PathPolicy) -> ConnectorResult<Vec<ListedFile>> {
        let files = self.list()?;
        for file in &files {
            paths.check_existing(&file.path)?;
        }
        Ok(files)
    }

    /// The files the path names now, sorted by path. A single file that no longer exists
    /// gives an empty listing.
    pub(crate) fn list(&self) -> ConnectorResult<Vec<ListedFile>> {
        let mut files = match self {
            Self::File(path) => regular_file(path.clone()).into_iter().collect(),
            Self::Folder(dir) => list_folder(dir)?,
            Self::Glob(pattern) => list_glob(pattern)?,
        };
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// The format the path's own text implies: the extension of a file, or of a glob such as
    /// `*.csv`.
    pub(crate) fn format_hint(&self) -> Option<FileFormat> {
        match self {
            Self::File(path) => FileFormat::from_extension(path),
            Self::Glob(pattern) => {
                let extension = Path::new(pattern).extension()?.to_str()?;
                if extension.contains(['*', '?', '[']) {
                    return None;
                }
                FileFormat::from_extension(Path::new(pattern))
            }
            Self::Folder(_) => None,
        }
    }
}

/// `path` as a listed file if it is a regular file (following symbolic links).
fn regular_file(path: PathBuf) -> Option<ListedFile> {
    let meta = std::fs::metadata(&path).ok()?;
    meta.is_file().then_some(ListedFile {
        path,
        size: meta.len(),
    })
}

fn list_folder(dir: &Path) -> ConnectorResult<Vec<ListedFile>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ConnectorError::Io(format!("cannot list folder '{}': {e}", dir.display())))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| {
            ConnectorError::Io(format!("cannot list folder '{}': {e}", dir.display()))
        })?;
        // Hidden files, and markers such as `_SUCCESS` (as Spark and Hive skip them).
        if entry.file_name().to_string_lossy().starts_with(['.', '_']) {
            continue;
        }
        files.extend(regular_file(entry.path()));
    }
    Ok(files)
}

fn list_glob(pattern: &str) -> ConnectorResult<Vec<ListedFile>> {
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: true,
    };
    let paths = glob::glob_with(pattern, options).map_err(|e| {
        ConnectorError::InvalidOption(format!("invalid glob in path '{pattern}': {e}"))
    })?;
    let mut files = Vec::new();
    for path in paths {
        match path {
            Ok(path) => files.extend(regular_file(path)),
            // An unreadable folder somewhere under the glob: its files cannot be read anyway.
            Err(e) => tracing::warn!("skipping {}: {}", e.path().display(), e.error()),
        }
    }
    Ok(files)
}
