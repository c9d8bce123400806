//! End-to-end tests: real hosts (network namespaces), a real etcd, the real hostmesh binary.
//! They need root and never skip; see `hostmesh_tests::require_root`.

mod access_log;
mod app_request;
mod bounds;
mod cancel;
mod cli;
mod dns;
mod early_answers;
mod etcd_security;
mod explain;
mod fault_smoke;
mod grpc_proxy;
mod hardening;
mod harness_smoke;
mod lean_h1;
mod lifecycle;
mod lockdown;
mod metrics;
mod policy;
mod proxy;
mod registry;
mod resilience;
mod status_page;
mod tls;
mod zones;
