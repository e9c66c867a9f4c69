//! The settings window's form: checking what the user typed, and saving it into the same
//! config file the CLI reads.
//!
//! Every check names the field at fault with a sentence the window shows under it; a form
//! with any error changes nothing.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use workshop_bridge::Config;
use workshop_bridge::config::{ConfigEditor, ConfigFile, EnvProblem, expand_home};
use workshop_bridge::pairing::PairingSettings;

/// What the settings window sends on Apply, as typed (so "70000" or "abc" in the port
/// field get a sentence rather than a deserialisation error).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SettingsForm {
    /// TCP port.
    pub port: String,
    /// Address to listen on.
    pub bind: String,
    /// The token clients present.
    pub token: String,
    /// The agent's state file.
    pub state_file: String,
    /// Where visitor messages go.
    pub inbox_dir: String,
    /// Where the agent's barks come from.
    pub outbox_dir: String,
    /// Extra web origins, one per entry (blank entries are ignored).
    pub allowed_origins: Vec<String>,
    /// The Workshop page the QR code opens; blank for the bridge's own page.
    pub workshop_url: String,
}

/// Why a form was refused: a sentence per field, and one for the whole form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FormError {
    /// Field name (as in [`SettingsForm`]) → what is wrong with it.
    pub fields: BTreeMap<String, String>,
    /// A sentence for the top of the form.
    pub message: String,
}

impl FormError {
    /// An error about the form as a whole.
    pub fn general(message: impl Into<String>) -> Self {
        Self {
            fields: BTreeMap::new(),
            message: message.into(),
        }
    }

    /// An error about one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            fields: BTreeMap::from([(field.to_owned(), message.clone())]),
            message,
        }
    }

    /// Turns a library error into a form error on the setting it names.
    pub fn from_bridge(error: &workshop_bridge::Error) -> Self {
        use workshop_bridge::Error as E;
        let field = match error {
            E::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrNotAvailable => {
                Some("bind")
            }
            E::Bind { .. } => Some("port"),
            E::CreateDir { what, .. } => match *what {
                "inbox" => Some("inbox_dir"),
                "outbox" => Some("outbox_dir"),
                _ => Some("state_file"),
            },
            E::InboxNotWritable { .. } => Some("inbox_dir"),
            E::InvalidSetting { field, .. } => Some(*field),
            E::MissingToken => Some("token"),
            E::Watch { .. } => None,
            _ => None,
        };
        let message = match error {
            E::InvalidSetting { message, .. } => sentence(message),
            _ => sentence(&error.to_string()),
        };
        match field {
            Some(f) => Self::field(f, message),
            None => Self::general(message),
        }
    }
}

/// The library's sentences start in lower case for the CLI's `workshop-bridge: …` prefix;
/// the window shows them on their own.
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => {
            let mut s: String = first.to_uppercase().collect();
            s.push_str(chars.as_str());
            if !s.ends_with('.') {
                s.push('.');
            }
            s
        }
        None => String::new(),
    }
}

/// What the form shows: the settings in effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettingsView {
    /// The form's fields.
    #[serde(flatten)]
    pub form: SettingsForm,
    /// The address chosen for pairing, if any.
    pub address: Option<workshop_bridge::pairing::PairingHost>,
    /// Whether the bridge starts when the app does.
    pub start_bridge_on_launch: bool,
    /// Whether authentication is off (set in the config file; the window does not change it).
    pub no_auth: bool,
    /// The config file shared with the CLI.
    pub config_path: String,
    /// `WORKSHOP_BRIDGE_*` variables that overrode the file when the app started.
    pub env_overrides: Vec<String>,
    /// `WORKSHOP_BRIDGE_*` variables that were set but left out, each with the reason
    /// (`abc is not a port number; …`): the others apply without them.
    pub env_problems: Vec<EnvProblem>,
}

