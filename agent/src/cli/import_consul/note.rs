//! What the import says about a field it did not carry over as written: the field's path as the
//! file spells it and what happened to it. Printed as a warning naming file and service.

use std::fmt;

use super::model::Other;
use super::unmapped;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// `Meta.version`, `Checks[1].Header`, `Tags`.
    pub field: String,
    /// `not mapped: <why>`, or how the value was changed.
    pub message: String,
}

impl Note {
    pub fn new(field: &str, message: impl Into<String>) -> Note {
        Note {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// A field the import has no place for, with the reason for its kind.
    pub fn unmapped(other: &Other) -> Note {
        Note::new(
            &other.path,
            format!("not mapped: {}", unmapped::reason(&other.key)),
        )
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}
