//! `taskhub serve`'s settings: a `--config` file, `TASKHUB_*` variables and flags, in that order
//! of strength; `--print-config`; and the `--ready-json` start line.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_taskhub");

/// A directory of its own for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("taskhub-config-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `taskhub` with these args and extra environment, TASKHUB_* variables of the test run left
/// out; (success, stdout, stderr).
fn taskhub(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = command(args, env).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("TASKHUB_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd
}

struct Hub {
    child: Child,
    ready: serde_json::Value,
    /// What it printed on stdout after the start line (nothing, with --ready-json).
    stdout: std::sync::mpsc::Receiver<String>,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Hub {
    fn url(&self) -> &str {
        self.ready["url"].as_str().unwrap()
    }
}

/// `taskhub serve` with these args and environment, `--ready-json`: its start line, and its
/// stderr lines as they come.
fn serve(args: &[&str], env: &[(&str, &str)]) -> Hub {
    let mut child = command(&[&["serve", "--ready-json"][..], args].concat(), env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, stderr) = std::sync::mpsc::channel();
    let err = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in err.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = out.next().expect("a start line").unwrap();
    let ready: serde_json::Value = serde_json::from_str(&first)
        .unwrap_or_else(|e| panic!("the start line is not JSON ({e}): {first}"));
    let (tx, stdout) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in out.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Hub {
        child,
        ready,
        stdout,
        stderr,
    }
}

/// `taskhub serve --config FILE EXTRA... --print-config` with this environment.
fn print_config(config: &Path, extra: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let config = config.to_str().unwrap();
    let args = [
        &["serve", "--config", config][..],
        extra,
        &["--print-config"],
    ]
    .concat();
    taskhub(&args, env)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// The hub reads everything from the file alone: where to listen, its key (from a key file), and
/// limits a client can see take effect. A variable beats the file; a flag beats the variable.
#[test]
fn a_config_file_sets_the_hub_and_variables_and_flags_override_it() {
    let dir = scratch("precedence");
    let key_file = dir.join("hub.key");
    write(&key_file, "file-key-123\n");
    let config = dir.join("hub.toml");
    write(
        &config,
        &format!(
            "listen = \"127.0.0.1:0\"\nkey_file = {key_file:?}\nmax_queue_len = 2\n\
             max_message_bytes = 2048\nack_wait = \"45s\"\n"
        ),
    );
    let cfg = config.to_str().unwrap();
    let put = |hub: &Hub, payload: &str| {
        taskhub(
            &[
                "put",
                "--hub",
                hub.url(),
                "--key",
                "file-key-123",
                "q",
                payload,
            ],
            &[],
        )
    };

    // The file alone: its key works, another does not; its limits hold.
    let hub = serve(&["--config", cfg], &[]);
    assert!(hub.url().starts_with("ws://127.0.0.1:"), "{}", hub.ready);
    let (ok, _, err) = taskhub(&["stats", "--hub", hub.url(), "--key", "other"], &[]);
    assert!(!ok && err.contains("wrong key"), "{err}");
    assert!(put(&hub, "1").0 && put(&hub, "2").0);
    let (ok, _, err) = put(&hub, "3");
    assert!(!ok && err.contains("queue_full"), "{err}");
    let big = format!("\"{}\"", "x".repeat(3000));
    let (ok, _, err) = put(&hub, &big);
    assert!(!ok && err.contains("too_large"), "{err}");
    drop(hub);

    // A variable wins over the file: three fit, the fourth does not.
    let hub = serve(&["--config", cfg], &[("TASKHUB_MAX_QUEUE_LEN", "3")]);
    for p in ["1", "2", "3"] {
        assert!(
            put(&hub, p).0,
            "put {p} with max_queue_len 3 from the variable"
        );
    }
    assert!(put(&hub, "4").2.contains("queue_full"));
    drop(hub);

    // A flag wins over both.
    let hub = serve(
        &["--config", cfg, "--max-queue-len", "4"],
        &[("TASKHUB_MAX_QUEUE_LEN", "3")],
    );
    for p in ["1", "2", "3", "4"] {
        assert!(put(&hub, p).0, "put {p} with max_queue_len 4 from the flag");
    }
    assert!(put(&hub, "5").2.contains("queue_full"));
    drop(hub);

    // --print-config says the same, and where each came from.
    let (ok, out, err) = print_config(
        &config,
        &["--max-queue-len", "4"],
        &[("TASKHUB_MAX_MESSAGE_BYTES", "4096")],
    );
    assert!(ok, "{err}");
    let line = |key: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{key} =")))
            .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
            .to_string()
    };
    assert_eq!(line("max_queue_len"), "max_queue_len = 4  # flag");
    assert_eq!(
        line("max_message_bytes"),
        "max_message_bytes = 4096  # TASKHUB_MAX_MESSAGE_BYTES"
    );
    assert_eq!(line("ack_wait"), "ack_wait = \"45s\"  # config file");
    assert_eq!(line("max_attempts"), "max_attempts = 5  # default");
    assert_eq!(
        line("key_file"),
        format!("key_file = {key_file:?}  # config file")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// What --print-config prints is a config file: fed back, it gives the same settings. Secrets are
/// not in it: a key given in the file, or a password in the NATS URL.
#[test]
fn print_config_is_a_config_file_without_secrets() {
    let dir = scratch("print");
    let config = dir.join("hub.toml");
    write(
        &config,
        "key = \"s3cret-key\"\nbackend = \"nats://ops:hunter2@127.0.0.1:4222\"\n\
         allowed_origin = [\"https://a.example\", \"https://b.example\"]\nidle_timeout = 90\n",
    );
    let (ok, printed, err) = print_config(&config, &[], &[]);
    assert!(ok, "{err}");
    assert!(!printed.contains("s3cret-key"), "{printed}");
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(
        printed.contains("# key = (set, from the config file; not shown)"),
        "{printed}"
    );
    assert!(
        printed.contains("backend = \"nats://***@127.0.0.1:4222\""),
        "{printed}"
    );
    assert!(
        printed.contains("allowed_origin = [\"https://a.example\", \"https://b.example\"]"),
        "{printed}"
    );
    // A number alone is seconds.
    assert!(
        printed.contains("idle_timeout = 90  # config file"),
        "{printed}"
    );
    // Fed back (with the backend taken out: its password is gone), the same settings.
    let again = dir.join("again.toml");
    let kept: String = printed
        .lines()
        .filter(|l| !l.starts_with("backend"))
        .map(|l| format!("{l}\n"))
        .collect();
    write(&again, &kept);
    let (ok, reprinted, err) = print_config(&again, &[], &[]);
    assert!(ok, "{err}");
    let values = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("backend"))
            .map(|l| l.split("  #").next().unwrap().to_string())
            .collect()
    };
    assert_eq!(values(&printed), values(&reprinted));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Mistakes in the file are named: the file, the setting, and what is wrong with it.
#[test]
fn a_bad_config_file_is_named_and_nothing_starts() {
    let dir = scratch("bad");
    let cases = [
        (
            "max_queue_lenght = 5\n",
            "unknown setting \"max_queue_lenght\"",
        ),
        ("ack_wait = \"soon\"\n", "soon"),
        ("max_attempts = \"many\"\n", "many"),
        ("[limits]\nack_wait = \"1s\"\n", "[limits] is a table"),
        ("listen = \n", "hub.toml"),
    ];
    for (text, expected) in cases {
        let config = dir.join("hub.toml");
        write(&config, text);
        let (ok, out, err) = print_config(&config, &[], &[]);
        assert!(!ok, "{text:?} was accepted: {out}");
        assert!(err.contains(expected), "{text:?}: {err}");
    }
    let (ok, _, err) = taskhub(
        &[
            "serve",
            "--config",
            dir.join("missing.toml").to_str().unwrap(),
        ],
        &[],
    );
    assert!(!ok && err.contains("cannot read the config file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// --ready-json: one JSON line on stdout with what scripts need (the URL, the links), the human
/// lines on stderr.
#[test]
fn ready_json_is_one_line_for_scripts() {
    let hub = serve(&["--listen", "127.0.0.1:0", "--key", "k"], &[]);
    let r = &hub.ready;
    let url = hub.url();
    let http = r["http"].as_str().unwrap();
    assert_eq!(url.replacen("ws://", "http://", 1), http);
    assert!(
        r["join"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{http}/#token=th1.")),
        "{r}"
    );
    assert!(
        r["dashboard"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{http}/dashboard#token=th1.")),
        "{r}"
    );
    assert!(
        r["storage"].as_str().unwrap().contains("memory only"),
        "{r}"
    );
    assert_eq!(r["pid"].as_u64(), Some(u64::from(hub.child.id())));
    // The hub answers at that URL.
    let (ok, out, err) = taskhub(&["stats", "--hub", url, "--key", "k"], &[]);
    assert!(ok && out.contains("sessions:"), "{out}{err}");
    // The human lines went to stderr (between the log's).
    let human = format!("taskhub: hub listening on {url}");
    loop {
        let line = hub
            .stderr
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the listening line on stderr");
        if line == human {
            break;
        }
    }
    // Nothing else on stdout: the links went to stderr too.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(hub.stdout.try_recv().ok(), None);
}

/// --log-format json: every log line is a JSON object a log shipper can read (level, message,
/// where), and the key is in none of them.
#[test]
fn json_logs_are_one_object_per_line() {
    let hub = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--key",
            "k3y-not-for-logs",
            "--log-format",
            "json",
        ],
        &[("RUST_LOG", "taskhub=debug")],
    );
    // A session that comes and goes is logged (at debug).
    let (ok, _, err) = taskhub(
        &["stats", "--hub", hub.url(), "--key", "k3y-not-for-logs"],
        &[],
    );
    assert!(ok, "{err}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut logs = Vec::new();
    while !logs.iter().any(|l: &serde_json::Value| {
        l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("session ended"))
    }) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = hub
            .stderr
            .recv_timeout(left)
            .expect("a log line for the session");
        assert!(!line.contains("k3y-not-for-logs"), "{line}");
        if line.starts_with("taskhub: ") {
            continue; // the human start lines (--ready-json sends them to stderr)
        }
        let log: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        assert!(
            log["level"].is_string() && log["target"].is_string(),
            "{log}"
        );
        logs.push(log);
    }
}

/// The README's example file and the systemd unit's command line are ones the hub takes.
#[test]
fn the_documented_config_and_unit_are_taken() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let start = readme
        .find("```toml\n# hub.toml\n")
        .expect("the README's hub.toml")
        + 8;
    let example = &readme[start..start + readme[start..].find("```").unwrap()];
    let dir = scratch("docs");
    let config = dir.join("hub.toml");
    write(&config, example);
    let (ok, out, err) = print_config(&config, &[], &[]);
    assert!(ok, "{err}");
    assert!(
        out.contains("listen = \"0.0.0.0:7878\"  # config file"),
        "{out}"
    );
    assert!(out.contains("ack_wait = \"1m\"  # config file"), "{out}");
    // The unit's ExecStart, with its flags, parses (the file it names is the README's example).
    let unit = std::fs::read_to_string(root.join("docs/taskhub.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=/usr/local/bin/taskhub "))
        .expect("ExecStart");
    let mut args: Vec<&str> = exec.split_whitespace().collect();
    let at = args.iter().position(|a| *a == "--config").unwrap();
    let path = config.to_str().unwrap();
    args[at + 1] = path;
    args.push("--print-config");
    let (ok, out, err) = taskhub(&args, &[]);
    assert!(ok, "{err}");
    assert!(
        out.contains("data_dir = \"/var/lib/taskhub\"  # config file"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
