//! Session variables: what `SET` changes and `SHOW` reports.
//!
//! Postgres clients set and read a handful of variables on connect (`client_encoding`,
//! `DateStyle`, `extra_float_digits`, `application_name`...). Every variable below has a
//! default; `SET` of an unknown name creates it (as Postgres does for dotted custom names), and
//! `SHOW` of a name that was never set is an error.

use std::collections::BTreeMap;

/// Variables every session starts with: (name, default).
const DEFAULTS: &[(&str, &str)] = &[
    ("application_name", ""),
    ("client_encoding", "UTF8"),
    ("client_min_messages", "notice"),
    ("datestyle", "ISO, MDY"),
    ("default_transaction_isolation", "read committed"),
    ("extra_float_digits", "1"),
    ("integer_datetimes", "on"),
    ("intervalstyle", "postgres"),
    ("is_superuser", "on"),
    ("max_state_bytes", "unlimited"),
    ("search_path", "public"),
    ("server_encoding", "UTF8"),
    ("server_version", crate::SERVER_VERSION),
    ("server_version_num", crate::SERVER_VERSION_NUM),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("timezone", "UTC"),
    ("transaction_isolation", "read committed"),
    ("transaction_read_only", "off"),
];

/// The variables of one session, by lower-cased name.
#[derive(Debug, Clone)]
pub struct SessionVars {
    values: BTreeMap<String, String>,
}

impl Default for SessionVars {
    fn default() -> Self {
        Self {
            values: DEFAULTS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

impl SessionVars {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(&normalize(name)).map(String::as_str)
    }

    pub fn set(&mut self, name: &str, value: String) {
        self.values.insert(normalize(name), value);
    }

    /// Back to the default (or unset, for a custom variable).
    pub fn reset(&mut self, name: &str) {
        let name = normalize(name);
        match DEFAULTS.iter().find(|(k, _)| *k == name) {
            Some((_, v)) => {
                self.values.insert(name, v.to_string());
            }
            None => {
                self.values.remove(&name);
            }
        }
    }

    pub fn reset_all(&mut self) {
        *self = Self::default();
    }

    pub fn all(&self) -> impl Iterator<Item = (&String, &String)> {
        self.values.iter()
    }
}

fn normalize(name: &str) -> String {
    let name = name.to_ascii_lowercase();
    match name.as_str() {
        "time zone" | "time_zone" => "timezone".to_string(),
        "transaction isolation level" => "transaction_isolation".to_string(),
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_show_reset() {
        let mut v = SessionVars::default();
        assert_eq!(v.get("DateStyle"), Some("ISO, MDY"));
        v.set("application_name", "psql".into());
        assert_eq!(v.get("APPLICATION_NAME"), Some("psql"));
        v.reset("application_name");
        assert_eq!(v.get("application_name"), Some(""));
        v.set("my.custom", "1".into());
        v.reset("my.custom");
        assert_eq!(v.get("my.custom"), None);
        assert_eq!(v.get("transaction isolation level"), Some("read committed"));
    }
}
