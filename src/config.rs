//! One settings type for the CLI, the app and the tests.
//!
//! Precedence, lowest first: built-in defaults, the TOML config file, `WORKSHOP_BRIDGE_*`
//! environment variables, command-line flags. Flags and environment share one clap type,
//! [`Overrides`], so the app (which has no command line) reads the same variables, each on
//! its own ([`EnvOverrides`]): one it cannot use is named, and the others still apply.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;

mod editor;
mod env;
mod file;
pub mod pairing;
pub mod values;

pub use editor::ConfigEditor;
pub use env::{EnvOverrides, EnvProblem, env_problems};
pub use file::ConfigFile;
use pairing::PairingSettings;
use values::{
    de_address, de_log_format, de_number, de_optional_number, de_port, de_switch, parse_address,
    parse_log_format, parse_number, parse_port, parse_switch,
};

/// The port the Workshop expects the bridge on.
pub const DEFAULT_PORT: u16 = 8765;

/// Every setting of the bridge. Field names are the keys of the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// TCP port to listen on; `0` lets the operating system pick a free one.
    #[serde(deserialize_with = "de_port")]
    pub port: u16,
    /// Address to listen on. `0.0.0.0` so an iPad on the same Wi-Fi can reach it.
    #[serde(deserialize_with = "de_address")]
    pub bind: IpAddr,
    /// The YAML file the agent writes its world into.
    pub state_file: PathBuf,
    /// Where visitor messages are written, one JSON file each, for the agent to read.
    pub inbox_dir: PathBuf,
    /// Where the agent drops messages (barks) to broadcast to every client.
    pub outbox_dir: PathBuf,
    /// The secret clients present as `?token=` or `Authorization: Bearer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// An optional second secret that agents must present to speak as agents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_token: Option<String>,
    /// Accept every client without a token.
    #[serde(deserialize_with = "de_switch")]
    pub no_auth: bool,
    /// Require the token from loopback clients too.
    #[serde(deserialize_with = "de_switch")]
    pub no_trust_loopback: bool,
    /// Extra web origins allowed to open a WebSocket (e.g. `http://workshop.local:5173`).
    #[serde(alias = "allowed_origin")]
    pub allowed_origins: Vec<String>,
    /// Extra host names this bridge answers to, besides `localhost`, IP addresses and this
    /// machine's own names (e.g. `workshop.example.lan`; `.example.lan` for every name under
    /// it). A request whose `Host` is not one of them is refused: that is what stops a web
    /// page from reaching the bridge by pointing its own name at this machine (DNS
    /// rebinding).
    #[serde(alias = "allowed_host")]
    pub allowed_hosts: Vec<String>,
    /// Accept a configured token shorter than 128 bits (for tests and throwaway setups).
    #[serde(deserialize_with = "de_switch")]
    pub allow_weak_token: bool,
    /// Seconds between server pings; a client silent for two intervals is dropped.
    #[serde(deserialize_with = "de_number")]
    pub heartbeat_secs: u64,
    /// Poll the state file and outbox every N milliseconds instead of using file events.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_optional_number"
    )]
    pub poll_ms: Option<u64>,
    /// Log output format.
    #[serde(deserialize_with = "de_log_format")]
    pub log_format: LogFormat,
    /// Largest WebSocket message accepted from a client, in bytes.
    #[serde(deserialize_with = "de_number")]
    pub max_frame_bytes: usize,
    /// Longest visitor message text, in characters.
    #[serde(deserialize_with = "de_number")]
    pub max_text_chars: usize,
    /// Messages a connection may send per second before it is refused (and then closed).
    /// High enough for an agent animating a scene at frame rate; the inbox has its own bound.
    #[serde(deserialize_with = "de_number")]
    pub max_messages_per_sec: u32,
    /// Most clients connected at once.
    #[serde(deserialize_with = "de_number")]
    pub max_connections: usize,
    /// Most connections open at once from one IP address, so one host cannot take every
    /// slot.
    #[serde(deserialize_with = "de_number")]
    pub max_connections_per_address: usize,
    /// Seconds a client has to send its request headers before it is cut off.
    #[serde(deserialize_with = "de_number")]
    pub handshake_timeout_secs: u64,
    /// Most files waiting in the inbox; beyond this new messages are refused.
    #[serde(deserialize_with = "de_number")]
    pub max_inbox_files: usize,
    /// Largest state file the bridge will read, in bytes.
    #[serde(deserialize_with = "de_number")]
    pub max_state_bytes: u64,
    /// Messages queued for one client before it counts as too slow and is closed.
    #[serde(deserialize_with = "de_number")]
    pub client_queue: usize,
    /// Bytes queued for one client before it counts as too slow and is closed (a single
    /// message always fits in an empty queue).
    #[serde(deserialize_with = "de_number")]
    pub max_client_queue_bytes: usize,
    /// Bytes queued for all clients together; beyond it the largest queues are closed first.
    #[serde(deserialize_with = "de_number")]
    pub max_queued_bytes: usize,
    /// Longest message `id` a client may send, in bytes (it is echoed and remembered).
    #[serde(deserialize_with = "de_number")]
    pub max_id_bytes: usize,
    /// Deepest nesting of arrays and objects in a client message that is relayed or written.
    #[serde(deserialize_with = "de_number")]
    pub max_json_depth: usize,
    /// Bytes of message ids remembered for exactly-once inbox writes.
    #[serde(deserialize_with = "de_number")]
    pub max_remembered_id_bytes: usize,
    /// Serve this directory (your own built Workshop, e.g. a Three.js app) at `/` instead of
    /// the built-in page; `/client.js` stays available.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workshop_dir: Option<PathBuf>,
    /// NATS servers of a cluster of bridges to join (`nats://HOST:PORT`, one or more);
    /// empty, the bridge stands alone and opens no connection of its own.
    pub cluster: Vec<String>,
    /// Serve the cluster's state and inbox through NATS instead of local files: a relay
    /// reads no state file, writes no inbox and watches no outbox (needs `cluster`).
    #[serde(deserialize_with = "de_switch")]
    pub relay: bool,
    /// The token the NATS server asks of the cluster's bridges.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_token: Option<String>,
    /// A NATS credentials file (`.creds`: a user JWT and its key) for the cluster link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_creds: Option<PathBuf>,
    /// The `[pairing]` section: which Workshop page the iPad's QR code opens and which of
    /// this machine's addresses it names. Kept here so the app and `workshop-bridge qr` read
    /// one file.
    #[serde(skip_serializing_if = "PairingSettings::is_default")]
    pub pairing: PairingSettings,
    /// The `[app]` section: the menu-bar app's own preferences. The bridge does not read it;
    /// it is here so that one config file serves both, and is kept as written.
    #[serde(skip_serializing_if = "toml::Table::is_empty")]
    pub app: toml::Table,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        let home = dirs::home_dir().unwrap_or_default();
        let timmy = home.join(".timmy");
        Self {
            port: DEFAULT_PORT,
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            state_file: timmy.join("workshop-state.yaml"),
            inbox_dir: timmy.join("inbox"),
            outbox_dir: timmy.join("outbox"),
            token: None,
            agent_token: None,
            no_auth: false,
            no_trust_loopback: false,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            allow_weak_token: false,
            heartbeat_secs: 15,
            poll_ms: None,
            log_format: LogFormat::Text,
            max_frame_bytes: 1024 * 1024,
            max_text_chars: 4000,
            max_messages_per_sec: 100,
            max_connections: 10_000,
            max_connections_per_address: 256,
            handshake_timeout_secs: 10,
            max_inbox_files: 10_000,
            max_state_bytes: 16 * 1024 * 1024,
            client_queue: 256,
            max_client_queue_bytes: 1024 * 1024,
            max_queued_bytes: 64 * 1024 * 1024,
            max_id_bytes: 128,
            max_json_depth: 64,
            max_remembered_id_bytes: 4 * 1024 * 1024,
            workshop_dir: None,
            cluster: Vec::new(),
            relay: false,
            cluster_token: None,
            cluster_creds: None,
            pairing: PairingSettings::default(),
            app: toml::Table::new(),
        }
    }
}

