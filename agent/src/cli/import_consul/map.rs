//! One Consul definition as one hostmesh service definition: name, instance id, port and
//! target, protocol, tags, weight and the check ([`super::check`]). A field that cannot be
//! carried over is a [`Note`]; a definition hostmesh cannot serve at all is a [`Refusal`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hostmesh_config::names::{self, NameError};

use super::check::{self, Check};
use super::model::{Definition, ShapeError};
use super::note::Note;
use super::suggest;

/// A service definition to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The instance id: Consul's `ID` (else the name), and the file name.
    pub id: String,
    pub name: String,
    pub port: u16,
    /// `None`: hostmesh's default `127.0.0.1:PORT`.
    pub target: Option<SocketAddr>,
    pub protocol: Protocol,
    pub tags: Vec<String>,
    /// `None`: hostmesh's default 100.
    pub weight: Option<i64>,
    pub check: Option<Check>,
}

/// The protocol written, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// `http`, `grpc` or `tcp`, from the named field.
    Given(&'static str, String),
    /// Nothing usable given: `protocol` is not written, so hostmesh's default `http` applies.
    Default,
}

/// Why a definition is not imported. Each says what to change in the Consul definition (or
/// what stands in for it in hostmesh).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Shape(#[from] ShapeError),
    #[error("has no Name")]
    NoName,
    #[error("Name {name:?} {error}{}", suggestion.as_ref().map(|s| format!("; the nearest valid name is {s:?}")).unwrap_or_default())]
    Name {
        name: String,
        error: NameError,
        suggestion: Option<String>,
    },
    #[error("has no Port: a hostmesh service needs the port clients use")]
    NoPort,
    #[error("Port {0} is not 1..=65535")]
    Port(i64),
    #[error(
        "Address {0:?} is a host name; hostmesh's target is an IP address where the app listens \
         on this host: set Address to that IP (or remove it for 127.0.0.1)"
    )]
    AddressName(String),
    #[error("Kind {0:?} is a Consul mesh proxy or gateway; hostmesh's agent takes its place")]
    Kind(String),
}

/// The service to write, and what was left behind or changed on the way.
pub fn map(d: &Definition) -> Result<(Service, Vec<Note>), Refusal> {
    if let Some(kind) = &d.kind
        && kind != "typical"
    {
        return Err(Refusal::Kind(kind.clone()));
    }
    let name = d.name.clone().ok_or(Refusal::NoName)?;
    names::service(&name).map_err(|error| Refusal::Name {
        suggestion: suggest::service(&name),
        name: name.clone(),
        error,
    })?;
    let port = d.port.ok_or(Refusal::NoPort)?;
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(Refusal::Port(port))?;
    let mut notes = Vec::new();
    notes.extend(d.other.iter().map(Note::unmapped));
    let spelled = |name: &str, fallback: &str| d.spelled.of(name, fallback);
    let id = instance_id(
        d.id.as_deref().unwrap_or(&name),
        &name,
        &spelled("id", "ID"),
        &mut notes,
    );
    let target = target(
        d.address.as_deref(),
        port,
        &spelled("address", "Address"),
        &mut notes,
    )?;
    let probed = target.unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    let check = check::map(&d.checks, probed, &mut notes);
    Ok((
        Service {
            id,
            name,
            port,
            target,
            protocol: protocol(d, &mut notes),
            tags: tags(&d.tags, &spelled("tags", "Tags"), &mut notes),
            weight: weight(
                d.weight_passing,
                &spelled("weights.passing", "Weights.Passing"),
                &mut notes,
            ),
            check,
        },
        notes,
    ))
}

/// Consul's ID, or the nearest valid instance id (it is only the file name and a label in
/// hostmesh, so a change does not refuse the definition).
fn instance_id(id: &str, name: &str, field: &str, notes: &mut Vec<Note>) -> String {
    if names::instance_id(id).is_ok() {
        return id.to_owned();
    }
    let kept = suggest::instance_id(id).unwrap_or_else(|| name.to_owned());
    notes.push(Note::new(
        field,
        format!("{id:?} is not a hostmesh instance id (letters, digits, '.', '_', '-'); written as {kept:?}"),
    ));
    kept
}

