//! Files in `data_dir` replaced atomically (temp file, fsync, rename, fsync of the directory), so
//! a crash leaves either the old content or the new, never a torn file.

use std::io::Write;
use std::path::Path;

/// Replaces `path` with what `fill` writes, atomically.
pub fn replace(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<&std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let f = std::fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::new(&f);
        fill(&mut w)?;
        w.flush()?;
        drop(w);
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