/// Settings from the command line and the environment, applied over the config file.
///
/// Every field is optional: only what the user actually set overrides the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// TCP port to listen on (0 picks a free port) [default: 8765]
    #[arg(long, env = "WORKSHOP_BRIDGE_PORT", value_parser = parse_port)]
    pub port: Option<u16>,
    /// Address to listen on [default: 0.0.0.0]
    #[arg(long, env = "WORKSHOP_BRIDGE_BIND", value_parser = parse_address)]
    pub bind: Option<IpAddr>,
    /// The agent's state file [default: ~/.timmy/workshop-state.yaml]
    #[arg(long, env = "WORKSHOP_BRIDGE_STATE_FILE")]
    pub state_file: Option<PathBuf>,
    /// Directory visitor messages are written to [default: ~/.timmy/inbox]
    #[arg(long, env = "WORKSHOP_BRIDGE_INBOX_DIR")]
    pub inbox_dir: Option<PathBuf>,
    /// Directory the agent drops barks into [default: ~/.timmy/outbox]
    #[arg(long, env = "WORKSHOP_BRIDGE_OUTBOX_DIR")]
    pub outbox_dir: Option<PathBuf>,
    /// Token clients must present (generated and saved on first run if unset)
    #[arg(long, env = "WORKSHOP_BRIDGE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Token agents must present to register or send agent messages
    #[arg(long, env = "WORKSHOP_BRIDGE_AGENT_TOKEN", hide_env_values = true)]
    pub agent_token: Option<String>,
    /// Accept every client without a token (anyone on the network can connect)
    #[arg(long, env = "WORKSHOP_BRIDGE_NO_AUTH", value_parser = parse_switch)]
    pub no_auth: bool,
    /// Require the token from clients on this machine too
    #[arg(long, env = "WORKSHOP_BRIDGE_NO_TRUST_LOOPBACK", value_parser = parse_switch)]
    pub no_trust_loopback: bool,
    /// Extra web origin allowed to connect (repeatable)
    #[arg(
        long = "allowed-origin",
        env = "WORKSHOP_BRIDGE_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// Extra host name this bridge answers to (repeatable; `.example.lan` for every name under it)
    #[arg(
        long = "allowed-host",
        env = "WORKSHOP_BRIDGE_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// Accept a configured token shorter than 128 bits
    #[arg(long, env = "WORKSHOP_BRIDGE_ALLOW_WEAK_TOKEN", value_parser = parse_switch)]
    pub allow_weak_token: bool,
    /// Seconds between heartbeats [default: 15]
    #[arg(long, env = "WORKSHOP_BRIDGE_HEARTBEAT_SECS", value_parser = parse_number::<u64>)]
    pub heartbeat_secs: Option<u64>,
    /// Poll files every N ms instead of using file-system events
    #[arg(long, env = "WORKSHOP_BRIDGE_POLL_MS", value_parser = parse_number::<u64>)]
    pub poll_ms: Option<u64>,
    /// Log format: text or json [default: text]
    #[arg(long, env = "WORKSHOP_BRIDGE_LOG_FORMAT", value_parser = parse_log_format)]
    pub log_format: Option<LogFormat>,
    /// Largest message accepted from a client, in bytes [default: 1048576]
    #[arg(long, env = "WORKSHOP_BRIDGE_MAX_FRAME_BYTES", value_parser = parse_number::<usize>)]
    pub max_frame_bytes: Option<usize>,
    /// Longest visitor message, in characters [default: 4000]
    #[arg(long, env = "WORKSHOP_BRIDGE_MAX_TEXT_CHARS", value_parser = parse_number::<usize>)]
    pub max_text_chars: Option<usize>,
    /// Messages per second one connection may send [default: 100]
    #[arg(long, env = "WORKSHOP_BRIDGE_MAX_MESSAGES_PER_SEC", value_parser = parse_number::<u32>)]
    pub max_messages_per_sec: Option<u32>,
    /// Most clients connected at once [default: 10000]
    #[arg(long, env = "WORKSHOP_BRIDGE_MAX_CONNECTIONS", value_parser = parse_number::<usize>)]
    pub max_connections: Option<usize>,
    /// Most connections from one IP address [default: 256]
    #[arg(long, env = "WORKSHOP_BRIDGE_MAX_CONNECTIONS_PER_ADDRESS", value_parser = parse_number::<usize>)]
    pub max_connections_per_address: Option<usize>,
    /// Seconds a client has to send its request headers [default: 10]
    #[arg(long, env = "WORKSHOP_BRIDGE_HANDSHAKE_TIMEOUT_SECS", value_parser = parse_number::<u64>)]
    pub handshake_timeout_secs: Option<u64>,
    /// Most files waiting in the inbox [default: 10000]
    #[arg(long, env = "WORKSHOP_BRIDGE_MAX_INBOX_FILES", value_parser = parse_number::<usize>)]
    pub max_inbox_files: Option<usize>,
    /// Largest state file read, in bytes [default: 16777216]
    #[arg(long, env = "WORKSHOP_BRIDGE_MAX_STATE_BYTES", value_parser = parse_number::<u64>)]
    pub max_state_bytes: Option<u64>,
    /// Messages queued per client before it is closed as too slow [default: 256]
    #[arg(long, env = "WORKSHOP_BRIDGE_CLIENT_QUEUE", value_parser = parse_number::<usize>)]
    pub client_queue: Option<usize>,
    /// Bytes queued per client before it is closed as too slow [default: 1048576]
    #[arg(long, env = "WORKSHOP_BRIDGE_MAX_CLIENT_QUEUE_BYTES", value_parser = parse_number::<usize>)]
    pub max_client_queue_bytes: Option<usize>,
    /// Bytes queued for all clients; beyond it the largest queues are closed [default: 67108864]
    #[arg(long, env = "WORKSHOP_BRIDGE_MAX_QUEUED_BYTES", value_parser = parse_number::<usize>)]
    pub max_queued_bytes: Option<usize>,
    /// Longest message id, in bytes [default: 128]
    #[arg(long, env = "WORKSHOP_BRIDGE_MAX_ID_BYTES", value_parser = parse_number::<usize>)]
    pub max_id_bytes: Option<usize>,
    /// Deepest JSON nesting of a client message [default: 64]
    #[arg(long, env = "WORKSHOP_BRIDGE_MAX_JSON_DEPTH", value_parser = parse_number::<usize>)]
    pub max_json_depth: Option<usize>,
    /// Bytes of message ids remembered for exactly-once writes [default: 4194304]
    #[arg(long, env = "WORKSHOP_BRIDGE_MAX_REMEMBERED_ID_BYTES", value_parser = parse_number::<usize>)]
    pub max_remembered_id_bytes: Option<usize>,
    /// Serve this directory (your own built Workshop) at / instead of the built-in page
    #[arg(long, env = "WORKSHOP_BRIDGE_WORKSHOP_DIR")]
    pub workshop_dir: Option<PathBuf>,
    /// Join a cluster of bridges through this NATS server (repeatable), e.g. nats://host:4222
    #[arg(long, env = "WORKSHOP_BRIDGE_CLUSTER", value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// Serve the cluster origin's state and inbox instead of local files (needs --cluster)
    #[arg(long, env = "WORKSHOP_BRIDGE_RELAY", value_parser = parse_switch)]
    pub relay: bool,
    /// Token the NATS server asks of the cluster's bridges
    #[arg(long, env = "WORKSHOP_BRIDGE_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,
    /// NATS credentials file (.creds) for the cluster link
    #[arg(long, env = "WORKSHOP_BRIDGE_CLUSTER_CREDS")]
    pub cluster_creds: Option<PathBuf>,
}

