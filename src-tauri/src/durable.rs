//! Crash-safe writes of the small files the app keeps: a reader (the CLI, another copy of
//! the app) sees the old file or the new one, never half of one.

use std::io::{self, Write};
use std::path::Path;

/// Replaces the file at `path` with `text`: temporary file in the same directory, fsync,
/// rename, fsync the directory. With `private`, only the owner may read it (it holds the
/// token).
pub(crate) fn write_atomically(path: &Path, text: &str, private: bool) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tmp-").suffix(".partial");
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o600));
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut temp = builder.tempfile_in(dir)?;
    temp.write_all(text.as_bytes())?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