impl SettingsForm {
    /// The form filled from settings in effect.
    pub fn from_config(config: &Config, pairing: &PairingSettings) -> Self {
        Self {
            port: config.port.to_string(),
            bind: config.bind.to_string(),
            token: config.token.clone().unwrap_or_default(),
            state_file: abbreviate_home(&config.state_file),
            inbox_dir: abbreviate_home(&config.inbox_dir),
            outbox_dir: abbreviate_home(&config.outbox_dir),
            allowed_origins: config.allowed_origins.clone(),
            workshop_url: pairing.workshop_url.clone().unwrap_or_default(),
        }
    }

    /// Checks every field and, if all are good, returns `base` with the form's values and
    /// the pairing settings with its Workshop URL. Checks the file system (a path that is
    /// a file where a folder is wanted) but changes nothing.
    pub fn validate(
        &self,
        base: &Config,
        pairing: &PairingSettings,
    ) -> Result<(Config, PairingSettings), FormError> {
        let mut errors = BTreeMap::new();
        let mut config = base.clone();
        let mut pairing = pairing.clone();

        match parse_port(&self.port) {
            Ok(port) => config.port = port,
            Err(e) => {
                errors.insert("port", e);
            }
        }
        match self.bind.trim().parse::<IpAddr>() {
            Ok(ip) => config.bind = ip,
            Err(_) => {
                errors.insert(
                    "bind",
                    format!(
                        "“{}” is not an IP address. Use 0.0.0.0 for every network, 127.0.0.1 for this Mac only, or one of its addresses.",
                        self.bind.trim()
                    ),
                );
            }
        }
        let token = self.token.trim();
        if token.is_empty() {
            if !base.no_auth {
                errors.insert(
                    "token",
                    "The token cannot be empty: devices on the network need it to connect. Use Regenerate for a new one.".to_owned(),
                );
            }
            config.token = None;
        } else if token.len() > 512 || token.chars().any(|c| c.is_control() || c.is_whitespace()) {
            errors.insert(
                "token",
                "The token must be at most 512 characters, without spaces.".to_owned(),
            );
        } else {
            config.token = Some(token.to_owned());
        }
        match folder(&self.state_file, Want::File) {
            Ok(p) => config.state_file = p,
            Err(e) => {
                errors.insert("state_file", e);
            }
        }
        match folder(&self.inbox_dir, Want::Folder) {
            Ok(p) => config.inbox_dir = p,
            Err(e) => {
                errors.insert("inbox_dir", e);
            }
        }
        match folder(&self.outbox_dir, Want::Folder) {
            Ok(p) => config.outbox_dir = p,
            Err(e) => {
                errors.insert("outbox_dir", e);
            }
        }
        if !errors.contains_key("inbox_dir")
            && !errors.contains_key("outbox_dir")
            && config.inbox_dir == config.outbox_dir
        {
            errors.insert(
                "outbox_dir",
                "The outbox must be another folder than the inbox.".to_owned(),
            );
        }
        let origins: Vec<String> = self
            .allowed_origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        if let Some(bad) = origins
            .iter()
            .find(|o| !(o.starts_with("http://") || o.starts_with("https://")) || o.len() <= 8)
        {
            errors.insert(
                "allowed_origins",
                format!("“{bad}” is not a web origin. Write it like http://workshop.local:5173."),
            );
        }
        config.allowed_origins = origins;
        let url = self.workshop_url.trim();
        pairing.workshop_url = (!url.is_empty()).then(|| url.to_owned());
        if let Err(e) = pairing.validate() {
            let message = FormError::from_bridge(&e).message;
            errors.insert("workshop_url", message);
        }

        if errors.is_empty()
            && let Err(e) = config.validate()
        {
            return Err(FormError::from_bridge(&e));
        }
        if errors.is_empty() {
            return Ok((config, pairing));
        }
        let message = if errors.len() == 1 {
            "One setting needs fixing; nothing was changed.".to_owned()
        } else {
            format!(
                "{} settings need fixing; nothing was changed.",
                errors.len()
            )
        };
        Err(FormError {
            fields: errors.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            message,
        })
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    let text = text.trim();
    let bad = || format!("“{text}” is not a port: enter a number from 1 to 65535.");
    if text.is_empty() {
        return Err("Enter a port from 1 to 65535 (the Workshop expects 8765).".to_owned());
    }
    let n: u64 = text.parse().map_err(|_| bad())?;
    match u16::try_from(n) {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(bad()),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    File,
    Folder,
}

/// Checks a path from the form: absolute (after `~/`), and not a file where a folder is
/// wanted or the other way round. Missing folders are fine: the bridge creates them.
fn folder(text: &str, want: Want) -> Result<PathBuf, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(match want {
            Want::File => "Choose the YAML file the agent writes.".to_owned(),
            Want::Folder => "Choose a folder.".to_owned(),
        });
    }
    let path = expand_home(Path::new(text));
    if !path.is_absolute() {
        return Err(format!(
            "“{text}” is not a full path; it must start with / or ~/."
        ));
    }
    match (want, std::fs::metadata(&path)) {
        (Want::Folder, Ok(meta)) if !meta.is_dir() => {
            return Err(format!("“{text}” is a file, not a folder."));
        }
        (Want::File, Ok(meta)) if meta.is_dir() => {
            return Err(format!(
                "“{text}” is a folder; choose the YAML file the agent writes."
            ));
        }
        _ => {}
    }
    // A folder on the way that is really a file would stop the bridge from creating it.
    let mut ancestor = path.parent();
    while let Some(dir) = ancestor {
        if let Ok(meta) = std::fs::metadata(dir) {
            if !meta.is_dir() {
                return Err(format!("“{}” is a file, not a folder.", dir.display()));
            }
            break;
        }
        ancestor = dir.parent();
    }
    Ok(path)
}

