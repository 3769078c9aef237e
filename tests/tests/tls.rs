//! TLS end to end, with certificates from a private CA made at test time: the CLI, the native
//! worker, the Rust client and a browser tab on `wss://`/`https://` (the Python client's run is
//! in python.rs); a client
//! of the wrong scheme told what to do on both sides; and a certificate reloaded on SIGHUP while
//! sessions stay open.

// Test helpers: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use taskhub_client::{Client, ConnectOptions, PutOptions};
use taskhub_tests::cdp::Browser;
use taskhub_tests::pki::TestCa;
use taskhub_tests::{KEY, Proc, SubmitWithin, bin, cli, hub, serve_banner, serve_with};

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

fn tls_flags(files: &taskhub::TlsFiles) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        path(&files.cert).into(),
        "--tls-key".into(),
        path(&files.key).into(),
    ]
}

/// `taskhub serve` with TLS from `files`: the process, its URL, and what it printed up to the
/// line containing `until`.
fn serve_tls(files: &taskhub::TlsFiles, until: &str) -> (Proc, String, Vec<String>) {
    let flags = tls_flags(files);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (hub, banner) = serve_banner("127.0.0.1:0", &flags, until);
    let url = banner[0].split_whitespace().last().unwrap().to_string();
    (hub, url, banner)
}

async fn connect_with_ca(url: &str, ca: Option<&std::path::Path>) -> Result<Client, String> {
    let mut opts = ConnectOptions::new(url, KEY);
    opts.ca = ca.map(|p| p.to_path_buf());
    opts.timeout = Duration::from_secs(5);
    Client::connect(opts).await.map_err(|e| e.to_string())
}

/// The issue's first "done when": put over wss with a private CA, a worker process on wss, the
/// results read back over wss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_and_a_worker_process_work_over_wss_with_a_private_ca() {
    let ca = TestCa::new("cli");
    let (_hub, url, _) = serve_tls(&ca.issue("hub"), "listening");
    assert!(url.starts_with("wss://127.0.0.1:"), "{url}");
    let ca_file = ca.ca_file();
    let ca_arg = path(&ca_file);
    // A client command over wss, trusting the private CA.
    let over_wss = |args: &[&str]| {
        let mut all = vec!["--hub", url.as_str(), "--key", KEY, "--ca", ca_arg];
        all.extend_from_slice(args);
        cli(&all)
    };

    let put = over_wss(&[
        "put",
        "tasks",
        "1",
        "2",
        "--kind",
        "square",
        "--reply-to",
        "results",
    ]);
    assert!(put.status.success(), "{put:?}");
    assert_eq!(String::from_utf8_lossy(&put.stdout).lines().count(), 2);

    let _worker = Proc::spawn(
        Command::new(bin("taskhub-worker"))
            .args([
                "--hub", &url, "--key", KEY, "--ca", ca_arg, "--queue", "tasks",
            ])
            .env("RUST_LOG", "warn"),
    );
    let got = over_wss(&["get", "results", "--count", "2", "--timeout", "20"]);
    assert!(got.status.success(), "{got:?}");
    let results: Vec<serde_json::Value> = String::from_utf8_lossy(&got.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut texts: Vec<&str> = results
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    texts.sort_unstable();
    assert_eq!(texts, ["1 * 1 = 1", "2 * 2 = 4"]);

    // The join page and the dashboard come over https on the same port.
    let addr: std::net::SocketAddr = url.trim_start_matches("wss://").parse().unwrap();
    let (status, body) = https_get(addr, "/", &ca_file).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("<html"), "{body}");
}

/// GET over https, trusting `ca`; returns the status line and the body.
async fn https_get(
    addr: std::net::SocketAddr,
    target: &str,
    ca: &std::path::Path,
) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = taskhub_client::tls::client_config(Some(ca)).unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_checks_the_certificate_and_names_the_fix() {
    let ca = TestCa::new("client");
    let other = TestCa::new("other");
    let hub = hub(|c| c.tls = Some(ca.issue("hub"))).await;
    let url = hub.url();
    assert!(url.starts_with("wss://"), "{url}");

    let c = connect_with_ca(&url, Some(&ca.ca_file())).await.unwrap();
    let replies = c.put("q", json!(1), PutOptions::default()).await;
    assert!(replies.is_ok(), "{replies:?}");
    c.close().await;

    // A CA that did not sign the hub's certificate: refused, and the error says to pass --ca.
    let err = connect_with_ca(&url, Some(&other.ca_file()))
        .await
        .unwrap_err();
    assert!(
        err.contains("not signed by a CA this client trusts"),
        "{err}"
    );
    assert!(err.contains("--ca FILE"), "{err}");

    // A CA file that is not one.
    let err = connect_with_ca(&url, Some(&ca.issue("x").key))
        .await
        .unwrap_err();
    assert!(err.contains("holds no PEM certificate"), "{err}");

    hub.stop().await;
}

