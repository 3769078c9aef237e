//! Settings from a TOML file, for every taskhub binary (`taskhub serve --config`,
//! `taskhub-worker --config`): each key of the file, named like a long flag with underscores
//! (`max_queue_len` is `--max-queue-len`), becomes that flag's default before the command line
//! is parsed. clap's own order then gives: a flag, else its `TASKHUB_*` variable, else the file,
//! else the built-in default. The flags stay defined once, by clap's derive.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Command;

/// Flags that are about this run, not settings a file may hold.
pub const NOT_SETTINGS: [&str; 4] = ["config", "print_config", "help", "version"];

/// `--config FILE` or `--config=FILE` on the command line, else the variable `env`: looked for
/// before the command line is parsed (the file's values must be in place by then).
pub fn config_path(args: &[OsString], env: &str) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(path) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os(env)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The settings of the TOML file at `path` as the defaults of the flags they name: the flags of
/// subcommand `scope` (or of `command` itself, for `None`), and `globals` of `command`. Returns
/// the command and the ids of the flags the file set; warnings (a key in a file others can read)
/// go to `warnings`. Errors name the file and the setting.
pub fn apply_file(
    mut command: Command,
    path: &Path,
    scope: Option<&str>,
    globals: &[&str],
    warnings: &mut Vec<String>,
) -> Result<(Command, Vec<String>), String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the config file {shown}: {e}"))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("the config file {shown}: {e}"))?;
    let target = match scope {
        Some(name) => command
            .find_subcommand(name)
            .ok_or_else(|| format!("no {name} command"))?,
        None => &command,
    };
    // File keys are the long flags with underscores; flag ids are the field names.
    let mut by_key: std::collections::BTreeMap<String, (String, bool)> = target
        .get_arguments()
        .filter(|a| !NOT_SETTINGS.contains(&a.get_id().as_str()))
        .filter_map(|a| {
            let key = a.get_long()?.replace('-', "_");
            Some((key, (a.get_id().to_string(), false)))
        })
        .collect();
    for g in globals {
        by_key.insert(g.to_string(), (g.to_string(), true));
    }
    let mut ids = Vec::new();
    for (key, value) in table {
        if value.is_table() {
            return Err(format!(
                "the config file {shown}: [{key}] is a table; settings are plain keys at the top \
                 (max_queue_len = 1000)"
            ));
        }
        let Some((id, global)) = by_key.get(&key).cloned() else {
            let known: Vec<&str> = by_key.keys().map(String::as_str).collect();
            return Err(format!(
                "the config file {shown}: unknown setting {key:?}; settings are the long flags \
                 with underscores: {}",
                known.join(", ")
            ));
        };
        let values = toml_values(&value)
            .map_err(|why| format!("the config file {shown}: setting {key:?}: {why}"))?;
        if key == "key"
            && let Some(mode) = taskhub_core::keyfile::loose_mode(path)
        {
            warnings.push(format!(
                "the config file {shown} holds a key and can be read by other users (mode \
                 {mode:o}); chmod 600 it, or give key_file instead"
            ));
        }
        // A flag the file gives is no longer required on the command line.
        let set = move |a: clap::Arg| a.default_values(values).required(false);
        command = match scope {
            Some(name) if !global => {
                let id = id.clone();
                command.mut_subcommand(name, move |s| s.mut_arg(id.as_str(), set))
            }
            _ => command.mut_arg(id.as_str(), set),
        };
        ids.push(id);
    }
    Ok((command, ids))
}

/// A TOML value as the text(s) its flag would take: strings as they are, numbers and booleans
/// written out, an array as one value each.
pub fn toml_values(value: &toml::Value) -> Result<Vec<String>, String> {
    use toml::Value::*;
    Ok(match value {
        String(s) => vec![s.clone()],
        Integer(i) => vec![i.to_string()],
        Float(f) => vec![f.to_string()],
        Boolean(b) => vec![b.to_string()],
        Array(items) => {
            let mut all = Vec::new();
            for item in items {
                match item {
                    Array(_) | Table(_) => {
                        return Err("an array may hold strings, numbers or booleans".into());
                    }
                    other => all.extend(toml_values(other)?),
                }
            }
            all
        }
        Datetime(d) => vec![d.to_string()],
        Table(_) => {
            return Err("a table is not a setting; settings are plain keys at the top".into());
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_config_flag_is_found_before_parsing() {
        let found = |a: &[&str]| config_path(&args(a), "TASKHUB_TEST_NO_SUCH_VARIABLE");
        assert_eq!(
            found(&["taskhub", "serve", "--config", "hub.toml"]),
            Some("hub.toml".into())
        );
        assert_eq!(
            found(&["taskhub", "serve", "--config=a.toml"]),
            Some("a.toml".into())
        );
        // After `--`, it is not a flag.
        assert_eq!(found(&["taskhub", "put", "q", "--", "--config", "x"]), None);
    }

    #[test]
    fn values_read_as_their_flags_would_take_them() {
        let v = |t: &str| toml_values(&toml::from_str::<toml::Table>(t).unwrap()["x"]).unwrap();
        assert_eq!(v("x = 5"), ["5"]);
        assert_eq!(v("x = \"30s\""), ["30s"]);
        assert_eq!(v("x = true"), ["true"]);
        assert_eq!(v("x = [\"a\", \"b\"]"), ["a", "b"]);
        let table: toml::Table = toml::from_str("[x]\ny = 1").unwrap();
        assert!(toml_values(&table["x"]).unwrap_err().contains("table"));
    }
}
