//! The errors the bridge can report, each phrased as one sentence a user can act on.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can stop the bridge from starting or a setting from being used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The MCP server could not start, or ended on a fault of its connection.
    #[error("the MCP server on standard input and output stopped: {message}")]
    Mcp {
        /// What went wrong.
        message: String,
    },

    /// The listening socket could not be bound.
    #[error("{}", bind_sentence(.addr, .source))]
    Bind {
        /// The address we tried to listen on.
        addr: SocketAddr,
        /// What the operating system said.
        source: io::Error,
    },

    /// A folder the bridge needs could not be made: the path is a file, the folder it goes
    /// in is missing (only the last folder of a path is made) or is a file, or the system
    /// refused.
    #[error("{}", folder_sentence(.what, .path, .source))]
    CreateDir {
        /// Which folder: "inbox", "outbox", "state file".
        what: &'static str,
        /// Where it should be.
        path: PathBuf,
        /// Why: `AlreadyExists` for a file at the path, `NotFound` for a missing parent,
        /// `NotADirectory` for a file in the way (each naming the path at fault), or what
        /// the system said.
        source: io::Error,
    },

    /// The inbox exists but the bridge cannot write files into it.
    #[error(
        "the inbox folder {} is not writable ({}); make it writable for this user or choose another folder with --inbox-dir",
        .path.display(),
        io_words(.source)
    )]
    InboxNotWritable {
        /// The inbox directory.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },

    /// The cluster's credentials file could not be read.
    #[error(
        "the cluster credentials file {} cannot be used ({}); give a NATS .creds file with --cluster-creds",
        .path.display(),
        io_words(.source)
    )]
    ClusterCredentials {
        /// The credentials file.
        path: PathBuf,
        /// What went wrong reading it.
        source: io::Error,
    },

    /// The cluster link could not be set up.
    #[error("cannot join the cluster through {servers}: {message}")]
    Cluster {
        /// The NATS servers, as given.
        servers: String,
        /// What NATS said.
        message: String,
    },

    /// The config file exists but cannot be read.
    #[error("{}", read_config_sentence(.path, .source))]
    ReadConfig {
        /// The config file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },

    /// The config file is not valid TOML.
    #[error(
        "the config file {} is not valid TOML{}: {message}",
        .path.display(),
        at_position(.position)
    )]
    ParseConfig {
        /// The config file.
        path: PathBuf,
        /// The line and column (from 1) of the fault, when known.
        position: Option<(usize, usize)>,
        /// The parser's description.
        message: String,
    },

    /// A key of the config file is not a setting, or its value cannot be used.
    #[error(
        "`{key}` in the config file {}{}: {message}",
        .path.display(),
        in_parentheses(.position)
    )]
    ConfigValue {
        /// The config file.
        path: PathBuf,
        /// The key, dotted within a section (`pairing.address`).
        key: String,
        /// The line and column (from 1) of the key or its value.
        position: Option<(usize, usize)>,
        /// What is wrong with it.
        message: String,
    },

    /// The config file could not be written.
    #[error("the config file {} cannot be written: {}", .path.display(), io_words(.source))]
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

    /// The system would not report changes to the network interfaces.
    #[error("cannot follow this machine's network addresses: {0}")]
    NetworkWatch(String),

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
        _ => format!("cannot listen on {addr}: {}", io_words(source)),
    }
}

/// The path at fault in a [`Error::CreateDir`], when it is not the folder itself.
#[derive(Debug)]
pub(crate) struct InTheWay(pub(crate) PathBuf);

impl std::fmt::Display for InTheWay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.display())
    }
}

impl std::error::Error for InTheWay {}

fn folder_sentence(what: &str, path: &std::path::Path, source: &io::Error) -> String {
    let (name, flag) = match what {
        "inbox" => ("the inbox folder", "--inbox-dir"),
        "outbox" => ("the outbox folder", "--outbox-dir"),
        "state file" => ("the state file's folder", "--state-file"),
        "config file" => ("the config file's folder", "--config"),
        other => {
            return format!(
                "the {other} folder {} cannot be made: {}",
                path.display(),
                io_words(source)
            );
        }
    };
    let path = path.display();
    let in_the_way = source
        .get_ref()
        .and_then(|e| e.downcast_ref::<InTheWay>())
        .map(|p| p.0.display().to_string());
    match (source.kind(), in_the_way) {
        (io::ErrorKind::AlreadyExists, _) => format!(
            "{name} {path} is a file, not a folder; move the file away or choose another folder with {flag}"
        ),
        (io::ErrorKind::NotFound, Some(parent)) => format!(
            "{name} {path} cannot be made because {parent} does not exist (only the last folder of a path is made); create {parent} first or check {flag}"
        ),
        (io::ErrorKind::NotADirectory, Some(file)) => format!(
            "{name} {path} cannot be made because {file} is a file, not a folder; check {flag}"
        ),
        _ => format!("{name} {path} cannot be made: {}", io_words(source)),
    }
}

fn read_config_sentence(path: &std::path::Path, source: &io::Error) -> String {
    let path = path.display();
    match source.kind() {
        io::ErrorKind::IsADirectory => {
            format!(
                "the config file {path} is a folder, not a file; give a file's path with --config"
            )
        }
        io::ErrorKind::PermissionDenied => format!(
            "the config file {path} cannot be read (permission denied); make it readable by this user or give another with --config"
        ),
        io::ErrorKind::InvalidData => {
            format!("the config file {path} is not text (it is not valid UTF-8)")
        }
        _ => format!(
            "the config file {path} cannot be read: {}",
            io_words(source)
        ),
    }
}

fn at_position(position: &Option<(usize, usize)>) -> String {
    position.map_or_else(String::new, |(line, column)| {
        format!(" at line {line}, column {column}")
    })
}

fn in_parentheses(position: &Option<(usize, usize)>) -> String {
    position.map_or_else(String::new, |(line, column)| {
        format!(" (line {line}, column {column})")
    })
}

/// What the operating system said, in words, without its error number or the name of any
/// temporary file involved.
pub(crate) fn io_words(e: &io::Error) -> String {
    use io::ErrorKind as K;
    let words = match e.kind() {
        K::PermissionDenied => "permission denied",
        K::ReadOnlyFilesystem => "its disk is read-only",
        K::StorageFull => "its disk is full",
        K::QuotaExceeded => "the disk quota is used up",
        K::NotFound => "it does not exist",
        K::IsADirectory => "it is a folder",
        K::NotADirectory => "a part of its path is a file, not a folder",
        K::AlreadyExists => "something is already there",
        K::InvalidFilename => "its name is too long or not allowed",
        _ => {
            let text = e.to_string();
            // "…(os error 5) at path "/x/.tmpAbC"" from tempfile: the number and the path go.
            let text = text.split(" at path ").next().unwrap_or_default();
            let text = match text.rfind(" (os error ") {
                Some(i) => &text[..i],
                None => text,
            };
            let mut chars = text.chars();
            return match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => "an unknown error".to_owned(),
            };
        }
    };
    words.to_owned()
}
