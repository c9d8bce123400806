//! The `[proxy]` settings both sides of the data path use, in one place so that the outbound
//! side, the inbound side and the HTTP/2 limits read them without importing each other.

use std::time::Duration;

/// The `[proxy]` settings the data path uses.
#[derive(Debug, Clone)]
pub struct Settings {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub header_read_timeout: Duration,
    pub max_headers: usize,
    pub max_header_bytes: usize,
}
