//! The errors the bridge can report, each phrased as one sentence a user can act on.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can stop the bridge from starting or a setting from being used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listening socket could not be bound.
    #[error("{}", bind_sentence(.addr, .source))]
    Bind {
        /// The address we tried to listen on.
        addr: SocketAddr,
        /// What the operating system said.
        source: io::Error,
    },

    /// A directory the bridge needs could not be created.
    #[error("cannot create the {what} directory {}: {source}", .path.display())]
    CreateDir {
        /// Which directory: "inbox", "outbox", "state file".
        what: &'static str,
        /// Where it should be.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },

    /// The inbox exists but the bridge cannot write files into it.
    #[error("the inbox directory {} is not writable: {source}", .path.display())]
    InboxNotWritable {
        /// The inbox directory.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },

    /// The config file exists but cannot be read.
    #[error("cannot read the config file {}: {source}", .path.display())]
    ReadConfig {
        /// The config file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },

    /// The config file is not valid TOML or has unknown or mistyped keys.
    #[error("the config file {} is invalid: {message}", .path.display())]
    ParseConfig {
        /// The config file.
        path: PathBuf,
        /// The parser's description, with line and column.
        message: String,
    },

    /// The config file could not be written.
    #[error("cannot write the config file {}: {source}", .path.display())]
    WriteConfig {
        /// The config file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },

    /// A setting has a value the bridge cannot run with.
    #[error("invalid setting `{field}`: {message}")]
    InvalidSetting {
        /// The setting's name, as in the config file.
        field: &'static str,
        /// Why the value is refused.
        message: String,
    },

    /// Authentication is on but no token was configured.
    #[error(
        "no token is configured: set `token` in the config file, pass --token, or use --no-auth"
    )]
    MissingToken,

    /// The home directory is needed for a default path but is unknown.
    #[error("cannot find the home directory; set the paths explicitly")]
    NoHome,

    /// The file watcher could not be set up.
    #[error("cannot watch {}: {source}", .path.display())]
    Watch {
        /// The directory we tried to watch.
        path: PathBuf,
        /// What the watcher said.
        source: notify::Error,
    },

    /// The operating system's random number generator failed.
    #[error("cannot generate a random token: {0}")]
    Random(String),
}

fn bind_sentence(addr: &SocketAddr, source: &io::Error) -> String {
    match source.kind() {
        io::ErrorKind::AddrInUse => format!(
            "port {} is already in use on {}; stop the other program or choose another port with --port",
            addr.port(),
            addr.ip()
        ),
        io::ErrorKind::AddrNotAvailable => format!(
            "cannot listen on {}: this machine has no such address; check --bind",
            addr.ip()
        ),
        io::ErrorKind::PermissionDenied => format!(
            "not allowed to listen on port {}; ports below 1024 need special rights",
            addr.port()
        ),
        _ => format!("cannot listen on {addr}: {source}"),
    }
}
