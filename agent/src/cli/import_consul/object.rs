//! Consul's keys as Consul reads them: in any case, with or without underscores
//! (`EnableTagOverride`, `enable_tag_override` and `enabletagoverride` are one key), and which
//! keys of an object nothing took, so that every field the import leaves behind is named.

use serde_json::{Map, Value};

/// A key without case and underscores: how Consul compares keys.
pub fn normalize(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// One field of a definition: where it is, written with the file's own spelling
/// (`Checks[1].Header`), and its value.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    pub key: &'a str,
    pub value: &'a Value,
}

/// The keys of one JSON object, taken one by one by their normalized names.
#[derive(Debug)]
pub struct Object<'a> {
    entries: Vec<(Field<'a>, bool)>,
}

impl<'a> Object<'a> {
    pub fn new(map: &'a Map<String, Value>) -> Object<'a> {
        Object {
            entries: map
                .iter()
                .map(|(key, value)| (Field { key, value }, false))
                .collect(),
        }
    }

    /// The first key whose normalized form is one of `names` (given normalized), marked taken.
    /// A second spelling of the same key (`Port` and `port` in one object) stays behind and is
    /// named with the rest.
    pub fn take(&mut self, names: &[&str]) -> Option<Field<'a>> {
        let (field, taken) = self
            .entries
            .iter_mut()
            .find(|(field, taken)| !*taken && names.contains(&normalize(field.key).as_str()))?;
        *taken = true;
        Some(*field)
    }

    /// The keys nothing took, sorted (serde_json's maps are), so reports come out in the same
    /// order on every run.
    pub fn rest(self) -> Vec<Field<'a>> {
        self.entries
            .into_iter()
            .filter(|(_, taken)| !taken)
            .map(|(field, _)| field)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_in_any_case_with_or_without_underscores() {
        let map = serde_json::json!({"EnableTagOverride": true, "port": 1, "Port": 2, "x": 0});
        let map = map.as_object().expect("object");
        let mut object = Object::new(map);
        assert_eq!(normalize("enable_tag_override"), "enabletagoverride");
        assert!(object.take(&["enabletagoverride"]).is_some());
        assert!(object.take(&["enabletagoverride"]).is_none());
        assert_eq!(object.take(&["port"]).map(|f| f.key), Some("Port"));
        let rest: Vec<&str> = object.rest().iter().map(|f| f.key).collect();
        assert_eq!(rest, ["port", "x"]);
    }
}