impl Overrides {
    /// Reads only the `WORKSHOP_BRIDGE_*` environment variables (for programs without flags),
    /// each on its own: one that cannot be used is named in [`EnvOverrides::problems`] and
    /// the others still apply.
    pub fn from_env() -> EnvOverrides {
        EnvOverrides::read()
    }

    /// Writes every value that was set into `config`.
    pub fn apply_to(self, config: &mut Config) {
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { config.$field = v; } )* };
        }
        set!(
            port,
            bind,
            state_file,
            inbox_dir,
            outbox_dir,
            heartbeat_secs,
            log_format,
            max_frame_bytes,
            max_text_chars,
            max_messages_per_sec,
            max_connections,
            max_connections_per_address,
            handshake_timeout_secs,
            max_inbox_files,
            max_state_bytes,
            client_queue,
            max_client_queue_bytes,
            max_queued_bytes,
            max_id_bytes,
            max_json_depth,
            max_remembered_id_bytes
        );
        if self.token.is_some() {
            config.token = self.token;
        }
        if self.agent_token.is_some() {
            config.agent_token = self.agent_token;
        }
        if self.poll_ms.is_some() {
            config.poll_ms = self.poll_ms;
        }
        if self.workshop_dir.is_some() {
            config.workshop_dir = self.workshop_dir;
        }
        if !self.cluster.is_empty() {
            config.cluster = self.cluster;
        }
        config.relay |= self.relay;
        if self.cluster_token.is_some() {
            config.cluster_token = self.cluster_token;
        }
        if self.cluster_creds.is_some() {
            config.cluster_creds = self.cluster_creds;
        }
        config.no_auth |= self.no_auth;
        config.no_trust_loopback |= self.no_trust_loopback;
        config.allow_weak_token |= self.allow_weak_token;
        if !self.allowed_origins.is_empty() {
            config.allowed_origins = self.allowed_origins;
        }
        if !self.allowed_hosts.is_empty() {
            config.allowed_hosts = self.allowed_hosts;
        }
    }
}

