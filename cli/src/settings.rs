//! Where `taskhub serve`'s settings come from: a flag, else its `TASKHUB_*` variable, else the
//! `--config` file, else the default. The flags are defined once (clap's derive on `ServeArgs`
//! and `taskhub::Limits`); the file's values become those flags' defaults before the command
//! line is parsed, so clap's own order (flag, then variable, then default) gives the rest.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use crate::Cli;

/// Global flags a config file may set for `serve` (the rest of the globals are for clients).
const GLOBAL_KEYS: [&str; 3] = ["key", "key_file", "key_id"];
/// Flags of `serve` that are about this run, not settings.
const NOT_SETTINGS: [&str; 3] = ["config", "print_config", "help"];

/// The command line as parsed, and which settings the config file gave.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub cli: Cli,
    pub matches: ArgMatches,
    /// The config file read, and the keys it set (as flag ids).
    pub file: Option<(PathBuf, Vec<String>)>,
    /// Warnings about the config file, for the log once it is set up.
    pub warnings: Vec<String>,
}

/// Parse `args` (the process's, with the program name first). Errors in the command line exit
/// the way clap does (with usage); errors in the config file are returned.
pub(crate) fn parse(args: Vec<OsString>) -> anyhow::Result<Parsed> {
    let mut command = Cli::command();
    let mut file = None;
    let mut warnings = Vec::new();
    if let Some(path) = config_path(&args) {
        let (with_file, keys) = apply_file(command, &path, &mut warnings)?;
        command = with_file;
        file = Some((path, keys));
    }
    let matches = command
        .try_get_matches_from(args)
        .unwrap_or_else(|e| e.exit());
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    Ok(Parsed {
        cli,
        matches,
        file,
        warnings,
    })
}

/// `--config FILE`, `--config=FILE`, or `TASKHUB_CONFIG`, looked for before the command line is
/// parsed (the file's values must be in place by then). Only `serve` takes it; clap refuses it
/// anywhere else.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
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
    std::env::var_os("TASKHUB_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The settings of the TOML file at `path` as defaults of the flags they name (`max_queue_len`
/// is `--max-queue-len`), and the ids of those flags.
fn apply_file(
    mut command: clap::Command,
    path: &Path,
    warnings: &mut Vec<String>,
) -> anyhow::Result<(clap::Command, Vec<String>)> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {shown}"))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("the config file {shown}: {e}"))?;
    let serve = command
        .find_subcommand("serve")
        .context("no serve command")?;
    // File keys are the long flags with underscores; flag ids are the field names.
    let mut by_key: BTreeMap<String, (String, bool)> = serve
        .get_arguments()
        .filter(|a| !NOT_SETTINGS.contains(&a.get_id().as_str()))
        .filter_map(|a| {
            let key = a.get_long()?.replace('-', "_");
            Some((key, (a.get_id().to_string(), false)))
        })
        .collect();
    for g in GLOBAL_KEYS {
        by_key.insert(g.to_string(), (g.to_string(), true));
    }
    let mut ids = Vec::new();
    for (key, value) in table {
        if value.is_table() {
            bail!(
                "the config file {shown}: [{key}] is a table; settings are plain keys at the top \
                 (max_queue_len = 1000)"
            );
        }
        let Some((id, global)) = by_key.get(&key).cloned() else {
            let known: Vec<&str> = by_key.keys().map(String::as_str).collect();
            bail!(
                "the config file {shown}: unknown setting {key:?}; settings are serve's long flags \
                 with underscores: {}",
                known.join(", ")
            );
        };
        let values = toml_values(&value)
            .with_context(|| format!("the config file {shown}: setting {key:?}"))?;
        if key == "key"
            && let Some(mode) = taskhub_core::keyfile::loose_mode(path)
        {
            warnings.push(format!(
                "the config file {shown} holds a key and can be read by other users (mode \
                 {mode:o}); chmod 600 it, or give key_file instead"
            ));
        }
        command = if global {
            command.mut_arg(id.as_str(), |a| a.default_values(values))
        } else {
            let id = id.clone();
            command.mut_subcommand("serve", move |s| {
                s.mut_arg(id.as_str(), |a| a.default_values(values))
            })
        };
        ids.push(id);
    }
    Ok((command, ids))
}

