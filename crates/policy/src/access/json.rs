//! The JSON stored at `<prefix>/v1/policies/<service>`: the same key names as the TOML file,
//! both lists always written out:
//!
//! ```json
//! {"allow":["web","billing"],"allow_hosts":["batch-7","batch-*"]}
//! ```
//!
//! Readers use the same checks as `policy set` but ignore unknown fields (a newer writer may add
//! some) and treat `null` members as absent. A bad value rejects the whole policy, and agents
//! then deny every caller of the service (fail closed).

use std::path::Path;

use serde_json::{Value as Json, json};

use super::parse::check;
use super::policy::AccessPolicy;
use crate::StoredPolicyError;
use crate::route::{Unknown, to_toml_value};

impl AccessPolicy {
    /// What `policy set` writes to etcd.
    pub fn to_json(&self) -> Json {
        let hosts: Vec<String> = self.allow_hosts.iter().map(ToString::to_string).collect();
        json!({ "allow": self.allow, "allow_hosts": hosts })
    }

    /// Reads what is stored in etcd: unknown fields ignored, bad values → `Err` naming each.
    pub fn from_json(v: &Json) -> Result<AccessPolicy, StoredPolicyError> {
        if let Json::String(text) = v {
            // How the catalog keeps a stored value that is not JSON at all.
            return Err(StoredPolicyError::NotJson { bytes: text.len() });
        }
        let Some(toml::Value::Table(table)) = to_toml_value(v)? else {
            return Err(StoredPolicyError::NotAnObject);
        };
        check(&table, Path::new("etcd"), Unknown::Ignore).map_err(StoredPolicyError::Invalid)
    }
}