/// `Address` as the target; `None` for the default `127.0.0.1:PORT`.
fn target(
    address: Option<&str>,
    port: u16,
    field: &str,
    notes: &mut Vec<Note>,
) -> Result<Option<SocketAddr>, Refusal> {
    let Some(address) = address else {
        return Ok(None);
    };
    if address.eq_ignore_ascii_case("localhost") {
        return Ok(None);
    }
    let ip: IpAddr = address
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| Refusal::AddressName(address.to_owned()))?;
    if ip.is_unspecified() {
        notes.push(Note::new(
            field,
            format!("{ip} is no address to connect to; the target is 127.0.0.1:{port}"),
        ));
        return Ok(None);
    }
    if ip == IpAddr::V4(Ipv4Addr::LOCALHOST) {
        return Ok(None);
    }
    let target = SocketAddr::new(ip, port);
    if !ip.is_loopback() {
        notes.push(Note::new(
            field,
            format!(
                "the target is {target}: the app must listen there on the host this file goes \
                 to (an agent serves its own host's apps)"
            ),
        ));
    }
    Ok(Some(target))
}

/// `Meta.protocol`, else the sidecar's protocol, as one hostmesh knows.
fn protocol(d: &Definition, notes: &mut Vec<Note>) -> Protocol {
    let meta = d.spelled.of("meta.protocol", "Meta.protocol");
    let given = [
        (meta.as_str(), &d.meta_protocol),
        (
            "Connect.SidecarService.Proxy.Config.protocol",
            &d.connect_protocol,
        ),
    ];
    let Some((field, value)) = given
        .into_iter()
        .find_map(|(field, value)| value.as_ref().map(|v| (field, v)))
    else {
        return Protocol::Default;
    };
    let known = match value.to_ascii_lowercase().as_str() {
        "http" => "http",
        "grpc" => "grpc",
        "tcp" => "tcp",
        "http2" => {
            notes.push(Note::new(
                field,
                "http2 written as http: hostmesh hands an http service's requests to the app as \
                 HTTP/1.1 (grpc is the protocol whose apps get h2c)",
            ));
            "http"
        }
        other => {
            notes.push(Note::new(
                field,
                format!(
                    "not mapped: {other:?} is not a hostmesh protocol (http, grpc, tcp); \
                     hostmesh's default http applies"
                ),
            ));
            return Protocol::Default;
        }
    };
    Protocol::Given(known, field.to_owned())
}

/// The tags hostmesh accepts, without repeats; each other one named with its nearest valid form.
fn tags(tags: &[String], field: &str, notes: &mut Vec<Note>) -> Vec<String> {
    let mut kept: Vec<String> = Vec::new();
    for tag in tags {
        if let Err(e) = names::tag(tag) {
            let nearest = suggest::tag(tag)
                .map(|s| format!("; the nearest valid tag is {s:?}"))
                .unwrap_or_default();
            notes.push(Note::new(
                field,
                format!("{tag:?} not mapped: it {e}{nearest}"),
            ));
        } else if kept.contains(tag) {
            notes.push(Note::new(
                field,
                format!("{tag:?} is listed twice; kept once"),
            ));
        } else {
            kept.push(tag.clone());
        }
    }
    kept
}

/// `Weights.Passing` × 100: Consul's default 1 is hostmesh's default 100, and the ratios between
/// instances stay.
fn weight(passing: Option<i64>, field: &str, notes: &mut Vec<Note>) -> Option<i64> {
    let passing = passing?;
    let range = hostmesh_config::spec::WEIGHT;
    let (min, max) = (i64::from(*range.start()), i64::from(*range.end()));
    match passing.checked_mul(100) {
        _ if passing < 1 => {
            notes.push(Note::new(
                field,
                format!("not mapped: {passing} is below 1; hostmesh's default weight 100 applies"),
            ));
            None
        }
        Some(100) => None,
        Some(w) if (min..=max).contains(&w) => Some(w),
        _ => {
            notes.push(Note::new(
                field,
                format!("{passing} written as weight {max}, the most hostmesh takes (weight = 100 × Passing)"),
            ));
            Some(max)
        }
    }
}
