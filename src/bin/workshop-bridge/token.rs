//! `token`: the token clients need, generated and saved if there is none.

use std::path::PathBuf;

use clap::Args;
use workshop_bridge::Config;
use workshop_bridge::config::ConfigFile;

use crate::settings::{check_config_folder, config_path, token_saved_sentence};
use crate::{note, write_stdout};

#[derive(Args)]
pub(crate) struct TokenArgs {
    /// Config file [default: the platform's config directory]
    #[arg(long, env = "WORKSHOP_BRIDGE_CONFIG")]
    config: Option<PathBuf>,
    /// Replace the token with a new random one (clients using the old one are refused)
    #[arg(long)]
    regenerate: bool,
}

pub(crate) fn run(args: TokenArgs) -> anyhow::Result<()> {
    let (path, explicit) = config_path(args.config)?;
    let file = ConfigFile::read(&path)?;
    let mut config = Config::from_file(&file)?;
    if args.regenerate {
        config.token = None;
        config.no_auth = false;
    }
    if !config.no_auth && config.token.is_none() {
        check_config_folder(&path, explicit)?;
        config.ensure_token(&path)?;
        // The token itself is the output; that the file is new is worth a line.
        if !file.existed() {
            note(&token_saved_sentence(&file, explicit));
        }
    }
    write_stdout(&format!("{}\n", config.token.unwrap_or_default()))
}
