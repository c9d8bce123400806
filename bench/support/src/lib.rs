//! What the Rust benchmarks share (bench/catalog-scale, bench/fleet): child processes killed on
//! drop, free ports, a process's CPU time and RSS from /proc, a dependency-free HTTP GET, and
//! filling etcd with a catalog of services the way a fleet of hosts would have registered them.

#![allow(clippy::print_stdout, reason = "benchmarks report on stdout")]

mod catalog;
mod process;

pub use catalog::{Filled, fill_catalog};
pub use process::{Killed, cpu_seconds, free_port, http_get, raise_open_files_limit, rss_kib};
