//! A policy as the TOML file `policy get` prints and `policy set` accepts: both keys written
//! out, empty lists included, so the operator sees exactly what agents apply.

use toml::Value;

use super::policy::AccessPolicy;

impl AccessPolicy {
    /// `parse_toml(&p.to_toml())` gives `p`.
    pub fn to_toml(&self) -> String {
        let allow: Vec<Value> = self.allow.iter().map(|s| Value::from(s.as_str())).collect();
        let hosts: Vec<Value> = self
            .allow_hosts
            .iter()
            .map(|p| Value::from(p.to_string()))
            .collect();
        format!(
            "allow = {}\nallow_hosts = {}\n",
            Value::Array(allow),
            Value::Array(hosts)
        )
    }
}