impl Config {
    /// Where the CLI and the app keep their shared config file.
    ///
    /// `~/.config/workshop-bridge/config.toml` on Linux,
    /// `~/Library/Application Support/workshop-bridge/config.toml` on macOS.
    pub fn default_path() -> Result<PathBuf, Error> {
        dirs::config_dir()
            .map(|d| d.join("workshop-bridge").join("config.toml"))
            .ok_or(Error::NoHome)
    }

    /// Reads the config file; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Self, Error> {
        Self::from_file(&ConfigFile::read(path)?)
    }

    /// The settings of a config file already read; no file gives the defaults.
    pub fn from_file(file: &ConfigFile) -> Result<Self, Error> {
        let mut config: Config = file.parse()?;
        config.expand_home();
        Ok(config)
    }

    /// Makes sure a token exists when authentication is on.
    ///
    /// On first run a random 256-bit token is generated and saved into the config file at
    /// `path` through [`ConfigEditor`], keeping everything else the file holds as it was
    /// written (and not writing defaults into it). Returns whether one was generated.
    pub fn ensure_token(&mut self, path: &Path) -> Result<bool, Error> {
        if self.no_auth || self.token.is_some() {
            return Ok(false);
        }
        let token = generate_token()?;
        let mut file = ConfigEditor::open(path)?;
        file.set("token", token.as_str());
        file.save()?;
        self.token = Some(token);
        Ok(true)
    }

    /// How long a client has to send its request headers.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }

    /// The heartbeat interval.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs)
    }

    /// Checks every value the bridge cannot run with, naming the setting at fault.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |field, message: &str| {
            Err(Error::InvalidSetting {
                field,
                message: message.to_owned(),
            })
        };
        if self.handshake_timeout_secs == 0 || self.handshake_timeout_secs > 600 {
            return invalid(
                "handshake_timeout_secs",
                "must be between 1 and 600 seconds",
            );
        }
        if self.heartbeat_secs == 0 || self.heartbeat_secs > 3600 {
            return invalid("heartbeat_secs", "must be between 1 and 3600 seconds");
        }
        if matches!(self.poll_ms, Some(0)) {
            return invalid("poll_ms", "must be at least 1 millisecond");
        }
        for (field, token) in [("token", &self.token), ("agent_token", &self.agent_token)] {
            if let Some(t) = token {
                if t.trim().is_empty() {
                    return invalid(field, "must not be empty");
                }
                if t.len() > 512 || t.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    return invalid(
                        field,
                        "must be at most 512 characters without spaces or control characters",
                    );
                }
                if !self.allow_weak_token && estimated_bits(t) < MIN_TOKEN_BITS {
                    return invalid(
                        field,
                        &format!(
                            "too short to be safe (about {} bits of guessing, where at least {MIN_TOKEN_BITS} are needed: say, 32 random hex characters); generate one with `workshop-bridge token --regenerate`, or allow it with --allow-weak-token",
                            estimated_bits(t)
                        ),
                    );
                }
            }
        }
        for (field, value) in [
            ("max_frame_bytes", self.max_frame_bytes),
            ("max_text_chars", self.max_text_chars),
            ("max_messages_per_sec", self.max_messages_per_sec as usize),
            ("max_connections", self.max_connections),
            (
                "max_connections_per_address",
                self.max_connections_per_address,
            ),
            ("max_inbox_files", self.max_inbox_files),
            ("max_state_bytes", self.max_state_bytes as usize),
            ("client_queue", self.client_queue),
            ("max_client_queue_bytes", self.max_client_queue_bytes),
            ("max_queued_bytes", self.max_queued_bytes),
            ("max_id_bytes", self.max_id_bytes),
            ("max_json_depth", self.max_json_depth),
            ("max_remembered_id_bytes", self.max_remembered_id_bytes),
        ] {
            if value == 0 {
                return invalid(field, "must be greater than zero");
            }
        }
        for origin in &self.allowed_origins {
            if origin != "null"
                && !(origin.starts_with("http://") || origin.starts_with("https://"))
            {
                return invalid(
                    "allowed_origins",
                    &format!("`{origin}` is not an origin like http://host:port"),
                );
            }
        }
        for server in &self.cluster {
            if !["nats://", "tls://"]
                .iter()
                .any(|scheme| server.starts_with(scheme) && server.len() > scheme.len())
            {
                return invalid(
                    "cluster",
                    &format!("`{server}` is not a NATS server address like nats://host:4222"),
                );
            }
        }
        if self.relay && self.cluster.is_empty() {
            return invalid(
                "relay",
                "a relay serves a cluster's state: give the NATS server with --cluster",
            );
        }
        if self.cluster_token.is_some() && self.cluster_creds.is_some() {
            return invalid(
                "cluster_token",
                "give either a cluster token or a credentials file, not both",
            );
        }
        if let Some(t) = &self.cluster_token
            && (t.is_empty() || t.chars().any(|c| c.is_control() || c.is_whitespace()))
        {
            return invalid(
                "cluster_token",
                "must not be empty, and must have no spaces or control characters",
            );
        }
        for host in &self.allowed_hosts {
            if !crate::host::valid_pattern(host) {
                return invalid(
                    "allowed_hosts",
                    &format!("`{host}` is not a host name like workshop.example.lan"),
                );
            }
        }
        for (field, path) in [
            ("state_file", &self.state_file),
            ("inbox_dir", &self.inbox_dir),
            ("outbox_dir", &self.outbox_dir),
        ] {
            if path.as_os_str().is_empty() {
                return invalid(field, "must not be empty");
            }
        }
        Ok(())
    }

    /// Resolves a leading `~/` in paths written by hand in the config file.
    fn expand_home(&mut self) {
        for path in [
            &mut self.state_file,
            &mut self.inbox_dir,
            &mut self.outbox_dir,
        ] {
            *path = expand_home(path);
        }
    }
}

