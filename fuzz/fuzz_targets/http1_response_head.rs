#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hostmesh::fuzzing::http1_response_head(data));
