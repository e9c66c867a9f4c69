//! The bridge inside the app: starting, stopping and restarting it on new settings, and
//! publishing its status for the tray and the settings window.
//!
//! One [`Controller`] per app, managed as Tauri state. It knows nothing of windows or
//! menus (so it is tested without them): the app subscribes to [`Controller::subscribe`]
//! and draws.

use std::path::PathBuf;
use std::sync::{Arc, PoisonError};

use serde::Serialize;
use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;
use workshop_bridge::config::{EnvOverrides, EnvProblem};
use workshop_bridge::pairing::{
    self, LanAddress, LocalName, NetworkAddresses, PairingHost, PairingSettings,
};
use workshop_bridge::{Bridge, BridgeHandle, ClientInfo, Config, Overrides, StateHealth};

use crate::logs::{LogBuffer, LogLine};
use crate::settings::{AppPrefs, FormError, SettingsForm, SettingsView, save_config};
use crate::status::BridgeStatus;

/// Where the app keeps its settings: the config file it shares with the CLI, whose
/// `[pairing]` section `workshop-bridge qr` reads too and whose `[app]` section is the app's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The CLI's config file.
    pub config: PathBuf,
}

impl Paths {
    /// The app's settings in the config file at `config`.
    pub fn beside(config: PathBuf) -> Self {
        Self { config }
    }

    /// `WORKSHOP_BRIDGE_CONFIG` if set (as for the CLI), else the platform's config file.
    pub fn from_env() -> Result<Self, workshop_bridge::Error> {
        let config = match std::env::var_os("WORKSHOP_BRIDGE_CONFIG").filter(|v| !v.is_empty()) {
            Some(path) => PathBuf::from(path),
            None => Config::default_path()?,
        };
        Ok(Self::beside(config))
    }
}

/// Everything the settings window's live panel shows.
#[derive(Debug, Clone, Serialize)]
pub struct Live {
    /// The status.
    pub status: BridgeStatus,
    /// The status as the tray menu words it.
    pub line: String,
    /// Connected clients, oldest first.
    pub clients: Vec<ClientInfo>,
    /// The state file's health, while the bridge runs.
    pub state: Option<StateHealth>,
    /// Recent log lines, oldest first.
    pub logs: Vec<LogLine>,
}

/// What the pairing panel shows.
#[derive(Debug, Clone, Serialize)]
pub struct PairingView {
    /// The URL the QR code holds.
    pub url: String,
    /// The QR code, as SVG.
    pub svg: String,
    /// The name or address the URL names.
    pub host: PairingHost,
    /// Whether other devices can reach it.
    pub reachable: bool,
    /// Whether the bridge listens on every address (so the user may pick one).
    pub bind_all: bool,
    /// This machine's LAN addresses.
    pub addresses: Vec<LanAddress>,
    /// This machine's `NAME.local` name, and whether it answers now.
    pub local_name: Option<LocalName>,
    /// The user's pick, if any.
    pub address: Option<PairingHost>,
    /// Why the user's pick is not the one in the URL, when it is not (it is gone).
    pub note: Option<String>,
}

/// A running bridge, shared with the task that watches its clients. `BridgeHandle` is
/// `Send` but not `Sync`, hence the lock; it is only ever held for a quick read.
type SharedHandle = Arc<std::sync::Mutex<BridgeHandle>>;

fn with_handle<T>(handle: &SharedHandle, f: impl FnOnce(&BridgeHandle) -> T) -> T {
    f(&handle.lock().unwrap_or_else(PoisonError::into_inner))
}

struct Running {
    handle: SharedHandle,
    stop_watching: CancellationToken,
    watcher: tokio::task::JoinHandle<()>,
}

struct Inner {
    /// The settings in effect: the file and the environment at start, then what Apply set.
    config: Config,
    pairing: PairingSettings,
    prefs: AppPrefs,
    /// This machine's addresses and `.local` name, as last reported.
    network: NetworkAddresses,
    running: Option<Running>,
    /// Why the config file could not be used at start; the bridge will not start on
    /// defaults behind the user's back.
    load_error: Option<String>,
}

/// The `WORKSHOP_BRIDGE_*` variables the app started with, as the settings window lists them.
#[derive(Debug, Clone, Default)]
struct Environment {
    /// The variables in effect.
    applied: Vec<String>,
    /// The variables left out, each with the reason.
    refused: Vec<EnvProblem>,
}

/// Owns the bridge. Every change goes through one async lock, so a Start clicked during an
/// Apply waits for it rather than racing it.
pub struct Controller {
    paths: Paths,
    environment: Environment,
    inner: Mutex<Inner>,
    status: watch::Sender<BridgeStatus>,
    logs: LogBuffer,
    first_run: bool,
}