/// `path` with a leading `~` resolved to the user's home folder, as people write paths by
/// hand (in the config file, a flag, the settings window); any other path as it is.
pub fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), dirs::home_dir()) {
        (Ok(rest), Some(home)) if rest.as_os_str().is_empty() => home,
        (Ok(rest), Some(home)) => home.join(rest),
        _ => path.to_owned(),
    }
}

/// The least a configured token must be worth, in bits of guessing.
const MIN_TOKEN_BITS: u32 = 128;

/// How many bits of guessing `token` is worth at most, judged by its length and the
/// smallest usual alphabet that spells it: 4 bits a character for hex, about 5.95 for
/// letters and digits, 6 for base64, 6.55 for any printable ASCII. An estimate from above (a
/// long dictionary word scores well), but it refuses what matters: short passwords.
fn estimated_bits(token: &str) -> u32 {
    let per_char_hundredths: u64 = if token.chars().all(|c| c.is_ascii_hexdigit()) {
        400
    } else if token.chars().all(|c| c.is_ascii_alphanumeric()) {
        595
    } else if token
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '/' | '='))
    {
        600
    } else {
        655
    };
    let bits = token.chars().count() as u64 * per_char_hundredths / 100;
    u32::try_from(bits).unwrap_or(u32::MAX)
}

