//! Where `taskhub serve`'s settings come from: a flag, else its `TASKHUB_*` variable, else the
//! `--config` file, else the default. The flags are defined once (clap's derive on `ServeArgs`
//! and `taskhub::Limits`); the file's values become those flags' defaults before the command
//! line is parsed, so clap's own order (flag, then variable, then default) gives the rest.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use taskhub_native_worker::settings::{NOT_SETTINGS, apply_file, config_path};

use crate::Cli;

/// Global flags a config file may set for `serve` (the rest of the globals are for clients).
const GLOBAL_KEYS: [&str; 3] = ["key", "key_file", "key_id"];

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
    if let Some(path) = config_path(&args, "TASKHUB_CONFIG") {
        let (with_file, keys) =
            apply_file(command, &path, Some("serve"), &GLOBAL_KEYS, &mut warnings)
                .map_err(|e| anyhow::anyhow!(e))?;
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

    #[test]
    fn values_print_as_toml() {
        assert_eq!(toml_literal("30s", false), "\"30s\"");
        assert_eq!(toml_literal("1048576", false), "1048576");
        assert_eq!(toml_literal("true", true), "true");
    }
}
