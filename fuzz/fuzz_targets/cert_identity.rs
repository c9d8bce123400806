#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hostmesh::fuzzing::cert_identity(data));
