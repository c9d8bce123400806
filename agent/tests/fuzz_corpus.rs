//! Replays the fuzz corpora (`fuzz/corpus/<target>/`) and the crash inputs kept as regressions
//! (`fuzz/artifacts/<target>/`) through the same entry points the fuzz targets call, so that
//! `cargo test` on stable checks every input the fuzzer found interesting, without nightly or
//! libFuzzer. A target whose corpus is missing or empty fails, naming it: a target added to
//! `fuzz/` without seeds, or a corpus lost, must not pass silently.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// A fuzz target's name and the function it calls.
type Target = (&'static str, fn(&[u8]));

/// Every fuzz target; `fuzz/fuzz_targets/<name>.rs` calls the same function.
const TARGETS: &[Target] = &[
    ("dns", hostmesh::fuzzing::dns),
    ("http1_request_head", hostmesh::fuzzing::http1_request_head),
    (
        "http1_response_head",
        hostmesh::fuzzing::http1_response_head,
    ),
    ("http1_guard", hostmesh::fuzzing::http1_guard),
    ("tcp_preface", hostmesh::fuzzing::tcp_preface),
    ("peer_headers", hostmesh::fuzzing::peer_headers),
    ("config", hostmesh::fuzzing::config),
    ("route_policy", hostmesh::fuzzing::route_policy),
    ("catalog", hostmesh::fuzzing::catalog),
    ("cert_identity", hostmesh::fuzzing::cert_identity),
    ("consul_import", hostmesh::fuzzing::consul_import),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files directly in `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `run` on every file, naming the file that panics.
fn replay(name: &str, run: fn(&[u8]), files: &[PathBuf]) {
    for file in files {
        let data = std::fs::read(file).unwrap();
        if std::panic::catch_unwind(|| run(&data)).is_err() {
            panic!("{name}: {} fails", file.display());
        }
    }
}

#[test]
fn every_target_has_a_corpus_and_it_replays() {
    let mut empty = Vec::new();
    for (name, run) in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        if corpus.is_empty() {
            empty.push(*name);
        }
        replay(name, *run, &corpus);
    }
    assert!(
        empty.is_empty(),
        "fuzz corpora missing or empty under {}: {}",
        fuzz_dir().join("corpus").display(),
        empty.join(", ")
    );
}

#[test]
fn crash_inputs_found_by_the_fuzzer_stay_fixed() {
    for (name, run) in TARGETS {
        replay(name, *run, &files(&fuzz_dir().join("artifacts").join(name)));
    }
    // A directory named after no target would be replayed by nothing.
    for dir in std::fs::read_dir(fuzz_dir().join("artifacts"))
        .into_iter()
        .flatten()
    {
        let dir = dir.unwrap().file_name();
        let dir = dir.to_string_lossy();
        assert!(
            TARGETS.iter().any(|(name, _)| *name == dir),
            "fuzz/artifacts/{dir} is no target's"
        );
    }
}

#[test]
fn every_fuzz_target_is_replayed() {
    let dir = fuzz_dir().join("fuzz_targets");
    for file in files(&dir) {
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(
            TARGETS.iter().any(|(name, _)| *name == stem),
            "{} has no corpus replay here",
            file.display()
        );
    }
}
