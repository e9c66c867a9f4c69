//! `qr`: the URL an iPad opens, and a QR code of it for the terminal.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::Args;
use workshop_bridge::config::ConfigFile;
use workshop_bridge::config::values::{parse_address, parse_port, parse_switch};
use workshop_bridge::{Config, Overrides, pairing};

use crate::settings::{Sources, check_config_folder, config_path, token_saved_sentence};
use crate::{note, write_stdout};

/// Only what goes into the pairing URL: the bridge's other settings play no part in it.
#[derive(Args)]
pub(crate) struct QrArgs {
    /// Config file [default: the platform's config directory]
    #[arg(long, env = "WORKSHOP_BRIDGE_CONFIG")]
    config: Option<PathBuf>,
    /// Address of this machine, or its NAME.local name, to put in the URL [default: the one chosen in the app, else NAME.local when it answers, else the first LAN address]
    #[arg(long, value_parser = pairing::PairingHost::parse)]
    address: Option<pairing::PairingHost>,
    /// Workshop page to open instead of the bridge's own [default: the one set in the app]
    #[arg(long)]
    url: Option<String>,
    /// The port the bridge listens on [default: 8765]
    #[arg(long, env = "WORKSHOP_BRIDGE_PORT", value_parser = parse_port)]
    port: Option<u16>,
    /// The address the bridge listens on [default: 0.0.0.0]
    #[arg(long, env = "WORKSHOP_BRIDGE_BIND", value_parser = parse_address)]
    bind: Option<IpAddr>,
    /// The token clients must present [default: the one in the config file]
    #[arg(long, env = "WORKSHOP_BRIDGE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The bridge accepts everyone: no token in the URL
    #[arg(long, env = "WORKSHOP_BRIDGE_NO_AUTH", value_parser = parse_switch)]
    no_auth: bool,
}

pub(crate) fn run(args: QrArgs, sources: &Sources<'_>) -> anyhow::Result<()> {
    let (path, explicit) = config_path(args.config)?;
    let file = ConfigFile::read(&path)?;
    let mut config = Config::from_file(&file)?;
    Overrides {
        port: args.port,
        bind: args.bind,
        token: args.token,
        no_auth: args.no_auth,
        ..Overrides::default()
    }
    .apply_to(&mut config);
    if config.port == 0 {
        return Err(anyhow!(
            "{}: 0 cannot go into a pairing URL, as the bridge picks a free port only when it starts; give the port it listens on",
            sources.name("port", &file)
        ));
    }
    let mut settings = config.pairing.clone();
    if let Some(url) = args.url {
        settings.workshop_url = Some(url);
    }
    settings.validate()?;
    // The `.local` name is looked up only where it may go into the URL.
    let network = if config.bind.is_unspecified()
        || matches!(args.address, Some(pairing::PairingHost::Name(_)))
    {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the runtime that looks up this machine's names")?
            .block_on(pairing::NetworkAddresses::current())
    } else {
        pairing::NetworkAddresses::unresolved()
    };
    if let Some(address) = &args.address {
        check_address(address, config.bind, &network)?;
        settings.address = Some(address.clone());
    }
    if !config.no_auth && config.token.is_none() {
        check_config_folder(&path, explicit)?;
        config.ensure_token(&path)?;
        note(&token_saved_sentence(&file, explicit));
    }
    let pairing = match args.address {
        // Asked for by name: the name, even when it does not answer here (a resolver
        // without mDNS may not know what the network's responder publishes).
        Some(host @ pairing::PairingHost::Name(_)) => {
            if network
                .local_name
                .as_ref()
                .is_none_or(|n| n.addresses.is_empty())
            {
                note(&format!(
                    "{host} does not answer on this machine now; the iPad reaches it only while an mDNS responder (Bonjour, avahi) publishes it"
                ));
            }
            pairing::Pairing {
                url: pairing::workshop_url(&config, &host, settings.workshop_url.as_deref())?,
                reachable: true,
                host,
                note: None,
            }
        }
        _ => pairing::pairing(&config, &settings, &network)?,
    };
    if let Some(why) = &pairing.note {
        note(why);
    }
    let code = pairing::qr_terminal(&pairing.url)?;
    let mut text = format!("{}\n\n{code}\n", pairing.url);
    if !pairing.reachable {
        text.push_str(&format!(
            "Note: {} is reachable from this machine only; bind to 0.0.0.0 or pass --address.\n",
            pairing.host
        ));
    }
    write_stdout(&text)
}

/// `--address` must be one of this machine's addresses or its `NAME.local` name, and the
/// address the bridge listens on when it listens on one address only.
fn check_address(
    address: &pairing::PairingHost,
    bind: IpAddr,
    network: &pairing::NetworkAddresses,
) -> anyhow::Result<()> {
    use pairing::PairingHost;

    if !bind.is_unspecified() {
        if *address != PairingHost::Ip(bind) {
            return Err(anyhow!(
                "`--address`: the bridge listens on {bind} only, so {address} would not reach it; leave --address out, or change --bind"
            ));
        }
        return Ok(());
    }
    let own = match address {
        PairingHost::Ip(ip) => ip.is_loopback() || network.lan.iter().any(|a| a.ip == *ip),
        PairingHost::Name(name) => network.local_name.as_ref().is_some_and(|n| n.name == *name),
    };
    if own {
        return Ok(());
    }
    let (what, list): (&str, Vec<String>) = match address {
        PairingHost::Ip(_) => (
            "an address",
            network
                .lan
                .iter()
                .map(|a| format!("{} ({})", a.ip, a.interface))
                .collect(),
        ),
        PairingHost::Name(_) => (
            "the name",
            network.local_name.iter().map(|n| n.name.clone()).collect(),
        ),
    };
    Err(match (address, list.is_empty()) {
        (PairingHost::Ip(_), true) => anyhow!(
            "`--address`: {address} is not an address of this machine, which has none on a network (only 127.0.0.1, for itself)"
        ),
        (PairingHost::Name(_), true) => anyhow!(
            "`--address`: {address} is not the name of this machine, which has no host name"
        ),
        (PairingHost::Ip(_), false) => anyhow!(
            "`--address`: {address} is not {what} of this machine; its addresses are {}",
            list.join(", ")
        ),
        (PairingHost::Name(_), false) => anyhow!(
            "`--address`: {address} is not {what} of this machine; its name on the network is {}",
            list.join(", ")
        ),
    })
}
