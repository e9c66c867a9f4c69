//! `init`: the example state file, written where the bridge reads the state, never over one.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::Args;
use workshop_bridge::Config;

use crate::settings::config_path;
use crate::write_stdout;

#[derive(Args)]
pub(crate) struct InitArgs {
    /// Config file, for the state file's path [default: the platform's config directory]
    #[arg(long, env = "WORKSHOP_BRIDGE_CONFIG")]
    config: Option<PathBuf>,
    /// Where to write it [default: the bridge's state file, ~/.timmy/workshop-state.yaml]
    #[arg(long, env = "WORKSHOP_BRIDGE_STATE_FILE")]
    state_file: Option<PathBuf>,
}

pub(crate) fn run(args: InitArgs) -> anyhow::Result<()> {
    let (path, _) = config_path(args.config)?;
    let mut config = Config::load(&path)?;
    if let Some(state_file) = args.state_file {
        config.state_file = state_file;
    }
    let target = config.state_file;
    let folder = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    if std::fs::symlink_metadata(&target).is_ok() {
        return Err(anyhow!(
            "the state file {} already exists, and init never replaces one; remove it first to start again from the example",
            target.display()
        ));
    }
    if workshop_bridge::check_folder("state file", &folder)? {
        std::fs::create_dir(&folder)
            .with_context(|| format!("cannot make the folder {}", folder.display()))?;
    }
    // Written aside and moved into place only if nothing is there: an agent never sees half
    // a file, and a file that appeared meanwhile is kept.
    let mut temp = tempfile::Builder::new()
        .prefix(".workshop-state-")
        .tempfile_in(&folder)
        .with_context(|| format!("cannot write into the folder {}", folder.display()))?;
    temp.write_all(workshop_bridge::EXAMPLE_STATE.as_bytes())
        .with_context(|| format!("cannot write into the folder {}", folder.display()))?;
    temp.persist_noclobber(&target).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow!(
                "the state file {} already exists, and init never replaces one; remove it first to start again from the example",
                target.display()
            )
        } else {
            anyhow!("cannot write the state file {}: {}", target.display(), e.error)
        }
    })?;
    write_stdout(&format!(
        "wrote the example state to {}; the bridge serves it, and the agent replaces it with its own\n",
        target.display()
    ))
}
