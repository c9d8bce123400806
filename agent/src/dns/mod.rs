//! The DNS shim (being written).
