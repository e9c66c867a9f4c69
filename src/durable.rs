//! Crash-safe file writes: a reader sees the whole file or none of it, and once these
//! functions return, a power cut does not lose it.
//!
//! The recipe: a dot-named temporary file in the destination directory (so readers that
//! skip dot-files never see it, and the rename stays on one file system), write, fsync the
//! file, rename it into place, fsync the directory so the rename itself is on disk.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use tempfile::{Builder, NamedTempFile};

/// Replaces `dest` (in `dir`) with `bytes`. With `private`, only the owner can read it.
pub(crate) fn write_atomically(
    dir: &Path,
    dest: &Path,
    bytes: &[u8],
    private: bool,
) -> io::Result<()> {
    let temp = write_temp(dir, bytes, private)?;
    temp.persist(dest).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Replaces `dest` (in `dir`) with `bytes`, the new file taking `permissions` (those of the
/// file it replaces, say).
pub(crate) fn replace_with_permissions(
    dir: &Path,
    dest: &Path,
    bytes: &[u8],
    permissions: Option<std::fs::Permissions>,
) -> io::Result<()> {
    let temp = write_temp(dir, bytes, false)?;
    if let Some(permissions) = permissions {
        temp.as_file().set_permissions(permissions)?;
    }
    temp.persist(dest).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Removes `path` (in `dir`) and makes the removal durable. `Ok(false)` if it was not there.
pub(crate) fn remove(dir: &Path, path: &Path) -> io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    sync_dir(dir)?;
    Ok(true)
}

/// Creates `dest` (in `dir`) with `bytes`, failing with `AlreadyExists` rather than
/// replacing a file that is already there.
pub(crate) fn write_new(dir: &Path, dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = write_temp(dir, bytes, false)?;
    temp.persist_noclobber(dest).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Creates the directory `dir` (not its parents) and makes its entry durable. `Ok` if it
/// already exists.
pub(crate) fn create_dir(dir: &Path) -> io::Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => sync_dir(Path::new(".")),
    }
}

const TEMP_PREFIX: &str = ".tmp-";
const TEMP_SUFFIX: &str = ".partial";

/// Whether `name` is one of our temporary files (left behind only by a crash).
pub(crate) fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX)
}

fn write_temp(dir: &Path, bytes: &[u8], private: bool) -> io::Result<NamedTempFile> {
    let mut builder = Builder::new();
    builder.prefix(TEMP_PREFIX).suffix(TEMP_SUFFIX);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o600));
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut temp = builder.tempfile_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    Ok(temp)
}

/// Flushes a directory entry change (a rename) to disk.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        // Windows cannot open a directory as a file; NTFS journals the rename itself.
        let _ = (dir, File::open);
        Ok(())
    }
}
