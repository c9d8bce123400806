//! Locating the `hostmesh` binary under test, built fresh by cargo so a test never runs a stale one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Environment variable naming a prebuilt `hostmesh` to test instead (e.g. a packaged binary).
pub const BIN_ENV: &str = "HOSTMESH_BIN";

/// The `hostmesh` binary to test: `$HOSTMESH_BIN` if set, else `target/<profile>/hostmesh` after
/// running `cargo build -p hostmesh --bin hostmesh` once per test process, with the profile this
/// test binary was built with. The build is a no-op when the binary is fresh; cargo decides that,
/// which is the point: the crate under test is not a dependency of this one, so nothing else would
/// rebuild it when its sources change.
#[track_caller]
pub fn hostmesh_bin() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(locate) {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

fn locate() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os(BIN_ENV) {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("{BIN_ENV}={} is not a file", bin.display()))
        };
    }
    let profile_dir = profile_dir()?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("odd target dir {}", profile_dir.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("tests crate has no parent directory")?;
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace)
        .args(["build", "-p", "hostmesh", "--bin", "hostmesh"]);
    match profile {
        // `debug` is the directory of the `dev` profile.
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    // Build output is captured and shown only on failure (a long first build is silent).
    let out = cmd
        .output()
        .map_err(|e| format!("running {cmd:?} to build hostmesh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building hostmesh failed ({cmd:?}, {}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let bin = profile_dir.join("hostmesh");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "cargo built hostmesh but {} does not exist (a different target dir or --target?); \
             set {BIN_ENV}",
            bin.display()
        ))
    }
}

/// `target/<profile>` derived from this test binary's path, `target/<profile>/deps/e2e-<hash>`.
fn profile_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let deps = exe
        .parent()
        .filter(|d| d.file_name().is_some_and(|n| n == "deps"))
        .ok_or_else(|| {
            format!(
                "test binary {} is not in target/<profile>/deps; set {BIN_ENV}",
                exe.display()
            )
        })?;
    deps.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("no profile dir above {}", deps.display()))
}
