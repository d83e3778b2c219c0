//! Which directories file sources, file sinks and `COPY ... TO 'file'` may touch.
//!
//! The server allows its data directory, its working directory and every `--allow-path`
//! directory. A path is checked after resolving it the way the operating system would: `..`
//! and symbolic links are followed first, so neither can lead out of an allowed directory. A
//! path that does not exist yet (a sink's output) is checked through its nearest existing
//! ancestor; the missing part may not contain `..`. Anything outside is refused with
//! [`ConnectorError::PermissionDenied`] (SQLSTATE 42501).

use std::path::{Component, Path, PathBuf};

use crate::connector::{ConnectorError, ConnectorResult};

/// The directories the server's files may be read from and written to.
#[derive(Debug, Clone, Default)]
pub struct PathPolicy {
    /// Canonical allowed directories; `None` allows everything (embedded use and tests).
    allowed: Option<Vec<PathBuf>>,
}

impl PathPolicy {
    /// A policy that allows every path.
    pub fn unrestricted() -> Self {
        Self { allowed: None }
    }

    /// A policy that allows `dirs` and everything below them. Each directory must exist.
    pub fn allow(dirs: impl IntoIterator<Item = PathBuf>) -> std::io::Result<Self> {
        let mut allowed = Vec::new();
        for dir in dirs {
            let canonical = dir.canonicalize().map_err(|e| {
                std::io::Error::new(e.kind(), format!("allowed path {}: {e}", dir.display()))
            })?;
            if !canonical.is_dir() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("allowed path {} is not a directory", dir.display()),
                ));
            }
            if !allowed.contains(&canonical) {
                allowed.push(canonical);
            }
        }
        Ok(Self {
            allowed: Some(allowed),
        })
    }

    /// The allowed directories, or `None` when every path is allowed.
    pub fn allowed_dirs(&self) -> Option<&[PathBuf]> {
        self.allowed.as_deref()
    }

    /// Checks a path that exists (a file to read) and returns it resolved.
    pub fn check_existing(&self, path: &Path) -> ConnectorResult<PathBuf> {
        let Some(allowed) = &self.allowed else {
            return Ok(path.to_path_buf());
        };
        let resolved = path.canonicalize().map_err(|e| {
            ConnectorError::Io(format!("cannot resolve path '{}': {e}", path.display()))
        })?;
        check_inside(allowed, &resolved, path)?;
        Ok(resolved)
    }

    /// Checks a path that may not exist yet (a file or folder to create, a glob's folder) and
    /// returns it resolved.
    pub fn check_new(&self, path: &Path) -> ConnectorResult<PathBuf> {
        let Some(allowed) = &self.allowed else {
            return Ok(path.to_path_buf());
        };
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| ConnectorError::Io(format!("no working directory: {e}")))?
                .join(path)
        };
        // The nearest ancestor that exists is resolved by the OS; the rest is taken literally.
        let mut existing = absolute.as_path();
        let mut rest = Vec::new();
        let resolved = loop {
            match existing.canonicalize() {
                Ok(r) => break r,
                Err(_) => match (existing.parent(), existing.file_name()) {
                    (Some(parent), Some(name)) => {
                        rest.push(name.to_os_string());
                        existing = parent;
                    }
                    _ => return Err(denied(path)),
                },
            }
        };
        let mut resolved = resolved;
        for name in rest.iter().rev() {
            resolved.push(name);
        }
        // `file_name` is `None` for a trailing `..`, so a missing part never holds one; a `..`
        // inside the existing part was resolved by `canonicalize`.
        if resolved
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        {
            return Err(denied(path));
        }
        check_inside(allowed, &resolved, path)?;
        Ok(resolved)
    }
}

fn check_inside(allowed: &[PathBuf], resolved: &Path, written: &Path) -> ConnectorResult<()> {
    if allowed.iter().any(|dir| resolved.starts_with(dir)) {
        Ok(())
    } else {
        Err(denied(written))
    }
}

fn denied(path: &Path) -> ConnectorError {
    ConnectorError::PermissionDenied(format!(
        "permission denied for path '{}': it is outside the directories the server allows \
         (its data directory, its working directory and each --allow-path)",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("eddy-paths-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn inside_outside_dotdot_and_symlinks() {
        let root = dir("policy");
        let allowed = root.join("allowed");
        let outside = root.join("outside");
        std::fs::create_dir_all(&allowed).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(allowed.join("a.csv"), "1\n").unwrap();
        std::fs::write(outside.join("secret.csv"), "2\n").unwrap();
        let policy = PathPolicy::allow([allowed.clone()]).unwrap();

        assert!(policy.check_existing(&allowed.join("a.csv")).is_ok());
        assert!(
            policy
                .check_new(&allowed.join("new/deeper/x.parquet"))
                .is_ok()
        );
        let escapes = [
            outside.join("secret.csv"),
            allowed.join("../outside/secret.csv"),
            allowed.join("new/../../outside/x.parquet"),
            PathBuf::from("/etc/passwd"),
        ];
        for path in &escapes {
            let err = policy.check_new(path).unwrap_err();
            assert!(
                matches!(err, ConnectorError::PermissionDenied(_)),
                "{path:?}: {err:?}"
            );
        }
        assert!(matches!(
            policy.check_existing(&outside.join("secret.csv")),
            Err(ConnectorError::PermissionDenied(_))
        ));

        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&outside, allowed.join("link")).unwrap();
            for path in [
                allowed.join("link/secret.csv"),
                allowed.join("link/new.parquet"),
            ] {
                assert!(
                    matches!(
                        policy.check_new(&path),
                        Err(ConnectorError::PermissionDenied(_))
                    ),
                    "{path:?}"
                );
            }
            assert!(matches!(
                policy.check_existing(&allowed.join("link/secret.csv")),
                Err(ConnectorError::PermissionDenied(_))
            ));
        }
        assert!(
            PathPolicy::unrestricted()
                .check_new(Path::new("/etc/x"))
                .is_ok()
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
