//! A session's variables shared with its `pg_settings` table, which reads them at each query.

use std::sync::{Arc, RwLock};

use crate::vars::SessionVars;

/// The variables of one session, readable by its catalog tables.
#[derive(Debug, Clone, Default)]
pub struct SharedVars(Arc<RwLock<SessionVars>>);

impl SharedVars {
    pub fn get(&self, name: &str) -> Option<String> {
        self.read().get(name).map(str::to_string)
    }

    pub fn set(&self, name: &str, value: String) {
        self.write().set(name, value);
    }

    pub fn reset(&self, name: &str) {
        self.write().reset(name);
    }

    pub fn reset_all(&self) {
        self.write().reset_all();
    }

    /// A copy of every variable as it is now.
    pub fn snapshot(&self) -> SessionVars {
        self.read().clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, SessionVars> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, SessionVars> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}
