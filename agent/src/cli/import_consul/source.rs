//! One Consul file: JSON or HCL, told by the extension (`.json`, `.hcl`), else tried as JSON and
//! then as HCL; the service definitions it holds (`service`, `services`, or the bare object the
//! agent API's register call takes) and its other top-level keys.

use std::path::Path;

use serde_json::Value;

use super::object::{Object, normalize};

/// Why a file gives no definitions at all. Each says what is wrong with the file; the caller
/// names the file.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read: {0}")]
    Read(#[from] std::io::Error),
    #[error("not valid JSON: {0}")]
    Json(serde_json::Error),
    #[error("not valid HCL: {0}")]
    Hcl(hcl::Error),
    #[error("neither JSON ({json}) nor HCL ({hcl})")]
    Neither {
        json: serde_json::Error,
        hcl: hcl::Error,
    },
    #[error(
        "holds no service definition: expected `service {{…}}` or `services = [{{…}}]` \
         (or one service object with a name)"
    )]
    NoService,
    #[error("{0} must be an object or a list of objects")]
    Shape(String),
}

/// What a file holds.
#[derive(Debug)]
pub struct Source {
    /// Each definition with where it is in the file: `service`, `services[1]`.
    pub definitions: Vec<(String, Value)>,
    /// Top-level keys beside the definitions (agent settings, node checks): not imported.
    pub other: Vec<String>,
}

/// Reads and parses `path`.
pub fn read(path: &Path) -> Result<Source, SourceError> {
    let text = std::fs::read_to_string(path)?;
    parse(&text, path.extension().and_then(|e| e.to_str()))
}

/// Parses a file's text, as JSON or HCL by `extension`, else JSON and then HCL.
pub fn parse(text: &str, extension: Option<&str>) -> Result<Source, SourceError> {
    let value = match extension.map(str::to_ascii_lowercase).as_deref() {
        Some("json") => serde_json::from_str(text).map_err(SourceError::Json)?,
        Some("hcl") => hcl::from_str(text).map_err(SourceError::Hcl)?,
        _ => match serde_json::from_str(text) {
            Ok(value) => value,
            Err(json) => hcl::from_str(text).map_err(|hcl| SourceError::Neither { json, hcl })?,
        },
    };
    definitions(&value)
}

/// The definitions in a parsed file.
pub fn definitions(value: &Value) -> Result<Source, SourceError> {
    let map = value.as_object().ok_or(SourceError::NoService)?;
    let mut o = Object::new(map);
    let mut definitions = Vec::new();
    for name in ["service", "services"] {
        if let Some(field) = o.take(&[name]) {
            match field.value {
                Value::Array(items) => definitions.extend(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| (format!("{}[{i}]", field.key), item.clone())),
                ),
                Value::Object(_) => definitions.push((field.key.to_owned(), field.value.clone())),
                _ => return Err(SourceError::Shape(field.key.to_owned())),
            }
        }
    }
    let other: Vec<String> = o.rest().iter().map(|f| f.key.to_owned()).collect();
    if definitions.is_empty() {
        // The body of `PUT /v1/agent/service/register`: one service, not wrapped.
        if map.keys().any(|k| normalize(k) == "name") {
            return Ok(Source {
                definitions: vec![("service".to_owned(), value.clone())],
                other: Vec::new(),
            });
        }
        return Err(SourceError::NoService);
    }
    Ok(Source { definitions, other })
}