/// `~/.timmy/inbox` rather than `/Users/timmy/.timmy/inbox`: shorter, and what the README
/// and the CLI's help say. [`SettingsForm::validate`] expands it back.
pub fn abbreviate_home(path: &Path) -> String {
    match dirs_home().and_then(|home| path.strip_prefix(home).ok().map(Path::to_owned)) {
        Some(rest) if !rest.as_os_str().is_empty() => format!("~/{}", rest.display()),
        _ => path.display().to_string(),
    }
}

fn dirs_home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// Writes the settings the window manages into the config file at `path`, through the
/// library's [`ConfigEditor`]: a setting is written only when it differs from what the file
/// gives, in the key the user wrote it under, and everything else in the file (comments,
/// key order, other keys and sections) stays as it was. Atomic, and readable only by the
/// owner (the file holds the token). A file that is not valid TOML is not touched.
pub fn save_config(path: &Path, config: &Config) -> Result<(), String> {
    let file = ConfigFile::read(path).map_err(|e| sentence(&e.to_string()))?;
    let mut editor = ConfigEditor::from_file(&file)
        .map_err(|e| sentence(&format!("{e}; it was not changed")))?;
    // What the file holds now; when a value in it cannot be read, every managed setting is
    // written (which puts right what was wrong).
    let on_file = Config::from_file(&file).ok();
    let defaults = Config::default();
    let path_text = |p: &Path| toml::Value::String(p.display().to_string());
    let origins_key = if editor.contains("allowed_origin") {
        "allowed_origin"
    } else {
        "allowed_origins"
    };
    type Field = fn(&Config, &Config) -> bool;
    let managed: [(&str, toml::Value, Field); 6] = [
        ("port", i64::from(config.port).into(), |a, b| {
            a.port == b.port
        }),
        ("bind", config.bind.to_string().into(), |a, b| {
            a.bind == b.bind
        }),
        ("state_file", path_text(&config.state_file), |a, b| {
            a.state_file == b.state_file
        }),
        ("inbox_dir", path_text(&config.inbox_dir), |a, b| {
            a.inbox_dir == b.inbox_dir
        }),
        ("outbox_dir", path_text(&config.outbox_dir), |a, b| {
            a.outbox_dir == b.outbox_dir
        }),
        (
            origins_key,
            config.allowed_origins.clone().into(),
            |a, b| a.allowed_origins == b.allowed_origins,
        ),
    ];
    for (key, value, same) in managed {
        if on_file.as_ref().is_some_and(|f| same(f, config)) {
            continue;
        }
        if !same(&defaults, config) || editor.contains(key) {
            editor.set(key, value);
        }
    }
    match &config.token {
        Some(token)
            if on_file
                .as_ref()
                .is_none_or(|f| f.token.as_ref() != Some(token)) =>
        {
            editor.set("token", token.as_str());
        }
        Some(_) => {}
        None => editor.remove("token"),
    }
    editor.save().map_err(|e| sentence(&e.to_string()))
}

