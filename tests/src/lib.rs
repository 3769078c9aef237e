//! Helpers for taskhub's end-to-end tests: hubs on port 0, raw protocol clients, and the built
//! binaries as child processes.

// Test support: a failed step should fail the test loudly, so unwrap and expect are the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod cdp;
pub mod pki;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use taskhub::{Config, Running, Secret};
use taskhub_client::{Client, ClientError, ConnectOptions, Payload, PutOptions, Reply};
use taskhub_core::auth::{client_proof, hex};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The key every test hub uses.
pub const KEY: &str = "test-key-0123456789";

/// Whether the feature tests run against hubs that keep their tasks in a data dir
/// (`TASKHUB_TEST_STORAGE=disk`) instead of memory. The README's test command runs them both
/// ways.
pub fn on_disk() -> bool {
    std::env::var("TASKHUB_TEST_STORAGE").is_ok_and(|v| v == "disk")
}

/// A new, empty data dir for one hub, under `$TMPDIR/taskhub-test-data`.
pub fn fresh_data_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir()
        .join("taskhub-test-data")
        .join(format!("{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Start an in-process hub on a free port, after `tweak` adjusts its config; with a fresh data
/// dir when the tests run [`on_disk`].
pub async fn hub(tweak: impl FnOnce(&mut Config)) -> Running {
    let mut config = Config::new(Secret::new(KEY));
    if on_disk() {
        config.data_dir = Some(taskhub::storage::DataDir::new(fresh_data_dir()));
    }
    if on_nats() {
        config.backend = Some(taskhub::NatsBackend::new(nats_for_a_hub()));
    }
    tweak(&mut config);
    Running::start("127.0.0.1:0", config)
        .await
        .expect("hub starts")
}

/// A producer session on `url` with the test key.
pub async fn client(url: &str) -> Client {
    Client::connect(ConnectOptions::new(url, KEY))
        .await
        .expect("client connects")
}

/// [`Client::submit`] with a bound on the wait: how the tests say how long results may take.
/// Running out of it fails the test, naming the bound.
#[allow(async_fn_in_trait)]
pub trait SubmitWithin {
    async fn submit_within<P: Into<Payload>>(
        &self,
        queue: &str,
        payloads: impl IntoIterator<Item = P>,
        opts: PutOptions,
        wait: Option<Duration>,
    ) -> Result<Vec<Reply>, ClientError>;
}

impl SubmitWithin for Client {
    async fn submit_within<P: Into<Payload>>(
        &self,
        queue: &str,
        payloads: impl IntoIterator<Item = P>,
        opts: PutOptions,
        wait: Option<Duration>,
    ) -> Result<Vec<Reply>, ClientError> {
        let submitted = self.submit(queue, payloads, opts);
        match wait {
            Some(w) => tokio::time::timeout(w, submitted)
                .await
                .unwrap_or_else(|_| panic!("the results did not come within {w:?}")),
            None => submitted.await,
        }
    }
}

/// A WebSocket speaking raw protocol JSON, for tests that need to misbehave.
#[derive(Debug)]
pub struct Raw {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Raw {
    /// Connect without authenticating; the hub's challenge is still unread.
    pub async fn connect(url: &str) -> Raw {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        Raw { ws }
    }

    /// Connect and authenticate with `key`; returns the hub's answer to `auth`.
    pub async fn authenticate(url: &str, key: &str, role: &str) -> (Raw, Value) {
        Raw::authenticate_as(url, "default", &Secret::new(key), role).await
    }

    /// Connect and authenticate with a token (`th1.…`); returns the hub's answer to `auth`.
    pub async fn authenticate_token(url: &str, token: &str, role: &str) -> (Raw, Value) {
        let (key_id, secret, _) = taskhub_core::token::credentials(token).expect("a token");
        Raw::authenticate_as(url, &key_id, &secret, role).await
    }

    /// Connect and authenticate as `key_id` with `secret`; returns the hub's answer to `auth`.
    pub async fn authenticate_as(
        url: &str,
        key_id: &str,
        secret: &Secret,
        role: &str,
    ) -> (Raw, Value) {
        let mut raw = Raw::connect(url).await;
        let challenge = raw.recv().await.expect("challenge");
        let nonce = challenge["nonce"].as_str().expect("nonce").to_string();
        let client_nonce = hex(&[5u8; 32]);
        let proof = client_proof(secret, key_id, &nonce, &client_nonce);
        raw.send(json!({"type": "auth", "key_id": key_id, "client_nonce": client_nonce, "proof": proof, "role": role}))
            .await;
        let answer = raw.recv().await.expect("answer to auth");
        (raw, answer)
    }

    /// Connect and authenticate with the test key; panics if refused.
    pub async fn session(url: &str, role: &str) -> Raw {
        let (raw, answer) = Raw::authenticate(url, KEY, role).await;
        assert_eq!(answer["type"], "welcome", "{answer}");
        raw
    }

    /// A worker session consuming `queue` with `prefetch` 1 (its `consume` answered `ok`).
    pub async fn consumer(url: &str, queue: &str) -> Raw {
        let mut w = Raw::session(url, "worker").await;
        let answer = w
            .request(
                json!({"type": "consume", "queues": [queue], "prefetch": 1}),
                1,
            )
            .await;
        assert_eq!(answer["type"], "ok", "{answer}");
        w
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, s: &str) {
        self.ws.send(Message::text(s)).await.expect("send");
    }

    /// The next JSON message, or `None` when the connection closed. Panics after 10 s of silence.
    pub async fn recv(&mut self) -> Option<Value> {
        self.recv_within(Duration::from_secs(10))
            .await
            .expect("a message within 10 s")
    }

    /// `Err(())` if nothing arrived within `wait`; `Ok(None)` if the connection closed.
    pub async fn recv_within(&mut self, wait: Duration) -> Result<Option<Value>, ()> {
        loop {
            let frame = tokio::time::timeout(wait, self.ws.next())
                .await
                .map_err(|_| ())?;
            match frame {
                Some(Ok(Message::Text(t))) => {
                    return Ok(Some(serde_json::from_str(&t).expect("hub sends JSON")));
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(None),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Send a request and return the first message carrying its `req`.
    pub async fn request(&mut self, mut v: Value, req: u64) -> Value {
        v["req"] = json!(req);
        self.send(v).await;
        loop {
            let msg = self.recv().await.expect("connection open");
            if msg["req"] == json!(req) {
                return msg;
            }
        }
    }

    /// Read until the connection ends; returns the messages before it and the close code and
    /// reason the hub sent (`None`: the connection ended without a Close frame, which a
    /// browser reports as 1005 or 1006).
    pub async fn until_close_frame(&mut self) -> (Vec<Value>, Option<(u16, String)>) {
        let mut seen = Vec::new();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("the hub closes within 10 s");
            match frame {
                Some(Ok(Message::Text(t))) => {
                    seen.push(serde_json::from_str(&t).expect("hub sends JSON"));
                }
                Some(Ok(Message::Close(Some(f)))) => {
                    return (seen, Some((u16::from(f.code), f.reason.to_string())));
                }
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return (seen, None),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Read until the connection closes; returns what came before.
    pub async fn until_closed(&mut self) -> Vec<Value> {
        let mut seen = Vec::new();
        while let Some(v) = self.recv().await {
            seen.push(v);
        }
        seen
    }
}

/// Path of a binary built by this workspace (`taskhub`, `taskhub-worker`).
pub fn bin(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().expect("test binary path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (cargo test --workspace builds them)",
        path.display()
    );
    path
}

/// A child process killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Proc(pub Child);

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        Proc(cmd.stdin(Stdio::null()).spawn().expect("process starts"))
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `taskhub serve --listen LISTEN` as a process; returns it and the URL it printed.
pub fn serve(listen: &str) -> (Proc, String) {
    serve_with(listen, &[])
}

/// [`serve`] with more flags. The URL comes from the hub's `--ready-json` line.
pub fn serve_with(listen: &str, extra: &[&str]) -> (Proc, String) {
    let flags = [&["--ready-json"][..], extra].concat();
    let (p, banner) = serve_banner(listen, &flags, "\"url\"");
    let ready: Value = serde_json::from_str(&banner[0]).unwrap();
    let url = ready["url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with("ws://") || url.starts_with("wss://"),
        "{ready}"
    );
    (p, url)
}

/// [`serve_with`], returning the lines `serve` printed up to the first that contains `until`.
pub fn serve_banner(listen: &str, extra: &[&str], until: &str) -> (Proc, Vec<String>) {
    let mut cmd = Command::new(bin("taskhub"));
    cmd.args(["serve", "--listen", listen, "--key", KEY])
        .args(extra);
    // The storage the test run asks for, unless the test chose its own.
    if !extra.contains(&"--data-dir") && !extra.contains(&"--backend") {
        if on_disk() {
            cmd.arg("--data-dir").arg(fresh_data_dir());
        } else if on_nats() {
            cmd.arg("--backend").arg(nats_for_a_hub());
        }
    }
    banner_of(cmd.env("RUST_LOG", "warn"), until)
}

/// Start `cmd` (a `taskhub serve`) and return it with the lines it printed up to the first that
/// contains `until`; the rest of its output is read and dropped.
pub fn banner_of(cmd: &mut Command, until: &str) -> (Proc, Vec<String>) {
    let mut p = Proc::spawn(cmd.stdout(Stdio::piped()));
    let stdout = p.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut banner = Vec::new();
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("serve stopped after printing {banner:?}"))
            .unwrap();
        let done = line.contains(until);
        banner.push(line);
        if done {
            break;
        }
    }
    // Keep reading, so the hub never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    (p, banner)
}

/// A native worker running the built-in handlers in this process (the library the binary wraps).
/// Dropping the returned sender stops it gracefully.
pub fn in_process_worker(
    url: &str,
    queue: &str,
    concurrency: u32,
) -> tokio::sync::oneshot::Sender<()> {
    worker_with(
        url,
        queue,
        concurrency,
        taskhub_native_worker::Handlers::builtins(),
    )
}

/// [`in_process_worker`] running `handlers`.
pub fn worker_with(
    url: &str,
    queue: &str,
    concurrency: u32,
    handlers: taskhub_native_worker::Handlers,
) -> tokio::sync::oneshot::Sender<()> {
    let queues = vec![taskhub_core::QueueName::new(queue).unwrap()];
    let mut config = taskhub_core::worker::WorkerConfig::new("default", Secret::new(KEY), queues);
    config.concurrency = concurrency;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let opts = taskhub_native_worker::Options::new(url, config, handlers);
    tokio::spawn(taskhub_native_worker::run(opts, async {
        let _ = stopped.await;
    }));
    stop
}

/// One raw HTTP/1.1 request; returns (status line, headers, body).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
) -> (String, String, Vec<u8>) {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    http_raw(addr, req.as_bytes()).await
}

/// Send `request` as it is (it may be malformed); returns (status line, headers, body).
pub async fn http_raw(addr: std::net::SocketAddr, request: &[u8]) -> (String, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The hub may answer before it has read everything (a head too large): that is fine.
    let _ = s.write_all(request).await;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
    (
        status.to_string(),
        headers.to_ascii_lowercase(),
        raw[split + 4..].to_vec(),
    )
}

/// `taskhub serve` with the test key and `args`, which must make it exit at once (within 10 s):
/// its exit status and what it wrote to stderr.
pub fn serve_exits(args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(bin("taskhub"))
        .args(["serve", "--listen", "127.0.0.1:0", "--key", KEY])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve {args:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        std::io::Read::read_to_string(&mut stderr, &mut err).unwrap();
    }
    (status, err)
}

/// Run the `taskhub` CLI to completion.
pub fn cli(args: &[&str]) -> std::process::Output {
    Command::new(bin("taskhub")).args(args).output().unwrap()
}

/// Start a native worker process consuming `queue`.
pub fn worker(url: &str, queue: &str, extra: &[&str]) -> Proc {
    Proc::spawn(
        Command::new(bin("taskhub-worker"))
            .args(["--hub", url, "--key", KEY, "--queue", queue])
            .args(extra)
            .env("RUST_LOG", "warn"),
    )
}

/// Take results off `queue` until every task of `ids` has reported `ok: true`, waiting at most
/// `wait` for each; `seen` may already hold some ids. Panics on a failed result, a stall, or a
/// result for a task that is not one of `ids`.
pub async fn await_results(
    c: &Client,
    queue: &str,
    ids: &[taskhub_core::TaskId],
    mut seen: std::collections::HashSet<u64>,
    wait: Duration,
) {
    while seen.len() < ids.len() {
        let t = c
            .get(queue, wait)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{queue} stalled at {} of {}", seen.len(), ids.len()));
        assert_eq!(t.payload["ok"], json!(true), "{}", t.payload);
        seen.insert(t.payload["id"].as_u64().unwrap());
    }
    let expected: std::collections::HashSet<u64> = ids.iter().map(|i| i.0).collect();
    assert_eq!(seen, expected, "every task completed, none lost");
}

/// Poll `check` every 20 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `nats-server -js` of its own for one test, on a free port, with its store in a fresh
/// directory; stopped when dropped, and also when the test process exits without dropping it
/// (it runs under a shell that stops it once its stdin, held by this process, closes).
#[derive(Debug)]
pub struct Nats {
    proc: Proc,
    stdin: Option<std::process::ChildStdin>,
    pub url: String,
    store: PathBuf,
    flags: Vec<String>,
}

impl Nats {
    /// Start it, or panic saying how to install it (`.ci/run` and `scripts/test` do).
    pub fn start() -> Nats {
        Nats::start_with(&[])
    }

    /// [`Nats::start`] with more `nats-server` flags (`--user`, `--pass`, ...).
    pub fn start_with(flags: &[&str]) -> Nats {
        let store = fresh_data_dir();
        std::fs::create_dir_all(&store).unwrap();
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        let (proc, stdin, url) = Nats::spawn("-1", &store, &flags);
        Nats {
            proc,
            stdin,
            url,
            store,
            flags,
        }
    }

    /// Stop it (the hubs on it lose it), wait `down`, and start it again on the same port with
    /// the same store.
    pub fn restart_after(&mut self, down: Duration) {
        drop(self.stdin.take());
        let _ = self.proc.0.wait();
        std::thread::sleep(down);
        let port = self.url.rsplit(':').next().unwrap().to_string();
        let (proc, stdin, url) = Nats::spawn(&port, &self.store, &self.flags);
        assert_eq!(url, self.url);
        self.proc = proc;
        self.stdin = stdin;
    }

    fn spawn(
        port: &str,
        store: &std::path::Path,
        flags: &[String],
    ) -> (Proc, Option<std::process::ChildStdin>, String) {
        let exe = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("nats-server is missing: apt-get install -y nats-server (scripts/test does)");
        let mut child = Command::new("sh")
            .args(["-c", r#""$0" "$@" & p=$!; read -r _; kill $p; wait $p"#])
            .arg(exe)
            .args(["-a", "127.0.0.1", "-p", port, "-js", "-sd"])
            .arg(store)
            .args(flags)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh starts");
        let stdin = child.stdin.take();
        let stderr = child.stderr.take().unwrap();
        let proc = Proc(child);
        let mut lines = BufReader::new(stderr).lines();
        let mut url = None;
        let mut seen = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                url = Some(format!("nats://{}", addr.trim()));
            }
            let ready = line.contains("Server is ready");
            seen.push(line);
            if ready {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines.by_ref() {});
        let url = url.unwrap_or_else(|| panic!("nats-server did not start: {seen:?}"));
        (proc, stdin, url)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.proc.0.wait();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// Whether the feature tests run against hubs that keep their queues in NATS JetStream
/// (`TASKHUB_TEST_BACKEND=nats`), each hub on a `nats-server` of its own.
pub fn on_nats() -> bool {
    std::env::var("TASKHUB_TEST_BACKEND").is_ok_and(|v| v == "nats")
}

/// False, saying why, on a NATS backend, for a test of what only the embedded broker does
/// (ARCHITECTURE.md, "Scaling out with NATS", lists the differences): `if !embedded_only(..)`
/// then return.
pub fn embedded_only(what: &str) -> bool {
    if on_nats() {
        eprintln!("not on a NATS backend: {what}");
        return false;
    }
    true
}

/// A NATS server for one hub of the feature tests, kept until the test process ends.
fn nats_for_a_hub() -> String {
    static SERVERS: std::sync::Mutex<Vec<Nats>> = std::sync::Mutex::new(Vec::new());
    let nats = Nats::start();
    let url = nats.url.clone();
    SERVERS.lock().unwrap_or_else(|e| e.into_inner()).push(nats);
    url
}

/// An in-process hub on `nats` (`--backend`), after `tweak`.
pub async fn hub_on(nats: &Nats, tweak: impl FnOnce(&mut Config)) -> Running {
    let mut config = Config::new(Secret::new(KEY));
    config.backend = Some(taskhub::NatsBackend::new(nats.url.clone()));
    tweak(&mut config);
    Running::start("127.0.0.1:0", config)
        .await
        .expect("hub starts on NATS")
}

/// Submit one `square` of `n` to `tasks` through `c` and check its result comes back within
/// `wait`: a worker somewhere did it.
pub async fn square_is_done(c: &Client, n: i64, wait: Duration) {
    let r = c
        .submit_within(
            "tasks",
            [json!(n)],
            PutOptions::new().kind("square"),
            Some(wait),
        )
        .await
        .unwrap();
    let expected = format!("{n} * {n} = {}", i128::from(n) * i128::from(n));
    assert_eq!(r[0].result, Some(json!(expected).into()), "{:?}", r[0]);
}

/// Take `n` results (or dead-letter outcomes) off `queue`, each within 10 s, ordered by task id.
pub async fn take_results(c: &Client, queue: &str, n: usize) -> Vec<Payload> {
    let mut results = Vec::with_capacity(n);
    for _ in 0..n {
        let t = c
            .get(queue, Duration::from_secs(10))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("a result on {queue} within 10 s"));
        results.push(t.payload);
    }
    results.sort_by_key(|r| r["id"].as_u64());
    results
}

/// Put two `square` tasks on `tasks` through `c` with `reply_to: results`, and check both
/// results arrive there (any order) with their task ids: the result path, end to end.
pub async fn results_come_back_on_reply_to(c: &Client) {
    let opts = PutOptions::new().kind("square").reply_to("results");
    let ids = c
        .put_many("tasks", vec![json!(3411), json!(1605)], opts)
        .await
        .unwrap();
    assert!(ids[1].0 > ids[0].0, "ids grow in put order: {ids:?}");
    let results = take_results(c, "results", 2).await;
    assert_eq!(
        results,
        vec![
            json!({"id": ids[0], "ok": true, "result": "3411 * 3411 = 11634921"}),
            json!({"id": ids[1], "ok": true, "result": "1605 * 1605 = 2576025"}),
        ]
    );
}
