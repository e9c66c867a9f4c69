//! The config file as the user wrote it: every program that saves into it (the first-run
//! token, `workshop-bridge token --regenerate`, `workshop-bridge qr`, the pairing choices)
//! changes only what it means to, and keeps the comments, the order of the keys and the
//! keys it does not know; a file it cannot read or write is left as it was.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};

use support::*;
use workshop_bridge::Config;
use workshop_bridge::config::ConfigEditor;
use workshop_bridge::pairing::{PairingHost, PairingSettings};

/// A config file as a person writes one: comments above and beside keys, an order of their
/// own (not the order the settings are listed in), a setting under its singular name, and in
/// `[app]` a key and a section this version does not know.
const COMMENTED: &str = include_str!("support/commented-config.toml");

const OLD_TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// [`COMMENTED`] before it had a token.
fn without_token() -> String {
    COMMENTED.replace(
        "\n# The iPad's secret; `workshop-bridge token --regenerate` makes a new one.\ntoken = \"0123456789abcdef0123456789abcdef\"  # from the setup day\n",
        "\n",
    )
}

/// [`without_token`] once a token was added: after the other top-level keys.
fn with_new_token(token: &str) -> String {
    without_token().replace(
        "# the dev server\n",
        &format!("# the dev server\ntoken = \"{token}\"\n"),
    )
}

fn config_path(world: &World) -> PathBuf {
    world.dir.path().join(".config/workshop-bridge/config.toml")
}