/// The app's own preferences: the `[app]` section of the config file it shares with the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppPrefs {
    /// Start the bridge when the app starts (at login, say).
    pub start_bridge_on_launch: bool,
}

impl Default for AppPrefs {
    fn default() -> Self {
        Self {
            start_bridge_on_launch: true,
        }
    }
}

impl AppPrefs {
    /// Reads the `[app]` section of the config file; a missing or invalid one gives the
    /// defaults (and a warning).
    pub fn load(config_path: &Path) -> Self {
        let section = ConfigFile::read(config_path)
            .map_err(|e| e.to_string())
            .and_then(|file| toml::from_str::<toml::Table>(file.text()).map_err(|e| e.to_string()))
            .map(|mut table| table.remove("app"));
        match section {
            Ok(None) => Self::default(),
            Ok(Some(section)) => section.try_into().unwrap_or_else(|e: toml::de::Error| {
                tracing::warn!(file = %config_path.display(), error = %e, "ignoring invalid [app] preferences");
                Self::default()
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the app preferences");
                Self::default()
            }
        }
    }

    /// Writes the `[app]` section into the config file through the library's
    /// [`ConfigEditor`]: atomically, keeping everything else (comments, order, other keys of
    /// `[app]`) as it was written.
    pub fn save(&self, config_path: &Path) -> Result<(), String> {
        let mut editor = ConfigEditor::open(config_path).map_err(|e| sentence(&e.to_string()))?;
        let values = toml::Table::try_from(self).map_err(|e| e.to_string())?;
        for (key, value) in values {
            editor.set_in("app", &key, value);
        }
        editor.save().map_err(|e| sentence(&e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    struct Fixture {
        dir: tempfile::TempDir,
        base: Config,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let base = Config {
            token: Some("secret-0123456789abcdefghijklmnop".into()),
            state_file: dir.path().join("state.yaml"),
            inbox_dir: dir.path().join("inbox"),
            outbox_dir: dir.path().join("outbox"),
            ..Config::default()
        };
        Fixture { dir, base }
    }

    fn form(f: &Fixture) -> SettingsForm {
        SettingsForm::from_config(&f.base, &PairingSettings::default())
    }

    fn refused(f: &Fixture, form: &SettingsForm) -> FormError {
        form.validate(&f.base, &PairingSettings::default())
            .expect_err("the form should be refused")
    }

    #[test]
    fn an_unchanged_form_is_accepted_as_it_is() {
        let f = fixture();
        let (config, pairing) = form(&f)
            .validate(&f.base, &PairingSettings::default())
            .unwrap();
        assert_eq!(config, f.base);
        assert_eq!(pairing, PairingSettings::default());
    }

    #[test]
    fn port_70000_is_refused_with_a_sentence() {
        let f = fixture();
        let mut form = form(&f);
        form.port = "70000".into();
        let err = refused(&f, &form);
        assert_eq!(
            err.fields["port"],
            "“70000” is not a port: enter a number from 1 to 65535."
        );
        assert_eq!(
            err.message,
            "One setting needs fixing; nothing was changed."
        );
        for bad in ["0", "-1", "abc", "8765.5"] {
            form.port = bad.into();
            assert!(refused(&f, &form).fields.contains_key("port"), "{bad}");
        }
        form.port = " 9000 ".into();
        assert_eq!(
            form.validate(&f.base, &PairingSettings::default())
                .unwrap()
                .0
                .port,
            9000
        );
    }

    #[test]
    fn an_empty_token_is_refused() {
        let f = fixture();
        let mut form = form(&f);
        form.token = "   ".into();
        let err = refused(&f, &form);
        assert!(
            err.fields["token"].starts_with("The token cannot be empty"),
            "{err:?}"
        );
        form.token = "has space".into();
        assert!(refused(&f, &form).fields.contains_key("token"));
    }

    #[test]
    fn a_file_where_a_folder_is_wanted_is_refused() {
        let f = fixture();
        let file = f.dir.path().join("notes.txt");
        std::fs::write(&file, "x").unwrap();
        let mut form = form(&f);
        form.inbox_dir = file.display().to_string();
        form.outbox_dir = file.join("below").display().to_string();
        let err = refused(&f, &form);
        assert_eq!(
            err.fields["inbox_dir"],
            format!("“{}” is a file, not a folder.", file.display())
        );
        assert_eq!(
            err.fields["outbox_dir"],
            format!("“{}” is a file, not a folder.", file.display())
        );
        assert_eq!(err.message, "2 settings need fixing; nothing was changed.");

        let mut form = self::form(&f);
        form.state_file = f.dir.path().display().to_string();
        assert!(refused(&f, &form).fields["state_file"].contains("is a folder"));
        form.state_file = "relative.yaml".into();
        assert!(refused(&f, &form).fields["state_file"].contains("not a full path"));
    }

    #[test]
    fn other_fields_get_their_own_sentences() {
        let f = fixture();
        let mut form = form(&f);
        form.bind = "localhost".into();
        form.allowed_origins = vec!["workshop.local".into()];
        form.workshop_url = "not a url".into();
        form.outbox_dir = form.inbox_dir.clone();
        let err = refused(&f, &form);
        assert!(err.fields["bind"].contains("is not an IP address"));
        assert!(err.fields["allowed_origins"].contains("“workshop.local” is not a web origin"));
        assert!(
            err.fields["workshop_url"].contains("is not a URL"),
            "{err:?}"
        );
        assert!(err.fields["outbox_dir"].contains("another folder"));
    }

    #[test]
    fn good_values_are_taken() {
        let f = fixture();
        let mut form = form(&f);
        form.port = "9001".into();
        form.bind = "127.0.0.1".into();
        form.token = "new-token-0123456789abcdefghijkl".into();
        form.allowed_origins = vec![" http://workshop.local:5173/ ".into(), "".into()];
        form.workshop_url = "https://workshop.example/".into();
        let (config, pairing) = form.validate(&f.base, &PairingSettings::default()).unwrap();
        assert_eq!(config.port, 9001);
        assert_eq!(config.bind.to_string(), "127.0.0.1");
        assert_eq!(
            config.token.as_deref(),
            Some("new-token-0123456789abcdefghijkl")
        );
        assert_eq!(config.allowed_origins, ["http://workshop.local:5173"]);
        assert_eq!(
            pairing.workshop_url.as_deref(),
            Some("https://workshop.example/")
        );
    }

    #[test]
    fn bridge_errors_land_on_the_field_they_are_about() {
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = busy.local_addr().unwrap();
        let err = workshop_bridge::Error::Bind {
            addr,
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        let form_err = FormError::from_bridge(&err);
        assert!(
            form_err.fields["port"].starts_with(&format!("Port {} is already in use", addr.port()))
        );
        let err = workshop_bridge::Error::InboxNotWritable {
            path: "/x".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert!(
            FormError::from_bridge(&err)
                .fields
                .contains_key("inbox_dir")
        );
    }

    #[test]
    fn paths_under_home_are_shown_with_a_tilde_and_taken_back() {
        let Some(home) = dirs_home() else { return };
        let f = fixture();
        let mut base = f.base.clone();
        base.inbox_dir = home.join(".timmy").join("inbox");
        let form = SettingsForm::from_config(&base, &PairingSettings::default());
        assert_eq!(form.inbox_dir, "~/.timmy/inbox");
        let (config, _) = form.validate(&base, &PairingSettings::default()).unwrap();
        assert_eq!(config.inbox_dir, base.inbox_dir);
    }

    #[test]
    fn saving_keeps_other_keys_and_skips_untouched_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "heartbeat_secs = 20\nport = 8765\n").unwrap();
        let config = Config {
            port: 9100,
            token: Some("tok".into()),
            ..Config::default()
        };
        save_config(&path, &config).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(table["heartbeat_secs"].as_integer(), Some(20));
        assert_eq!(table["port"].as_integer(), Some(9100));
        assert_eq!(table["token"].as_str(), Some("tok"));
        assert!(!table.contains_key("state_file"), "{text}");
        assert!(!table.contains_key("bind"), "{text}");
        // the CLI reads what the app wrote
        let loaded = Config::load(&path).unwrap();
        assert_eq!(loaded.port, 9100);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    /// The commented config file the library's tests save through every other path.
    const COMMENTED: &str = include_str!("../../tests/support/commented-config.toml");

    fn assert_private(path: &Path) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn applying_the_form_changes_only_what_changed_and_keeps_the_rest_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, COMMENTED).unwrap();
        let loaded = Config::load(&path).unwrap();
        let mut form = SettingsForm::from_config(&loaded, &PairingSettings::default());
        form.port = "9100".into();
        form.token = "fedcba9876543210fedcba9876543210".into();
        form.allowed_origins.push("http://other.local:8080".into());
        let (config, _) = form.validate(&loaded, &PairingSettings::default()).unwrap();
        save_config(&path, &config).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            COMMENTED
                .replace("port = 9000", "port = 9100")
                .replace(
                    "0123456789abcdef0123456789abcdef",
                    "fedcba9876543210fedcba9876543210"
                )
                .replace(
                    "[\"http://workshop.local:5173\"]",
                    "[\"http://workshop.local:5173\", \"http://other.local:8080\"]"
                )
        );
        assert_private(&path);
        let reloaded = Config::load(&path).unwrap();
        assert_eq!(reloaded.port, 9100);
        assert_eq!(reloaded.state_file, loaded.state_file);

        // Nothing changed: the file is not written at all (its mode shows it).
        std::fs::write(&path, COMMENTED).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
            save_config(&path, &Config::load(&path).unwrap()).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o640, "not rewritten");
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), COMMENTED);
    }

    #[test]
    fn the_app_section_is_saved_keeping_what_the_app_does_not_know() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, COMMENTED).unwrap();
        assert!(AppPrefs::load(&path).start_bridge_on_launch);
        AppPrefs {
            start_bridge_on_launch: false,
        }
        .save(&path)
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            COMMENTED.replace(
                "start_bridge_on_launch = true",
                "start_bridge_on_launch = false"
            )
        );
        assert_private(&path);
        assert!(!AppPrefs::load(&path).start_bridge_on_launch);
        // A file with no [app] section gets one at the end.
        let fresh = dir.path().join("fresh.toml");
        std::fs::write(&fresh, "# mine\nport = 9000\n").unwrap();
        AppPrefs::default().save(&fresh).unwrap();
        assert_eq!(
            std::fs::read_to_string(&fresh).unwrap(),
            "# mine\nport = 9000\n\n[app]\nstart_bridge_on_launch = true\n"
        );
    }

    #[test]
    fn a_file_that_is_not_toml_is_not_overwritten_by_the_app_section_either() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "token = \"keep\"\nport = [").unwrap();
        let err = AppPrefs::default().save(&path).unwrap_err();
        assert!(err.contains("is not valid TOML"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "token = \"keep\"\nport = ["
        );
    }

    #[test]
    fn an_invalid_config_file_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "port = [").unwrap();
        let err = save_config(&path, &Config::default()).unwrap_err();
        assert!(err.contains("not changed"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "port = [");
    }
}
