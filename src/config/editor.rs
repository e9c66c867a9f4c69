//! Changing the config file the way a person would: some settings set or removed, and
//! everything else left as the user wrote it (comments, the order of keys, keys and
//! sections this version does not know), saved whole or not at all.
//!
//! The CLI, the library and the menu-bar app all write the config file through
//! [`ConfigEditor`], so none of them can lose what another, or the user, put there.

use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, Table, TableLike};

use super::ConfigFile;
use super::file::{line_and_column, one_line};
use crate::error::Error;

/// The config file open for changes: read once, changed in memory, written back by
/// [`ConfigEditor::save`].
///
/// A missing file starts empty. A file that is not valid TOML is refused when opened, so it
/// is never overwritten: the user's text, mistakes and all, stays for them to fix.
#[derive(Debug, Clone)]
pub struct ConfigEditor {
    path: PathBuf,
    /// The file as the user wrote it, with the changes made so far.
    document: DocumentMut,
    /// The text read, to leave an unchanged file alone; `None` when there was no file.
    original: Option<String>,
}

impl ConfigEditor {
    /// Reads the config file at `path` for changes; a missing file starts empty.
    pub fn open(path: &Path) -> Result<Self, Error> {
        Self::from_file(&ConfigFile::read(path)?)
    }

    /// Starts changing a config file already read.
    pub fn from_file(file: &ConfigFile) -> Result<Self, Error> {
        let text = file.text();
        let document = text
            .parse::<DocumentMut>()
            .map_err(|e| Error::ParseConfig {
                path: file.path().to_owned(),
                position: e.span().map(|s| line_and_column(text, s.start)),
                message: one_line(e.message()),
            })?;
        Ok(Self {
            path: file.path().to_owned(),
            document,
            original: file.existed().then(|| text.to_owned()),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the top-level `key` is written in the file.
    pub fn contains(&self, key: &str) -> bool {
        self.document.contains_key(key)
    }

    /// Sets the top-level `key` to `value`. A key already there keeps its place and the
    /// comments above and beside it; a new one goes after the other top-level keys.
    pub fn set(&mut self, key: &str, value: impl Into<toml::Value>) {
        put(self.document.as_table_mut(), key, value.into());
    }

    /// Removes the top-level `key`, with the comment written just above it.
    pub fn remove(&mut self, key: &str) {
        self.document.remove(key);
    }

    /// Sets `key` in the section `[section]`, making the section (at the end of the file)
    /// if there is none.
    pub fn set_in(&mut self, section: &str, key: &str, value: impl Into<toml::Value>) {
        let value = value.into();
        let root = self.document.as_table_mut();
        if let Some(table) = root.get_mut(section).and_then(Item::as_table_like_mut) {
            put(table, key, value);
            return;
        }
        // No section, or a key of that name that is not one (which no version of the
        // bridge could read): the section takes its place.
        let mut table = Table::new();
        put(&mut table, key, value);
        match root.get_mut(section) {
            Some(item) => *item = Item::Table(table),
            None => {
                root.insert(section, Item::Table(table));
            }
        }
    }

    /// Removes `key` from `[section]`. A section left with no keys goes too, unless it
    /// carries a comment of its own.
    pub fn remove_in(&mut self, section: &str, key: &str) {
        let root = self.document.as_table_mut();
        let Some(item) = root.get_mut(section) else {
            return;
        };
        let Some(table) = item.as_table_like_mut() else {
            return;
        };
        table.remove(key);
        if !table.is_empty() {
            return;
        }
        let commented = item
            .as_table()
            .is_some_and(|t| has_comment(t.decor().prefix()) || has_comment(t.decor().suffix()));
        if !commented {
            root.remove(section);
        }
    }

    /// The file's text with the changes made.
    pub fn text(&self) -> String {
        self.document.to_string()
    }

    /// Writes the file with the changes made: atomically (a reader, or a crash, sees the
    /// old file or the new one, never part of one), durably, and readable only by its owner
    /// (it holds the token). The folder is made if need be. Nothing is written when nothing
    /// changed, or when there was no file and there is nothing to put in one.
    pub fn save(&self) -> Result<(), Error> {
        let text = self.text();
        let unchanged = match &self.original {
            Some(original) => *original == text,
            None => self.document.is_empty(),
        };
        if unchanged {
            return Ok(());
        }
        let err = |source| Error::WriteConfig {
            path: self.path.clone(),
            source,
        };
        // What is written must read back: a second parser checks the text before it
        // replaces the user's file.
        if let Err(e) = text.parse::<toml::Table>() {
            return Err(err(std::io::Error::other(format!(
                "the changed file would not be valid TOML ({})",
                e.message().trim()
            ))));
        }
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        crate::durable::write_atomically(dir, &self.path, text.as_bytes(), true).map_err(err)
    }
}

/// Sets `key` in `table`, keeping the key's place and the comments around it.
fn put(table: &mut dyn TableLike, key: &str, value: toml::Value) {
    let mut value = edit_value(value);
    match table.get_mut(key) {
        Some(item) => {
            if let Some(old) = item.as_value() {
                *value.decor_mut() = old.decor().clone();
            }
            *item = Item::Value(value);
        }
        None => {
            table.insert(key, Item::Value(value));
        }
    }
}

/// A value from the settings' types as the editor writes it.
fn edit_value(value: toml::Value) -> toml_edit::Value {
    match value {
        toml::Value::String(s) => s.into(),
        toml::Value::Integer(n) => n.into(),
        toml::Value::Float(f) => f.into(),
        toml::Value::Boolean(b) => b.into(),
        toml::Value::Datetime(d) => d.into(),
        toml::Value::Array(items) => {
            toml_edit::Value::Array(items.into_iter().map(edit_value).collect())
        }
        toml::Value::Table(table) => toml_edit::Value::InlineTable(
            table.into_iter().map(|(k, v)| (k, edit_value(v))).collect(),
        ),
    }
}

fn has_comment(decor: Option<&toml_edit::RawString>) -> bool {
    decor
        .and_then(|raw| raw.as_str())
        .is_some_and(|text| text.contains('#'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file as a person writes one: comments above and beside keys, an order of their
    /// own, a key and a section this version does not know.
    const COMMENTED: &str = r#"# My bridge, set up for the workshop at home.

# The token the iPad uses; do not share it.
token = "old-token"   # changed on 2026-03-01
heartbeat_secs = 20 # slow Wi-Fi
future_setting = "kept"
port = 9000

# What the QR code opens.
[pairing]
workshop_url = "https://workshop.example/" # the public one

[plugins]   # a section some later version reads
colour = "blue"
"#;

    fn open(text: &str) -> (tempfile::TempDir, ConfigEditor) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        let editor = ConfigEditor::open(&path).unwrap();
        (dir, editor)
    }

    #[test]
    fn setting_a_value_changes_that_value_and_nothing_else() {
        let (_dir, mut editor) = open(COMMENTED);
        editor.set("token", "new-token");
        editor.set("port", 9100);
        editor.set("allowed_origins", vec!["http://a.example:1"]);
        editor.set_in("pairing", "address", "192.168.1.20");
        editor.remove_in("pairing", "workshop_url");
        editor.save().unwrap();
        let text = std::fs::read_to_string(editor.path()).unwrap();
        assert_eq!(
            text,
            COMMENTED
                .replace("\"old-token\"", "\"new-token\"")
                .replace(
                    "port = 9000\n",
                    "port = 9100\nallowed_origins = [\"http://a.example:1\"]\n"
                )
                .replace(
                    "workshop_url = \"https://workshop.example/\" # the public one\n",
                    "address = \"192.168.1.20\"\n"
                )
        );
    }

    #[test]
    fn a_missing_file_starts_empty_and_is_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new").join("config.toml");
        let mut editor = ConfigEditor::open(&path).unwrap();
        editor.save().unwrap();
        assert!(!path.exists(), "nothing to write, no file");
        editor.set_in("app", "start_bridge_on_launch", false);
        editor.set("token", "t");
        editor.save().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "token = \"t\"\n\n[app]\nstart_bridge_on_launch = false\n"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn an_emptied_section_goes_unless_it_has_a_comment() {
        let (_dir, mut editor) = open("port = 1\n[pairing]\naddress = \"10.0.0.7\"\n");
        editor.remove_in("pairing", "address");
        assert_eq!(editor.text(), "port = 1\n");
        let (_dir, mut editor) = open("port = 1\n# mine\n[pairing]\naddress = \"10.0.0.7\"\n");
        editor.remove_in("pairing", "address");
        assert_eq!(editor.text(), "port = 1\n# mine\n[pairing]\n");
    }

    #[test]
    fn dotted_and_inline_sections_are_edited_where_they_are() {
        let (_dir, mut editor) = open("pairing.address = \"10.0.0.7\"\nport = 1\n");
        editor.set_in("pairing", "address", "10.0.0.8");
        assert_eq!(editor.text(), "pairing.address = \"10.0.0.8\"\nport = 1\n");
        let (_dir, mut editor) = open("app = { start_bridge_on_launch = true }\n");
        editor.set_in("app", "start_bridge_on_launch", false);
        assert_eq!(editor.text(), "app = { start_bridge_on_launch = false }\n");
    }

    #[test]
    fn a_key_goes_into_a_section_known_only_by_its_subsection() {
        let (_dir, mut editor) = open("port = 1\n\n[app.window]\nwidth = 640\n");
        editor.set_in("app", "start_bridge_on_launch", false);
        let text = editor.text();
        let table: toml::Table = text.parse().unwrap();
        assert_eq!(
            table["app"]["start_bridge_on_launch"].as_bool(),
            Some(false),
            "{text}"
        );
        assert_eq!(table["app"]["window"]["width"].as_integer(), Some(640));
        assert!(text.contains("[app.window]\nwidth = 640\n"), "{text}");
    }

    #[test]
    fn an_invalid_file_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "# mine\nport = [\n").unwrap();
        let e = ConfigEditor::open(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "the config file {} is not valid TOML at line 2",
                path.display()
            )),
            "{e}"
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "# mine\nport = [\n"
        );
    }
}