/// A TOML value as the text(s) its flag would take: strings as they are, numbers and booleans
/// written out, an array as one value each.
fn toml_values(value: &toml::Value) -> anyhow::Result<Vec<String>> {
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
                    Array(_) | Table(_) => bail!("an array may hold strings, numbers or booleans"),
                    other => all.extend(toml_values(other)?),
                }
            }
            all
        }
        Datetime(d) => vec![d.to_string()],
        Table(_) => bail!("a table is not a setting; settings are plain keys at the top"),
    })
}

/// The settings in effect for `serve`, as a config file: each with where it came from; secrets
/// (a key, credentials in a NATS URL) are left out.
pub(crate) fn effective(parsed: &Parsed) -> String {
    let Some(("serve", serve)) = parsed.matches.subcommand() else {
        return String::new();
    };
    let from_file: Vec<&str> = parsed
        .file
        .as_ref()
        .map(|(_, keys)| keys.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let command = Cli::command();
    let Some(serve_command) = command.find_subcommand("serve") else {
        return String::new();
    };
    let mut out = String::from(
        "# taskhub serve: the settings in effect (a flag wins over its TASKHUB_* variable, the \
         variable over --config, --config over the default)\n",
    );
    if let Some((path, _)) = &parsed.file {
        out.push_str(&format!("# config file: {}\n", path.display()));
    }
    let globals = command
        .get_arguments()
        .filter(|a| GLOBAL_KEYS.contains(&a.get_id().as_str()));
    let args = globals.map(|a| (a, &parsed.matches)).chain(
        serve_command
            .get_arguments()
            .filter(|a| !NOT_SETTINGS.contains(&a.get_id().as_str()) && a.get_long().is_some())
            .map(|a| (a, serve)),
    );
    for (arg, matches) in args {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        let key = long.replace('-', "_");
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag".to_string(),
            Some(ValueSource::EnvVariable) => arg
                .get_env()
                .map_or("environment".into(), |v| v.to_string_lossy().into_owned()),
            Some(ValueSource::DefaultValue) if from_file.contains(&id) => "config file".into(),
            _ => "default".into(),
        };
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        if values.is_empty() {
            out.push_str(&format!("# {key} (not set)\n"));
            continue;
        }
        if key == "key" {
            out.push_str(&format!("# {key} = (set, from the {source}; not shown)\n"));
            continue;
        }
        let values: Vec<String> = match key.as_str() {
            "backend" => values
                .iter()
                .map(|v| taskhub::NatsBackend::new(v.as_str()).redacted())
                .collect(),
            _ => values,
        };
        let many = arg.get_num_args().is_some_and(|n| n.max_values() > 1)
            || matches!(arg.get_action(), clap::ArgAction::Append);
        let value = if many {
            let items: Vec<String> = values.iter().map(|v| toml_literal(v, false)).collect();
            format!("[{}]", items.join(", "))
        } else {
            let flag = matches!(arg.get_action(), clap::ArgAction::SetTrue);
            toml_literal(&values[0], flag)
        };
        out.push_str(&format!("{key} = {value}  # {source}\n"));
    }
    out
}

/// A flag's text as a TOML value: a number or a boolean as it is, anything else a string.
fn toml_literal(text: &str, boolean: bool) -> String {
    if boolean || text.parse::<i64>().is_ok() || text.parse::<f64>().is_ok_and(f64::is_finite) {
        return text.to_string();
    }
    // A JSON string is a TOML basic string: the same quotes and escapes.
    serde_json::Value::String(text.to_string()).to_string()
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
        let found = |a: &[&str]| config_path(&args(a));
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
        assert!(
            toml_values(&table["x"])
                .unwrap_err()
                .to_string()
                .contains("table")
        );
        assert_eq!(toml_literal("30s", false), "\"30s\"");
        assert_eq!(toml_literal("1048576", false), "1048576");
        assert_eq!(toml_literal("true", true), "true");
    }
}