impl Controller {
    /// Reads the config file (creating a token on first run, as the CLI does), applies the
    /// `WORKSHOP_BRIDGE_*` environment, and reads the pairing and app files. A config file
    /// that cannot be used leaves the bridge stopped with the reason as its status.
    pub fn load(paths: Paths, logs: LogBuffer) -> Self {
        Self::load_with_env(paths, Overrides::from_env(), logs)
    }

    /// [`Controller::load`] with the variables given rather than the process's own. Each
    /// variable counts on its own: one that cannot be used is left out and named in the
    /// settings window; the others apply.
    pub fn load_with_env(paths: Paths, mut env: EnvOverrides, logs: LogBuffer) -> Self {
        let first_run = !paths.config.exists();
        let loaded = Config::load(&paths.config).and_then(|mut config| {
            env.apply_to(&mut config);
            if config.ensure_token(&paths.config)? {
                tracing::info!(config = %paths.config.display(), "generated a token and saved it");
            }
            Ok(config)
        });
        let (config, load_error) = match loaded {
            Ok(config) => (config, None),
            Err(e) => {
                tracing::error!(error = %e, "cannot use the config file");
                let mut config = Config::default();
                env.apply_to(&mut config);
                (config, Some(e.to_string()))
            }
        };
        for problem in env.problems() {
            tracing::warn!("{problem}; the other settings apply");
        }
        let environment = Environment {
            applied: env.variables(),
            refused: env.problems().to_vec(),
        };
        let pairing = PairingSettings::load(&paths.config).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring the pairing settings");
            PairingSettings::default()
        });
        let prefs = AppPrefs::load(&paths.config);
        Self::new(
            paths,
            config,
            pairing,
            prefs,
            load_error,
            environment,
            first_run,
            logs,
        )
    }

    /// A controller for `config` as given (tests; [`Controller::load`] for the app).
    pub fn with_config(paths: Paths, config: Config, logs: LogBuffer) -> Self {
        Self::new(
            paths,
            config,
            PairingSettings::default(),
            AppPrefs::default(),
            None,
            Environment::default(),
            false,
            logs,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        paths: Paths,
        config: Config,
        pairing: PairingSettings,
        prefs: AppPrefs,
        load_error: Option<String>,
        environment: Environment,
        first_run: bool,
        logs: LogBuffer,
    ) -> Self {
        let status = match &load_error {
            Some(message) => BridgeStatus::Error {
                message: message.clone(),
            },
            None => BridgeStatus::Stopped,
        };
        Self {
            paths,
            environment,
            inner: Mutex::new(Inner {
                config,
                pairing,
                prefs,
                network: NetworkAddresses::unresolved(),
                running: None,
                load_error,
            }),
            status: watch::Sender::new(status),
            logs,
            first_run,
        }
    }

    /// Whether there was no config file when the app started (so it should introduce itself).
    pub fn first_run(&self) -> bool {
        self.first_run
    }

    /// The app's files.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The log lines kept for the window.
    pub fn logs(&self) -> &LogBuffer {
        &self.logs
    }

    /// The status now.
    pub fn status(&self) -> BridgeStatus {
        self.status.borrow().clone()
    }

    /// Changes whenever the status does (start, stop, error, a client comes or goes).
    pub fn subscribe(&self) -> watch::Receiver<BridgeStatus> {
        self.status.subscribe()
    }

    /// Whether the bridge should start with the app.
    pub async fn start_on_launch(&self) -> bool {
        self.inner.lock().await.prefs.start_bridge_on_launch
    }

    /// The inbox folder in effect.
    pub async fn inbox_dir(&self) -> PathBuf {
        self.inner.lock().await.config.inbox_dir.clone()
    }

    /// The outbox folder in effect.
    pub async fn outbox_dir(&self) -> PathBuf {
        self.inner.lock().await.config.outbox_dir.clone()
    }

    /// Starts the bridge on the settings in effect (nothing if it runs already).
    pub async fn start(&self) -> Result<(), String> {
        let mut inner = self.inner.lock().await;
        if inner.running.is_some() {
            return Ok(());
        }
        if let Some(message) = &inner.load_error {
            self.status.send_replace(BridgeStatus::Error {
                message: message.clone(),
            });
            return Err(message.clone());
        }
        let config = inner.config.clone();
        let pairing = inner.pairing.clone();
        self.start_locked(&mut inner, config, &pairing)
            .await
            .map_err(|e| e.to_string())
    }

    /// Stops the bridge, telling clients it is going away (nothing if it is stopped).
    pub async fn stop(&self) {
        let mut inner = self.inner.lock().await;
        if let Some(running) = inner.running.take() {
            shut_down(running, false).await;
            self.status.send_replace(BridgeStatus::Stopped);
        }
    }

    /// The form's fields and the app's settings, as in effect.
    pub async fn settings(&self) -> SettingsView {
        let inner = self.inner.lock().await;
        self.view(&inner)
    }

    /// Checks the form and, when every field is good, restarts a running bridge on the new
    /// settings and saves them. If the bridge cannot start on them (port taken, folder not
    /// writable), it goes back to the old settings and nothing is saved.
    pub async fn apply(&self, form: &SettingsForm) -> Result<SettingsView, FormError> {
        let mut inner = self.inner.lock().await;
        let (config, pairing) = form.validate(&inner.config, &inner.pairing)?;
        self.replace_config(&mut inner, config, false).await?;
        if pairing != inner.pairing {
            pairing
                .save(&self.paths.config)
                .map_err(|e| FormError::general(e.to_string()))?;
            inner.pairing = pairing;
        }
        tracing::info!("settings applied");
        Ok(self.view(&inner))
    }

    /// Replaces the token with a new random one, saves it and restarts the bridge, so every
    /// client holding the old token is disconnected and refused.
    pub async fn regenerate_token(&self) -> Result<SettingsView, FormError> {
        let token =
            workshop_bridge::config::generate_token().map_err(|e| FormError::from_bridge(&e))?;
        let mut inner = self.inner.lock().await;
        let mut config = inner.config.clone();
        config.token = Some(token);
        self.replace_config(&mut inner, config, true).await?;
        tracing::info!("token regenerated; clients were disconnected");
        Ok(self.view(&inner))
    }

    /// Whether the bridge starts with the app; saved at once.
    pub async fn set_start_on_launch(&self, enabled: bool) -> Result<(), String> {
        let mut inner = self.inner.lock().await;
        let prefs = AppPrefs {
            start_bridge_on_launch: enabled,
        };
        prefs.save(&self.paths.config)?;
        inner.prefs = prefs;
        Ok(())
    }

    /// The pairing URL, its QR code and the addresses to choose from.
    pub async fn pairing(&self) -> Result<PairingView, String> {
        let inner = self.inner.lock().await;
        pairing_view(&inner)
    }

    /// Takes in this machine's addresses as they are now: the status line and the pairing
    /// view name an address the machine still has. Returns whether anything changed.
    pub async fn set_network(&self, network: NetworkAddresses) -> bool {
        let mut inner = self.inner.lock().await;
        if inner.network == network {
            return false;
        }
        inner.network = network;
        let host = status_host(&inner);
        self.status.send_if_modified(|s| match s {
            BridgeStatus::Running { host: shown, .. } if *shown != host => {
                tracing::info!(%host, "the bridge is now reached at another address");
                *shown = host;
                true
            }
            _ => false,
        });
        true
    }

    /// Chooses what the pairing URL names (`None`: automatic); saved at once. A name must
    /// be this machine's `NAME.local` name.
    pub async fn set_pairing_address(
        &self,
        address: Option<PairingHost>,
    ) -> Result<PairingView, String> {
        let mut inner = self.inner.lock().await;
        if let Some(PairingHost::Name(name)) = &address
            && inner
                .network
                .local_name
                .as_ref()
                .is_none_or(|n| n.name != *name)
        {
            return Err(format!("“{name}” is not this Mac’s name on the network."));
        }
        let mut pairing = inner.pairing.clone();
        pairing.address = address;
        pairing
            .save(&self.paths.config)
            .map_err(|e| e.to_string())?;
        inner.pairing = pairing;
        if let Some(running) = &inner.running {
            // the status line names the address too
            let host = status_host(&inner);
            let (port, clients) = with_handle(&running.handle, |h| {
                (h.local_addr().port(), h.client_count())
            });
            self.status.send_replace(BridgeStatus::Running {
                host,
                port,
                clients,
            });
        }
        pairing_view(&inner)
    }

    /// Everything the live panel shows.
    pub async fn live(&self) -> Live {
        let inner = self.inner.lock().await;
        let (clients, mut state) = match &inner.running {
            Some(r) => with_handle(&r.handle, |h| (h.clients(), Some(h.state_health()))),
            None => (Vec::new(), None),
        };
        if let Some(state) = &mut state {
            state.path = crate::settings::abbreviate_home(&state.path).into();
        }
        let status = self.status();
        Live {
            line: status.line(),
            status,
            clients,
            state,
            logs: self.logs.snapshot(),
        }
    }

    fn view(&self, inner: &Inner) -> SettingsView {
        SettingsView {
            form: SettingsForm::from_config(&inner.config, &inner.pairing),
            address: inner.pairing.address.clone(),
            start_bridge_on_launch: inner.prefs.start_bridge_on_launch,
            no_auth: inner.config.no_auth,
            config_path: crate::settings::abbreviate_home(&self.paths.config),
            env_overrides: self.environment.applied.clone(),
            env_problems: self.environment.refused.clone(),
        }
    }

    /// Puts `config` in effect: restarts a running bridge on it (back to the old one if it
    /// cannot start) and saves it. With `kick`, clients are told the settings changed even
    /// if the bridge is stopped or nothing else differs.
    async fn replace_config(
        &self,
        inner: &mut Inner,
        config: Config,
        kick: bool,
    ) -> Result<(), FormError> {
        if config == inner.config && !kick {
            return Ok(());
        }
        let pairing = inner.pairing.clone();
        match inner.running.take() {
            Some(running) => {
                shut_down(running, kick).await;
                if let Err(e) = self.start_locked(inner, config.clone(), &pairing).await {
                    let old = inner.config.clone();
                    if let Err(again) = self.start_locked(inner, old, &pairing).await {
                        tracing::error!(error = %again, "cannot restart on the previous settings either");
                    }
                    return Err(FormError::from_bridge(&e));
                }
                if let Err(e) = save_config(&self.paths.config, &config) {
                    // running on settings the file does not hold would surprise the CLI
                    if let Some(running) = inner.running.take() {
                        shut_down(running, false).await;
                    }
                    let old = inner.config.clone();
                    if let Err(again) = self.start_locked(inner, old, &pairing).await {
                        tracing::error!(error = %again, "cannot restart on the previous settings");
                    }
                    return Err(FormError::general(e));
                }
            }
            None => save_config(&self.paths.config, &config).map_err(FormError::general)?,
        }
        inner.config = config;
        inner.load_error = None;
        Ok(())
    }

    /// Starts a bridge on `config` and, on success, makes it the running one. The status
    /// says what happened either way.
    async fn start_locked(
        &self,
        inner: &mut Inner,
        config: Config,
        pairing: &PairingSettings,
    ) -> Result<(), workshop_bridge::Error> {
        let host = pairing::choose_host(config.bind, pairing.address.as_ref(), &inner.network).host;
        match Bridge::start(config).await {
            Ok(handle) => {
                let port = handle.local_addr().port();
                let clients = handle.client_count();
                let changes = handle.subscribe_changes();
                let handle = Arc::new(std::sync::Mutex::new(handle));
                self.status.send_replace(BridgeStatus::Running {
                    host,
                    port,
                    clients,
                });
                let stop_watching = CancellationToken::new();
                let watcher = tokio::spawn(watch_clients(
                    Arc::clone(&handle),
                    changes,
                    self.status.clone(),
                    stop_watching.clone(),
                ));
                inner.running = Some(Running {
                    handle,
                    stop_watching,
                    watcher,
                });
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "the bridge cannot start");
                self.status.send_replace(BridgeStatus::Error {
                    message: e.to_string(),
                });
                Err(e)
            }
        }
    }
}

