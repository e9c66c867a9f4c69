//! Opening a file the bridge reads or serves: one open, then every check on the open handle.
//!
//! Looking at a path and then opening it leaves a moment in which another file can be renamed
//! over it: a named pipe makes `open` wait for a writer that may never come, stalling the
//! reader for good, and a symlink sends the read somewhere else. So a file is opened once,
//! without waiting (`O_NONBLOCK`) and, where asked, without following a symlink at the path
//! (`O_NOFOLLOW`); what it is and how big it is are then asked of the open handle, which no
//! later rename can change.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::path::Path;

/// Whether a symlink at the path itself is followed (links in the directories above it are
/// the caller's business).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Links {
    /// The state file may be a link to a file in the agent's own project.
    Follow,
    /// Outbox files and served files are never links.
    Refuse,
}

/// Why a file was not opened or read.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Nothing is at the path.
    NotFound,
    /// A symlink is at the path, and [`Links::Refuse`] was asked.
    Symlink,
    /// A directory, named pipe, socket or device is at the path.
    NotRegular,
    /// The file is this many bytes, over the limit; nothing was read.
    TooLarge(u64),
    /// The file grew over the limit while it was being read.
    Grew,
    /// It could not be opened for another reason (permissions, a symlink loop).
    Open(io::Error),
    /// It was opened but could not be read (an I/O error, text that is not UTF-8).
    Read(io::Error),
}

/// A regular file, open for reading, with its metadata as the open handle reports it.
#[derive(Debug)]
pub(crate) struct RegularFile {
    /// The open file.
    pub(crate) file: File,
    /// Its metadata, from the handle: the file that will be read, whatever the path now holds.
    pub(crate) meta: Metadata,
}

/// Opens `path` if it is a regular file of at most `max_bytes`, never waiting on a named pipe
/// or device.
pub(crate) fn open_regular(
    path: &Path,
    links: Links,
    max_bytes: u64,
) -> Result<RegularFile, Refusal> {
    let file = open(path, links).map_err(|e| classify(e, links))?;
    let meta = file.metadata().map_err(Refusal::Open)?;
    if !meta.is_file() {
        return Err(Refusal::NotRegular);
    }
    if meta.len() > max_bytes {
        return Err(Refusal::TooLarge(meta.len()));
    }
    Ok(RegularFile { file, meta })
}

/// Reads the whole of a regular file at `path` as text, within `max_bytes`.
pub(crate) fn read_to_string(path: &Path, links: Links, max_bytes: u64) -> Result<String, Refusal> {
    let opened = open_regular(path, links, max_bytes)?;
    let mut text = String::new();
    // One byte over the limit is enough to know it grew after the check.
    opened
        .file
        .take(max_bytes.saturating_add(1))
        .read_to_string(&mut text)
        .map_err(Refusal::Read)?;
    if text.len() as u64 > max_bytes {
        return Err(Refusal::Grew);
    }
    Ok(text)
}

#[cfg(unix)]
fn open(path: &Path, links: Links) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: opening a named pipe returns at once instead of waiting for a writer (reads
    // of a regular file are not affected). O_NOCTTY: a terminal device opened by mistake
    // does not become ours.
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if links == Links::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    File::options().read(true).custom_flags(flags).open(path)
}

#[cfg(not(unix))]
fn open(path: &Path, _links: Links) -> io::Result<File> {
    // No named pipes in the file system to wait on; symlinks need privileges to create.
    File::open(path)
}

fn classify(error: io::Error, links: Links) -> Refusal {
    match error.kind() {
        io::ErrorKind::NotFound => return Refusal::NotFound,
        // A regular file in the middle of the path: the path names nothing.
        io::ErrorKind::NotADirectory => return Refusal::NotFound,
        _ => {}
    }
    #[cfg(unix)]
    match error.raw_os_error() {
        // What O_NOFOLLOW gives for a symlink (ELOOP on Linux and macOS, EMLINK on FreeBSD).
        Some(libc::ELOOP | libc::EMLINK) if links == Links::Refuse => return Refusal::Symlink,
        // What opening a Unix socket gives.
        Some(libc::ENXIO) => return Refusal::NotRegular,
        _ => {}
    }
    #[cfg(not(unix))]
    let _ = links;
    Refusal::Open(error)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    use std::os::unix::net::UnixListener;

    #[test]
    fn regular_files_are_read_and_everything_else_is_refused_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file.yaml");
        std::fs::write(&file, "a: 1\n").unwrap();
        assert_eq!(read_to_string(&file, Links::Refuse, 5).unwrap(), "a: 1\n");
        assert!(matches!(
            read_to_string(&file, Links::Refuse, 4),
            Err(Refusal::TooLarge(5))
        ));

        let link = dir.path().join("link.yaml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read_to_string(&link, Links::Follow, 64).unwrap(), "a: 1\n");
        assert!(matches!(
            open_regular(&link, Links::Refuse, 64),
            Err(Refusal::Symlink)
        ));

        // A pipe with no writer: opening it for reading would wait for ever without O_NONBLOCK.
        let pipe = dir.path().join("pipe.yaml");
        let made = std::process::Command::new("mkfifo").arg(&pipe).status();
        if made.is_ok_and(|s| s.success()) {
            for links in [Links::Follow, Links::Refuse] {
                assert!(matches!(
                    open_regular(&pipe, links, 64),
                    Err(Refusal::NotRegular)
                ));
            }
        }
        let socket = dir.path().join("socket.yaml");
        let _listener = UnixListener::bind(&socket).unwrap();
        assert!(matches!(
            open_regular(&socket, Links::Follow, 64),
            Err(Refusal::NotRegular)
        ));
        assert!(matches!(
            open_regular(dir.path(), Links::Refuse, 64),
            Err(Refusal::NotRegular)
        ));
        assert!(matches!(
            open_regular(&dir.path().join("missing"), Links::Follow, 64),
            Err(Refusal::NotFound)
        ));
        assert!(matches!(
            open_regular(&file.join("below-a-file"), Links::Follow, 64),
            Err(Refusal::NotFound)
        ));
    }
}