fn write_config(world: &World, text: &str) -> PathBuf {
    let path = config_path(world);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

fn assert_private(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// Names in the folder other than the config file (a temporary file left behind).
fn others(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "config.toml")
        .collect();
    names.sort();
    names
}

#[test]
fn the_fixture_is_a_config_every_program_can_read() {
    let world = World::new();
    let path = write_config(&world, COMMENTED);
    let config = Config::load(&path).unwrap();
    assert_eq!(config.port, 9000);
    assert_eq!(config.allowed_origins, ["http://workshop.local:5173"]);
    assert_eq!(config.app["window_theme"].as_str(), Some("dark"));
    Config::load(&write_config(&world, &without_token())).unwrap();
}

#[test]
fn the_first_run_token_is_added_and_nothing_else_changes() {
    let world = World::new();
    let path = write_config(&world, &without_token());
    let mut config = Config::load(&path).unwrap();
    assert!(config.ensure_token(&path).unwrap());
    let token = config.token.unwrap();
    assert_eq!(read(&path), with_new_token(&token));
    assert_private(&path);
    assert_eq!(others(&path), Vec::<String>::new());
}

#[test]
fn pairing_choices_are_saved_in_their_section_and_nothing_else_changes() {
    let world = World::new();
    let path = write_config(&world, COMMENTED);
    let mut settings = PairingSettings::load(&path).unwrap();
    settings.address = Some(PairingHost::parse("192.168.1.20").unwrap());
    settings.save(&path).unwrap();
    assert_eq!(
        read(&path),
        COMMENTED.replace(
            "# the public scene\n",
            "# the public scene\naddress = \"192.168.1.20\"\n"
        )
    );
    assert_private(&path);

    settings.workshop_url = Some("https://workshop.example/other".into());
    settings.address = None;
    settings.save(&path).unwrap();
    assert_eq!(
        read(&path),
        COMMENTED.replace("/scene\"", "/other\""),
        "the comment beside the changed value stays"
    );

    // Back to no choice: the section's comment keeps it, empty.
    PairingSettings::default().save(&path).unwrap();
    assert_eq!(
        read(&path),
        COMMENTED.replace(
            "workshop_url = \"https://workshop.example/scene\"  # the public scene\n",
            ""
        )
    );
    assert_eq!(
        PairingSettings::load(&path).unwrap(),
        PairingSettings::default()
    );
}

#[test]
fn the_editor_refuses_a_file_that_is_not_toml_and_leaves_it() {
    let world = World::new();
    let broken = "# mine\nport = [\ntoken = \"keep-me\"\n";
    let path = write_config(&world, broken);
    assert!(ConfigEditor::open(&path).is_err());
    assert!(
        PairingSettings {
            address: Some(PairingHost::parse("10.0.0.7").unwrap()),
            ..PairingSettings::default()
        }
        .save(&path)
        .is_err()
    );
    let mut config = Config::default();
    assert!(config.ensure_token(&path).is_err());
    assert_eq!(read(&path), broken);
}

#[tokio::test]
async fn token_regenerate_replaces_the_token_and_nothing_else() {
    let world = World::new();
    let path = write_config(&world, COMMENTED);
    let output = command(&world, ["token", "--regenerate"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert_eq!(token.len(), 64);
    assert_ne!(token, OLD_TOKEN);
    assert_eq!(read(&path), COMMENTED.replace(OLD_TOKEN, &token));
    assert_private(&path);
    assert_eq!(others(&path), Vec::<String>::new());
}

#[tokio::test]
async fn qr_saves_a_missing_token_and_nothing_else() {
    let world = World::new();
    let path = write_config(&world, &without_token());
    let output = command(&world, ["qr", "--address", "127.0.0.1"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let token = Config::load(&path).unwrap().token.unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains(&token));
    assert_eq!(read(&path), with_new_token(&token));
    assert_private(&path);
}

#[tokio::test]
async fn a_config_file_that_is_not_toml_is_never_overwritten() {
    let world = World::new();
    let broken = "# mine\ntoken = \"keep-me-0123456789abcdef0123456\"\nport = [\n";
    let path = write_config(&world, broken);
    for args in [vec!["token", "--regenerate"], vec!["qr"], vec!["token"]] {
        let output = command(&world, &args).output().await.unwrap();
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("is not valid TOML"), "{args:?}: {stderr}");
        assert_eq!(read(&path), broken, "{args:?}");
    }
}

/// A folder the save cannot write into (root ignores permissions, so the program then runs
/// as `nobody`): the save fails with a sentence, and the old file is whole.
#[cfg(unix)]
#[tokio::test]
async fn a_save_that_cannot_be_written_leaves_the_old_file() {
    use std::os::unix::fs::PermissionsExt;
    const NOBODY: u32 = 65534;
    let world = World::new();
    let path = write_config(&world, COMMENTED);
    let folder = path.parent().unwrap();
    for dir in [world.dir.path(), &world.dir.path().join(".config"), folder] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A folder this process cannot write into, or, for root, which permissions do not stop,
    // one that `nobody` cannot write into.
    std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o555)).unwrap();
    let probe = folder.join(".probe");
    let stopped = std::fs::write(&probe, "x").is_err();
    let mut cmd = command(&world, ["token", "--regenerate"]);
    if !stopped {
        std::fs::remove_file(&probe).unwrap();
        std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o755)).unwrap();
        cmd.uid(NOBODY).gid(NOBODY);
    }
    let output = cmd.output().await.unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr,
        format!(
            "workshop-bridge: the config file {} cannot be written: permission denied\n",
            path.display()
        )
    );
    std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(read(&path), COMMENTED);
    assert_eq!(others(&path), Vec::<String>::new());
}

/// A disk that fills up during the save (here, a file size limit of zero, which fails every
/// write as a full disk does): the old file is whole, since the new one is written beside it
/// and only then renamed over it.
#[cfg(unix)]
#[tokio::test]
async fn a_save_that_fails_halfway_leaves_the_old_file() {
    let world = World::new();
    let path = write_config(&world, COMMENTED);
    let base = command(&world, ["token", "--regenerate"]);
    let mut cmd = tokio::process::Command::new("sh");
    // SIGXFSZ ignored, so a write over the limit fails with EFBIG instead of killing.
    cmd.arg("-c")
        .arg("trap '' XFSZ; ulimit -f 0; exec \"$0\" \"$@\"")
        .arg(base.as_std().get_program())
        .args(base.as_std().get_args());
    for (key, value) in base.as_std().get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    let output = cmd.output().await.unwrap();
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(&format!(
            "workshop-bridge: the config file {} cannot be written: ",
            path.display()
        )),
        "{stderr}"
    );
    assert_eq!(read(&path), COMMENTED);
    assert_eq!(others(&path), Vec::<String>::new());
}