/// Keeps the client count in the status current.
async fn watch_clients(
    handle: SharedHandle,
    mut changes: watch::Receiver<u64>,
    status: watch::Sender<BridgeStatus>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
                let count = with_handle(&handle, BridgeHandle::client_count);
                status.send_if_modified(|s| match s {
                    BridgeStatus::Running { clients, .. } if *clients != count => {
                        *clients = count;
                        true
                    }
                    _ => false,
                });
            }
        }
    }
}

async fn shut_down(running: Running, kick: bool) {
    running.stop_watching.cancel();
    if let Err(e) = running.watcher.await {
        tracing::warn!(error = %e, "the client watcher ended badly");
    }
    if kick {
        with_handle(&running.handle, BridgeHandle::disconnect_all);
    }
    match Arc::try_unwrap(running.handle) {
        Ok(handle) => {
            let handle = handle.into_inner().unwrap_or_else(PoisonError::into_inner);
            handle.shutdown().await;
        }
        // Nothing else keeps the handle; if something did, dropping it stops the bridge.
        Err(_) => tracing::warn!("the bridge was stopped without its graceful shutdown"),
    }
}

/// What the status line names: the pairing host, so the tray and the QR code agree.
fn status_host(inner: &Inner) -> PairingHost {
    pairing::choose_host(
        inner.config.bind,
        inner.pairing.address.as_ref(),
        &inner.network,
    )
    .host
}

fn pairing_view(inner: &Inner) -> Result<PairingView, String> {
    let (config, settings, network) = (&inner.config, &inner.pairing, &inner.network);
    let pairing = pairing::pairing(config, settings, network).map_err(|e| e.to_string())?;
    let svg = pairing::qr_svg(&pairing.url).map_err(|e| e.to_string())?;
    Ok(PairingView {
        url: pairing.url,
        svg,
        host: pairing.host,
        reachable: pairing.reachable,
        bind_all: config.bind.is_unspecified(),
        addresses: network.lan.clone(),
        local_name: network.local_name.clone(),
        address: settings.address.clone(),
        note: pairing.note,
    })
}
