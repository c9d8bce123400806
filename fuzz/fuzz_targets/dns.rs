#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hostmesh::fuzzing::dns(data));
