//! A mapped service as the TOML of a service definition, keys in the order docs/config.md lists
//! them, with a comment saying where it came from.

use std::fmt::Write;

use hostmesh_config::duration;

use super::check::Kind;
use super::map::{Protocol, Service};

/// The file's text; `origin` says where the Consul definition was (`consul/web.json, service`).
pub fn render(service: &Service, origin: &str) -> String {
    // A comment ends at a line break: a path with one must not end it early.
    let origin = origin.replace(|c: char| c.is_control(), "?");
    let mut out = format!("# Imported from Consul ({origin}) by `hostmesh import consul`.\n");
    line(&mut out, "name", quote(&service.name));
    line(&mut out, "port", service.port.to_string());
    if let Some(target) = service.target {
        line(&mut out, "target", quote(&target.to_string()));
    }
    match &service.protocol {
        Protocol::Given(protocol, _) => line(&mut out, "protocol", quote(protocol)),
        Protocol::Default => out.push_str(
            "# The Consul definition names no protocol, so hostmesh's default applies; write\n\
             # protocol = \"tcp\" if this service does not speak HTTP/1.1 (\"grpc\" for gRPC).\n",
        ),
    }
    if !service.tags.is_empty() {
        line(&mut out, "tags", list(&service.tags));
    }
    if let Some(weight) = service.weight {
        line(&mut out, "weight", weight.to_string());
    }
    if let Some(check) = &service.check {
        out.push_str("\n[check]\n");
        match &check.kind {
            Kind::Http(path) => line(&mut out, "http", quote(path)),
            Kind::Tcp => line(&mut out, "tcp", "true".to_owned()),
            Kind::Exec(argv) => line(&mut out, "exec", list(argv)),
        }
        if let Some(d) = check.interval {
            line(&mut out, "interval", quote(&duration::show(d)));
        }
        if let Some(d) = check.timeout {
            line(&mut out, "timeout", quote(&duration::show(d)));
        }
        if let Some(n) = check.unhealthy_after {
            line(&mut out, "unhealthy_after", n.to_string());
        }
        if let Some(n) = check.healthy_after {
            line(&mut out, "healthy_after", n.to_string());
        }
    }
    out
}

fn line(out: &mut String, key: &str, value: String) {
    let _ = writeln!(out, "{key} = {value}");
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", items.join(", "))
}
