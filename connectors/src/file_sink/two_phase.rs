//! The two-phase commit of an exactly-once file sink: what a checkpoint stores, how it is made
//! visible, and how a restarted sink cleans up.
//!
//! A finished file waits under a hidden pending name, `.<name>.pending`, beside its final name.
//! [`CommitManifest`] lists such files (pending -> final, relative to the sink's folder) and
//! the partition folders whose `_SUCCESS` marker is due; it is what
//! [`SinkWriter::pre_commit`](eddy_engine::connector::SinkWriter::pre_commit) returns and the
//! checkpoint stores. [`publish`] renames the files and then writes the markers; it can be run
//! again after a crash in the middle (a file already renamed is fine). [`remove_hidden`]
//! deletes the hidden files of the writers' (`.part-...inprogress` and `.part-...pending`),
//! never a visible one.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use eddy_engine::connector::{ConnectorError, ConnectorResult, SinkMetrics};
use serde::{Deserialize, Serialize};

use super::part_file::{io_error, sync_dir};

/// The suffix of a finished file that waits for its checkpoint.
const PENDING_SUFFIX: &str = ".pending";
/// The suffix of a file being written ([`super::part_file::PartFile`]).
const IN_PROGRESS_SUFFIX: &str = ".inprogress";
/// The prefix of the hidden files the writers make (`.part-<run>-<n>...`).
const HIDDEN_PREFIX: &str = ".part-";

/// A finished file waiting under its hidden name, both paths relative to the sink's folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StagedFile {
    pub pending: String,
    #[serde(rename = "final")]
    pub final_path: String,
}

impl StagedFile {
    /// The staged form of `final_path` (relative): `dir/.name.pending` beside `dir/name`.
    pub(crate) fn for_final(final_path: &Path) -> ConnectorResult<Self> {
        let name = final_path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| ConnectorError::Io(format!("bad file name {}", final_path.display())))?;
        let pending = final_path.with_file_name(format!(".{name}{PENDING_SUFFIX}"));
        let text = |p: &Path| {
            p.to_str()
                .map(str::to_string)
                .ok_or_else(|| ConnectorError::Io(format!("bad file name {}", p.display())))
        };
        Ok(Self {
            pending: text(&pending)?,
            final_path: text(final_path)?,
        })
    }

    /// Checks a staged file read back from a checkpoint: both paths relative, inside the
    /// folder, in the same folder, the pending one hidden and the final one not.
    fn check(&self) -> ConnectorResult<()> {
        let pending = relative(&self.pending)?;
        let final_path = relative(&self.final_path)?;
        let name = |p: &Path| p.file_name().and_then(|n| n.to_str()).map(str::to_string);
        let ok = pending.parent() == final_path.parent()
            && match (name(&pending), name(&final_path)) {
                (Some(p), Some(f)) => !f.starts_with('.') && p == format!(".{f}{PENDING_SUFFIX}"),
                _ => false,
            };
        if ok {
            Ok(())
        } else {
            Err(corrupt(format!(
                "'{}' is not the pending name of '{}'",
                self.pending, self.final_path
            )))
        }
    }
}

/// What a checkpoint stores for an exactly-once file sink: every finished file not yet
/// visible and every partition whose `_SUCCESS` is due, up to and including `epoch`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CommitManifest {
    pub epoch: u64,
    pub files: Vec<StagedFile>,
    /// Partition folders (relative, never the sink's folder itself) to mark complete.
    pub success: Vec<String>,
    /// Event-time partitions that have rows but whose end the watermark has not passed yet,
    /// as (end in nanoseconds, folder): a restored writer waits for their ends to mark them
    /// complete, though their rows may all be in committed files already.
    #[serde(default)]
    pub open: Vec<(i64, String)>,
}

impl CommitManifest {
    pub(crate) fn to_json(&self) -> ConnectorResult<String> {
        serde_json::to_string(self)
            .map_err(|e| ConnectorError::Io(format!("encoding the sink's commit: {e}")))
    }

    /// Reads and checks what [`CommitManifest::to_json`] wrote; refuses anything else.
    pub(crate) fn from_json(text: &str) -> ConnectorResult<Self> {
        let manifest: Self = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
        for file in &manifest.files {
            file.check()?;
        }
        // Partition folders only: the folder's own `_SUCCESS` says the sink's input ended,
        // which no checkpoint may claim.
        for folder in manifest
            .success
            .iter()
            .chain(manifest.open.iter().map(|(_, f)| f))
        {
            relative(folder)?;
        }
        Ok(manifest)
    }

    /// Adds `other`'s files and markers (a later epoch's).
    pub(crate) fn extend(&mut self, other: &CommitManifest) {
        self.epoch = self.epoch.max(other.epoch);
        self.files.extend(other.files.iter().cloned());
        for folder in &other.success {
            if !self.success.contains(folder) {
                self.success.push(folder.clone());
            }
        }
    }
}

fn corrupt(why: String) -> ConnectorError {
    ConnectorError::Io(format!(
        "the checkpoint's file sink commit is unreadable: {why}"
    ))
}

/// A path from a checkpoint, checked to stay inside the sink's folder.
fn relative(path: &str) -> ConnectorResult<PathBuf> {
    let p = PathBuf::from(path);
    let inside = !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    if inside {
        Ok(p)
    } else {
        Err(corrupt(format!(
            "'{path}' is not a path inside the sink's folder"
        )))
    }
}

/// Makes a manifest's files visible (renames, then syncs their folders), then writes its
/// markers, and counts both in `metrics`. A file whose final name
/// already exists and pending name does not was renamed by an earlier attempt; a file with
/// neither is lost, which is an error (its rows would be missing).
pub(crate) fn publish(
    root: &Path,
    manifest: &CommitManifest,
    metrics: &SinkMetrics,
) -> ConnectorResult<()> {
    let mut folders = BTreeSet::new();
    for file in &manifest.files {
        let pending = root.join(&file.pending);
        let final_path = root.join(&file.final_path);
        match std::fs::rename(&pending, &final_path) {
            Ok(()) => {
                SinkMetrics::add(&metrics.files, 1);
                if let Some(dir) = final_path.parent() {
                    folders.insert(dir.to_path_buf());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && final_path.is_file() => {}
            Err(e) => return Err(io_error("commit (rename)", &pending, e)),
        }
    }
    for dir in &folders {
        sync_dir(Some(dir));
    }
    for folder in &manifest.success {
        super::writer::write_marker(&root.join(folder))?;
        SinkMetrics::add(&metrics.partitions_committed, 1);
    }
    Ok(())
}

/// Deletes every hidden file a writer left under `root` (in progress or pending), however
/// deep; visible files and other hidden files are left alone.
pub(crate) fn remove_hidden(root: &Path) -> ConnectorResult<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error("list", &dir, e)),
        };
        let mut removed = false;
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list", &dir, e))?;
            let kind = entry.file_type().map_err(|e| io_error("list", &dir, e))?;
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
                continue;
            }
            let hidden = entry.file_name().to_str().is_some_and(|n| {
                n.starts_with(HIDDEN_PREFIX)
                    && (n.ends_with(PENDING_SUFFIX) || n.ends_with(IN_PROGRESS_SUFFIX))
            });
            if kind.is_file() && hidden {
                std::fs::remove_file(&path).map_err(|e| io_error("remove", &path, e))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(Some(&dir));
        }
    }
    Ok(())
}