/// A fresh random 256-bit token, hex-encoded.
pub fn generate_token() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
    let mut hex = String::with_capacity(64);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{b:02x}");
    }
    Ok(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "port = 9000\nheartbeat_secs = 5\nstate_file = \"~/w.yaml\"\n",
        )
        .unwrap();
        let mut config = Config::load(&path).unwrap();
        assert_eq!(config.port, 9000);
        assert_eq!(config.heartbeat_secs, 5);
        assert_eq!(config.max_frame_bytes, Config::default().max_frame_bytes);
        assert!(!config.state_file.starts_with("~"), "~ is expanded");
        Overrides {
            port: Some(9100),
            no_auth: true,
            ..Overrides::default()
        }
        .apply_to(&mut config);
        assert_eq!(config.port, 9100);
        assert_eq!(
            config.heartbeat_secs, 5,
            "unset flags keep the file's value"
        );
        assert!(config.no_auth);
    }

    #[test]
    fn a_missing_file_gives_defaults_and_a_broken_one_a_sentence() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Config::load(&dir.path().join("none.toml")).unwrap(),
            Config::default()
        );
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "port = \"eighty\"\n").unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.starts_with("`port` in the config file"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        std::fs::write(&path, "prot = 1\n").unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("prot"), "unknown keys are named: {e}");
    }

    #[test]
    fn first_run_token_is_saved_privately_keeping_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config.toml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "port = 9001\n").unwrap();
        let mut config = Config::load(&path).unwrap();
        assert!(config.ensure_token(&path).unwrap());
        let token = config.token.clone().unwrap();
        assert_eq!(token.len(), 64);
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
        let reloaded = Config::load(&path).unwrap();
        assert_eq!(reloaded.token.as_deref(), Some(token.as_str()));
        assert_eq!(reloaded.port, 9001);
        assert!(!config.ensure_token(&path).unwrap(), "only once");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    /// Settings different from every default, so that each one is seen to take effect.
    fn not_the_defaults() -> Config {
        Config {
            port: 9123,
            bind: "10.1.2.3".parse().unwrap(),
            state_file: "/agent/world.yaml".into(),
            inbox_dir: "/agent/in".into(),
            outbox_dir: "/agent/out".into(),
            token: Some("t0ken-t0ken-t0ken-t0ken".into()),
            agent_token: Some("agent-agent-agent-agent".into()),
            no_auth: true,
            no_trust_loopback: true,
            allowed_origins: vec!["http://a.example:1".into(), "http://b.example:2".into()],
            allowed_hosts: vec!["a.lan".into(), ".b.lan".into()],
            allow_weak_token: true,
            heartbeat_secs: 7,
            poll_ms: Some(9),
            log_format: LogFormat::Json,
            max_frame_bytes: 11,
            max_text_chars: 12,
            max_messages_per_sec: 13,
            max_connections: 14,
            max_connections_per_address: 15,
            handshake_timeout_secs: 16,
            max_inbox_files: 17,
            max_state_bytes: 18,
            client_queue: 19,
            max_client_queue_bytes: 20,
            max_queued_bytes: 21,
            max_id_bytes: 22,
            max_json_depth: 23,
            max_remembered_id_bytes: 24,
            workshop_dir: Some("/site".into()),
            cluster: vec!["nats://a.lan:4222".into(), "nats://b.lan:4222".into()],
            relay: true,
            cluster_token: Some("cluster-secret".into()),
            cluster_creds: Some("/keys/bridge.creds".into()),
            pairing: PairingSettings::default(),
            app: toml::Table::new(),
        }
    }

    /// The README's promise: a flag's name with underscores is its key in the config file,
    /// and the key does what the flag does. Walks every flag, so a new one cannot miss it.
    #[test]
    fn every_flag_is_a_config_key_of_the_same_name() {
        use clap::{CommandFactory, FromArgMatches};
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            overrides: Overrides,
        }
        // Flags only: the variables of whoever runs the tests play no part.
        let command = Cli::command().mut_args(|a| a.env(None::<&str>));
        let sample = toml::Table::try_from(not_the_defaults()).unwrap();
        let as_text = |v: &toml::Value| match v {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut flags = 0;
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" {
                continue;
            }
            let field = arg.get_id().as_str();
            let value = sample
                .get(field)
                .unwrap_or_else(|| panic!("--{long} sets `{field}`, which is not a config key"));
            let mut args = vec!["workshop-bridge".to_owned()];
            match value {
                toml::Value::Boolean(_) => args.push(format!("--{long}")),
                toml::Value::Array(items) => {
                    for item in items {
                        args.extend([format!("--{long}"), as_text(item)]);
                    }
                }
                other => args.extend([format!("--{long}"), as_text(other)]),
            }
            let matches = command.clone().try_get_matches_from(&args).unwrap();
            let mut from_flag = Config::default();
            Overrides::from_arg_matches(&matches)
                .unwrap()
                .apply_to(&mut from_flag);
            assert_ne!(from_flag, Config::default(), "--{long} changes a setting");

            let key = long.replace('-', "_");
            let from_file =
                file::parse::<Config>(Path::new("c.toml"), &format!("{key} = {value}\n"))
                    .unwrap_or_else(|e| panic!("--{long} as `{key}` in the config file: {e}"));
            assert_eq!(from_file, from_flag, "--{long} and `{key}` differ");
            // The field's own name (the plural of a repeatable flag) works too: it is what
            // the menu-bar app writes.
            let by_field =
                file::parse::<Config>(Path::new("c.toml"), &format!("{field} = {value}\n"))
                    .unwrap();
            assert_eq!(by_field, from_flag, "`{field}` and `{key}` differ");
            flags += 1;
        }
        assert_eq!(flags, 34, "every setting but the sections has a flag");
    }

    #[test]
    fn validation_names_the_setting() {
        type Breakage = fn(&mut Config);
        let cases: [(Breakage, &str); 9] = [
            (|c| c.heartbeat_secs = 0, "heartbeat_secs"),
            (|c| c.cluster = vec!["localhost:4222".into()], "cluster"),
            (|c| c.relay = true, "relay"),
            (
                |c| {
                    c.cluster = vec!["nats://localhost:4222".into()];
                    c.cluster_token = Some("t".into());
                    c.cluster_creds = Some("/k.creds".into());
                },
                "cluster_token",
            ),
            (
                |c| c.cluster_token = Some("two words".into()),
                "cluster_token",
            ),
            (|c| c.token = Some(" ".into()), "token"),
            (|c| c.max_connections = 0, "max_connections"),
            (
                |c| c.allowed_origins = vec!["evil.example".into()],
                "allowed_origins",
            ),
            (|c| c.inbox_dir = PathBuf::new(), "inbox_dir"),
        ];
        for (break_it, field) in cases {
            let mut config = Config::default();
            break_it(&mut config);
            let e = config.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
        assert!(Config::default().validate().is_ok());
    }
}