/// `ws://` to a TLS port and `wss://` to a plain one: each side says what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_scheme_is_named_on_both_sides() {
    let ca = TestCa::new("scheme");
    let files = ca.issue("hub");
    let mut cmd = Command::new(bin("taskhub"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--key", KEY])
        .args(tls_flags(&files))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut tls_hub = Proc::spawn(&mut cmd);
    let url = first_url(&mut tls_hub);
    let plain_url = url.replace("wss://", "ws://");

    let err = connect_with_ca(&plain_url, None).await.unwrap_err();
    assert!(
        err.contains("400 Bad Request") && err.contains("connect with wss://"),
        "{err}"
    );

    let (_plain_hub, plain) = serve_with("127.0.0.1:0", &[]);
    let secure = plain.replace("ws://", "wss://");
    let err = connect_with_ca(&secure, Some(&ca.ca_file()))
        .await
        .unwrap_err();
    assert!(err.contains("use ws://"), "{err}");

    // The TLS hub's log says it too (then the test stops it to read the whole log).
    let _ = tls_hub.0.kill();
    let out = tls_hub.0.wait_with_output_taken();
    assert!(
        out.contains("plain-text request on the TLS port") && out.contains("wss://"),
        "{out}"
    );
}

/// The certificate reloads on SIGHUP: new connections get the new one, and sessions open before
/// keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_without_dropping_sessions() {
    let old_ca = TestCa::new("old");
    let new_ca = TestCa::new("new");
    let files = old_ca.issue("hub");
    let (hub, url, _) = serve_tls(&files, "listening");
    let before = connect_with_ca(&url, Some(&old_ca.ca_file()))
        .await
        .unwrap();
    before
        .put("q", json!("before"), PutOptions::default())
        .await
        .unwrap();

    // Replace the files with a certificate from another CA, and signal.
    let replacement = new_ca.issue("hub");
    std::fs::copy(&replacement.cert, &files.cert).unwrap();
    std::fs::copy(&replacement.key, &files.key).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &hub.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    let new_ca_file = new_ca.ca_file();
    let after = taskhub_tests::eventually(Duration::from_secs(10), || async {
        connect_with_ca(&url, Some(&new_ca_file)).await.ok()
    })
    .await
    .expect("the new certificate is served after SIGHUP");
    let err = connect_with_ca(&url, Some(&old_ca.ca_file()))
        .await
        .unwrap_err();
    assert!(
        err.contains("not signed by a CA this client trusts"),
        "{err}"
    );

    // The session opened before the reload still works, both ways.
    before
        .put("q", json!("still here"), PutOptions::default())
        .await
        .unwrap();
    let a = after
        .get("q", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    let b = before
        .get("q", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (a.payload, b.payload),
        (json!("before").into(), json!("still here").into())
    );

    // A reload that fails (a key that does not match) keeps the certificate in use.
    std::fs::copy(&old_ca.issue("stray").key, &files.key).unwrap();
    Command::new("kill")
        .args(["-HUP", &hub.pid().to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(hub_alive(&hub), "a bad reload must not stop the hub");
    connect_with_ca(&url, Some(&new_ca_file)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_tab_works_from_the_printed_https_link() {
    let ca = TestCa::new("browser");
    let (_hub, url, banner) = serve_tls(&ca.issue("hub"), "dashboard at");
    let link = banner
        .iter()
        .find(|l| l.contains("in a browser to lend it as a worker"))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("https://")))
        .unwrap_or_else(|| panic!("no https join link in {banner:?}"))
        .to_string();

    let mut browser = Browser::start().await;
    // The test CA is not in Chromium's store; the flag a user would not need with a public CA.
    browser
        .call(
            None,
            "Security.setIgnoreCertificateErrors",
            json!({"ignore": true}),
        )
        .await;
    assert!(link.contains("#token=th1."), "{link}");
    let (page, status) = browser.open_worker(&format!("{link}&workers=1")).await;
    assert_eq!(status["workers"], 1, "{status}");
    // The token left the address bar (and so the history) once the page read it.
    let href = browser.eval(&page, "location.href").await;
    let href = href.as_str().unwrap();
    assert!(
        !href.contains("token") && href.contains("queue=tasks"),
        "{href}"
    );

    let c = connect_with_ca(&url, Some(&ca.ca_file())).await.unwrap();
    let replies = c
        .submit_within(
            "tasks",
            (0..20).map(|n| json!(n)),
            PutOptions::new().kind("square"),
            Some(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    for (n, r) in (0..20).zip(&replies) {
        assert_eq!(
            r.result,
            Some(json!(format!("{n} * {n} = {}", n * n)).into()),
            "{r:?}"
        );
    }
    let stats = c.stats().await.unwrap();
    assert!(
        stats
            .workers
            .iter()
            .any(|w| w.role == taskhub_core::Role::Browser && w.acked == 20),
        "the tab over wss did the tasks: {stats:?}"
    );
    browser.close().await;
}

fn first_url(p: &mut Proc) -> String {
    use std::io::BufRead;
    let stdout = p.0.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let line = lines.next().unwrap().unwrap();
    std::thread::spawn(move || for _ in lines.by_ref() {});
    line.split_whitespace().last().unwrap().to_string()
}

fn hub_alive(p: &Proc) -> bool {
    std::path::Path::new(&format!("/proc/{}", p.pid())).exists()
        && !std::fs::read_to_string(format!("/proc/{}/stat", p.pid()))
            .unwrap_or_default()
            .contains(") Z ")
}

trait TakeOutput {
    fn wait_with_output_taken(&mut self) -> String;
}

impl TakeOutput for std::process::Child {
    /// Everything the (stopped) process wrote to stderr.
    fn wait_with_output_taken(&mut self) -> String {
        use std::io::Read;
        let _ = self.wait();
        let mut err = String::new();
        if let Some(mut s) = self.stderr.take() {
            let _ = s.read_to_string(&mut err);
        }
        err
    }
}
