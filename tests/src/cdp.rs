//! A small Chrome DevTools Protocol driver for real headless Chromium: start it on port 0, open
//! pages, evaluate JavaScript, close. Only what the browser tests need.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::Proc;

/// Flags Chromium needs here: root, no GPU, no network beyond loopback.
const FLAGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--remote-debugging-port=0",
];

/// A running Chromium and a DevTools connection to it.
#[derive(Debug)]
pub struct Browser {
    proc: Option<Proc>,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _profile: TempDir,
}

/// A page (tab) in the browser.
#[derive(Debug, Clone)]
pub struct Page {
    /// The DevTools session attached to this page, for [`Browser::call`].
    pub session: String,
}

#[derive(Debug)]
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Browser {
    /// Start headless Chromium (`CHROMIUM` or `/usr/bin/chromium`).
    pub async fn start() -> Browser {
        let exe = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let profile = std::env::temp_dir().join(format!(
            "taskhub-chromium-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let mut proc = Proc::spawn(
            Command::new(&exe)
                .args(FLAGS)
                .arg(format!("--user-data-dir={}", profile.display()))
                .arg("about:blank")
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let stderr = proc.0.stderr.take().expect("chromium stderr");
        let url = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stderr).lines();
            let url = loop {
                let line = lines
                    .next()
                    .unwrap_or_else(|| panic!("{exe} exited before DevTools was ready"))
                    .expect("chromium stderr is text");
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    break url.trim().to_string();
                }
            };
            // Keep draining stderr so Chromium never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines.by_ref() {});
            url
        })
        .await
        .expect("reading chromium's stderr");
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("DevTools websocket");
        Browser {
            proc: Some(proc),
            ws,
            next_id: 0,
            _profile: TempDir(profile),
        }
    }

    /// Send a DevTools command (to a page when `session` is given) and return its result.
    pub async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("devtools send");
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method}"))
                .expect("devtools connection open")
                .expect("devtools frame");
            let Message::Text(text) = frame else { continue };
            let v: Value = serde_json::from_str(&text).expect("devtools JSON");
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method} failed: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Open `url` in a new tab.
    pub async fn open(&mut self, url: &str) -> Page {
        let target = self
            .call(None, "Target.createTarget", json!({"url": url}))
            .await["targetId"]
            .clone();
        let session = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
            )
            .await["sessionId"]
            .as_str()
            .expect("session id")
            .to_string();
        Page { session }
    }

    /// Evaluate a JavaScript expression in `page`; returns its JSON value.
    pub async fn eval(&mut self, page: &Page, expression: &str) -> Value {
        let r = self
            .call(
                Some(&page.session),
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// Open a join link and wait (up to 30 s) until the page's worker is connected to the hub;
    /// returns the page and its status (`window.taskhub.status()`).
    pub async fn open_worker(&mut self, url: &str) -> (Page, Value) {
        let page = self.open(url).await;
        let status = self
            .wait_for(
                &page,
                "(() => { const s = window.taskhub && window.taskhub.status(); return s && s.state === 'connected' && s; })()",
                Duration::from_secs(30),
            )
            .await;
        (page, status)
    }

    /// Evaluate `expression` every 50 ms until it returns something other than null/false.
    pub async fn wait_for(&mut self, page: &Page, expression: &str, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let v = self.eval(page, expression).await;
            if !v.is_null() && v != json!(false) {
                return v;
            }
            if tokio::time::Instant::now() >= deadline {
                let text = self
                    .eval(
                        page,
                        "document.body ? document.body.innerText : '(no body)'",
                    )
                    .await;
                panic!("timed out waiting for `{expression}`; the page says:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Close the whole browser the way a user would (all tabs get pagehide), then reap it.
    pub async fn close(mut self) {
        self.next_id += 1;
        let msg = json!({"id": self.next_id, "method": "Browser.close", "params": {}});
        let _ = self.ws.send(Message::text(msg.to_string())).await;
        if let Some(mut p) = self.proc.take() {
            let _ = tokio::task::spawn_blocking(move || p.0.wait()).await;
        }
    }
}
