//! The JSON values stored in etcd (docs/reference/etcd-layout.md). Readers ignore unknown fields so that old
//! and new agents can run side by side; writers always write every field they know.

use std::net::{AddrParseError, Ipv4Addr};
use std::str::Utf8Error;

use serde::{Deserialize, Serialize};

use hostmesh_config::spec::Protocol;

/// Health as published in instance records and shown everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Passing,
    Critical,
    Maintenance,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Passing => "passing",
            Health::Critical => "critical",
            Health::Maintenance => "maintenance",
        }
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `<prefix>/v1/hosts/<host>/info`, on the host's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// Where peers reach this host's inbound port.
    pub address: std::net::IpAddr,
    pub inbound_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The agent version that wrote this record.
    #[serde(default)]
    pub version: String,
}

/// `<prefix>/v1/hosts/<host>/instances/<service>/<id>`, on the host's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub port: u16,
    pub protocol: Protocol,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    pub health: Health,
    /// The instance's host locks its target port against direct connections from other hosts
    /// (`proxy.lockdown`). Written only when true, so records of hosts without lockdown are
    /// unchanged, and older agents, which ignore unknown fields, read it as before.
    #[serde(default, skip_serializing_if = "is_false")]
    pub lockdown: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_weight() -> u32 {
    100
}

/// Why a value under `vips/` is no VIP. It is never used: the catalog skips the record and
/// allocation refuses the name, until an operator fixes the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VipValueError {
    #[error("{0}")]
    NotUtf8(Utf8Error),
    /// Text that is not an IPv4 address, as a JSON string or bare.
    #[error("VIP {text:?}: {error}")]
    NotIpv4 { text: String, error: AddrParseError },
}

/// A VIP value is a JSON string (`"127.77.0.12"`); a bare address is accepted too, since
/// operators sometimes write one with etcdctl.
pub fn parse_vip(value: &[u8]) -> Result<Ipv4Addr, VipValueError> {
    let text = std::str::from_utf8(value)
        .map_err(VipValueError::NotUtf8)?
        .trim();
    let text = match serde_json::from_str::<String>(text) {
        Ok(s) => s,
        Err(_) => text.to_owned(),
    };
    text.parse::<Ipv4Addr>()
        .map_err(|error| VipValueError::NotIpv4 { text, error })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_ignored() {
        let rec: InstanceRecord = serde_json::from_str(
            r#"{"port":8080,"protocol":"http","tags":["v2"],"weight":5,"health":"passing","future":{"x":1}}"#,
        )
        .expect("parses");
        assert_eq!(rec.port, 8080);
        assert_eq!(rec.health, Health::Passing);
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn lockdown_is_written_only_when_on() {
        let mut rec: InstanceRecord =
            serde_json::from_str(r#"{"port":8080,"protocol":"http","health":"passing"}"#).unwrap();
        assert!(!rec.lockdown);
        assert!(!serde_json::to_string(&rec).unwrap().contains("lockdown"));
        rec.lockdown = true;
        let text = serde_json::to_string(&rec).unwrap();
        assert!(text.ends_with(r#","lockdown":true}"#), "{text}");
        assert_eq!(serde_json::from_str::<InstanceRecord>(&text).unwrap(), rec);
    }

    #[test]
    fn bad_vip_values_say_why() {
        assert_eq!(
            parse_vip(br#""::1""#).map_err(|e| e.to_string()),
            Err("VIP \"::1\": invalid IPv4 address syntax".to_owned())
        );
        assert_eq!(
            parse_vip(b"\xff").map_err(|e| e.to_string()),
            Err("invalid utf-8 sequence of 1 bytes from index 0".to_owned())
        );
    }

    #[test]
    fn missing_required_fields_fail() {
        assert!(serde_json::from_str::<InstanceRecord>(r#"{"port":8080}"#).is_err());
        assert!(serde_json::from_str::<HostInfo>(r#"{"inbound_port":1}"#).is_err());
    }
}
