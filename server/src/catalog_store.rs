//! Catalog persistence: the DDL of every relation, as JSON in the data directory.
//!
//! The file is replaced atomically (write to a temporary file, then rename), so a crash leaves
//! either the old catalog or the new one, never half of one.

use std::path::{Path, PathBuf};

use eddy_engine::catalog::CatalogStore;
use serde::{Deserialize, Serialize};

const CATALOG_FILE: &str = "catalog.json";

#[derive(Serialize, Deserialize)]
struct CatalogFile {
    version: u32,
    statements: Vec<String>,
}

/// Saves the catalog under a data directory.
pub struct JsonCatalogStore {
    path: PathBuf,
}

impl JsonCatalogStore {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(CATALOG_FILE),
        }
    }

    /// The saved DDL statements (none if there is no catalog yet).
    pub fn load(&self) -> std::io::Result<Vec<String>> {
        if !self.path.exists() {
            return Ok(Vec::new());
        }
        let text = std::fs::read_to_string(&self.path)?;
        let file: CatalogFile = serde_json::from_str(&text).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", self.path.display()),
            )
        })?;
        Ok(file.statements)
    }
}

impl CatalogStore for JsonCatalogStore {
    fn save(&self, ddl: &[String]) -> std::io::Result<()> {
        let file = CatalogFile {
            version: 1,
            statements: ddl.to_vec(),
        };
        let text = serde_json::to_string_pretty(&file).map_err(std::io::Error::other)?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.path)
    }
}
