//! The hub's one port speaks both WebSocket and plain HTTP. [`read_head`] reads the request head;
//! a WebSocket upgrade goes on to the session (the head is replayed to tungstenite through
//! [`Replay`]), anything else is answered here from the embedded assets and the connection closed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::bundles::Site;

/// Longest request head accepted, its blank line included.
pub(crate) const MAX_HEAD: usize = 8 * 1024;

/// What reading a request head found.
#[derive(Debug)]
pub(crate) enum Head {
    /// A whole head: the bytes read (the head, and possibly the start of what follows it).
    Whole(Vec<u8>),
    /// More than [`MAX_HEAD`] bytes without the blank line that ends a head.
    TooLarge,
}

/// Read until the end of the HTTP request head, at most [`MAX_HEAD`] bytes of it.
pub(crate) async fn read_head(stream: &mut Stream) -> io::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        // Only the new bytes (and the three before them) can complete the blank line.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = from + at + 4;
            return Ok(if end > MAX_HEAD {
                Head::TooLarge
            } else {
                Head::Whole(buf)
            });
        }
        if buf.len() >= MAX_HEAD {
            return Ok(Head::TooLarge);
        }
    }
}

/// A request line and headers, read from a head.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub method: &'a str,
    pub target: &'a str,
    headers: Vec<(&'a str, &'a str)>,
}

impl<'a> Request<'a> {
    /// Parse `METHOD SP TARGET SP HTTP/1.x` and `Name: value` lines; `Err` says what is wrong.
    pub fn parse(head: &'a [u8]) -> Result<Request<'a>, &'static str> {
        let end = head
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("no end of head")?;
        let text = std::str::from_utf8(&head[..end]).map_err(|_| "the head is not UTF-8")?;
        let mut lines = text.split("\r\n");
        let line = lines.next().unwrap_or_default();
        let mut parts = line.split(' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("a request line is METHOD TARGET HTTP/1.1");
        };
        let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphabetic());
        if !token(method) || !target.starts_with('/') && target != "*" {
            return Err("a request line is METHOD TARGET HTTP/1.1");
        }
        if version != "HTTP/1.1" && version != "HTTP/1.0" {
            return Err("only HTTP/1.0 and HTTP/1.1 are spoken here");
        }
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or("a header line without a colon")?;
            if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
                return Err("a malformed header name");
            }
            headers.push((name, value.trim()));
        }
        Ok(Request {
            method,
            target,
            headers,
        })
    }

    /// The value of header `name`, if present (the first of several).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// The target without its query or fragment.
    pub fn path(&self) -> &'a str {
        self.target.split(['?', '#']).next().unwrap_or_default()
    }

    /// Whether it asks to switch protocols at all (any `Upgrade` header).
    pub fn wants_upgrade(&self) -> bool {
        self.header("upgrade").is_some()
    }

    /// Why it is not a WebSocket opening handshake this hub can take (RFC 6455 4.2.1), if it is
    /// not.
    pub fn websocket_problem(&self) -> Option<&'static str> {
        let has = |name: &str, token: &str| {
            self.header(name)
                .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        };
        if !has("upgrade", "websocket") {
            return Some("this port upgrades to websocket only");
        }
        if self.method != "GET" {
            return Some("a WebSocket handshake is a GET");
        }
        if !has("connection", "upgrade") {
            return Some("a WebSocket handshake needs Connection: Upgrade");
        }
        if self.header("sec-websocket-version") != Some("13") {
            return Some("this hub speaks WebSocket version 13");
        }
        if self
            .header("sec-websocket-key")
            .is_none_or(|k| k.len() != 24)
        {
            return Some("a WebSocket handshake needs a Sec-WebSocket-Key");
        }
        None
    }
}

impl Request<'_> {
    /// Why a browser page from this request's `Origin` may not open a WebSocket here, if it may
    /// not: `allowed` is not empty, the request names an origin, and that origin is neither in
    /// `allowed` nor the hub's own (`http://` or `https://` and the `Host` it was asked for).
    pub fn origin_problem(&self, allowed: &[String]) -> Option<String> {
        if allowed.is_empty() {
            return None;
        }
        let origin = self.header("origin")?;
        let own = self.header("host").is_some_and(|host| {
            origin == format!("http://{host}") || origin == format!("https://{host}")
        });
        if own || allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
            return None;
        }
        Some(format!(
            "pages from {} may not open a WebSocket to this hub (see --allowed-origin)",
            origin.chars().take(128).collect::<String>()
        ))
    }
}

/// Answer with `status` and a one-line plain-text `why`, then close.
pub(crate) async fn refuse(
    mut stream: Stream,
    status: &str,
    why: &str,
    extra_headers: &str,
) -> io::Result<()> {
    let body = format!("{why}\n");
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         {extra_headers}Connection: close\r\n\r\n",
        body.len()
    );
    // One write: a client that reads the head and gives up (tungstenite, refused an upgrade)
    // still has the reason, which then came in the same segment.
    stream
        .write_all(format!("{header}{body}").as_bytes())
        .await?;
    stream.shutdown().await?;
    // Read and drop what the client is still sending (the rest of a head too large) for a
    // moment: closing with unread input resets the connection, which can destroy the answer in
    // flight.
    let mut sink = [0u8; 4096];
    let mut left: usize = 64 * 1024;
    let drain = async {
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), drain).await;
    Ok(())
}

/// Answer a plain HTTP request from the site (embedded assets and worker bundles), then close.
pub(crate) async fn serve_static(
    stream: Stream,
    request: &Request<'_>,
    site: &Site,
) -> io::Result<()> {
    let method = request.method;
    let path = request.path();
    let (status, content_type, body): (&str, &str, &[u8]) = match (method, site.lookup(path)) {
        ("GET" | "HEAD", Some((content_type, body))) => ("200 OK", content_type, body),
        ("GET" | "HEAD", None) => ("404 Not Found", "text/plain; charset=utf-8", b"not found\n"),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            b"only GET and HEAD\n",
        ),
    };
    let headers = "Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n\
                   Access-Control-Allow-Origin: *\r\n";
    respond(stream, request, status, content_type, headers, body).await
}

/// Answer `request` with `status`, `body` of `content_type` (left out for `HEAD`) and
/// `extra_headers` (each ending in CRLF), then close.
pub(crate) async fn respond(
    mut stream: Stream,
    request: &Request<'_>,
    status: &str,
    content_type: &str,
    extra_headers: &str,
    body: &[u8],
) -> io::Result<()> {
    tracing::debug!(method = %request.method, path = %request.path(), %status, "http");
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         {extra_headers}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    if request.method != "HEAD" {
        stream.write_all(body).await?;
    }
    stream.shutdown().await
}

/// A stream that first yields bytes already read from it, then reads on.
#[derive(Debug)]
pub(crate) struct Replay {
    prefix: Vec<u8>,
    at: usize,
    inner: Stream,
}

impl Replay {
    pub fn new(prefix: Vec<u8>, inner: Stream) -> Self {
        Replay {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.at);
            let start = self.at;
            buf.put_slice(&self.prefix[start..start + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A connection, plain or TLS.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, data),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_and_malformed_ones_named() {
        let r =
            Request::parse(b"GET /x?y HTTP/1.1\r\nHost: x\r\nUPGRADE: WebSocket\r\n\r\n").unwrap();
        assert_eq!((r.method, r.target), ("GET", "/x?y"));
        assert_eq!(r.header("upgrade"), Some("WebSocket"));
        assert!(r.wants_upgrade());
        for (bad, why) in [
            (&b"GARBAGE\r\n\r\n"[..], "request line"),
            (b"GET / HTTP/1.1 extra\r\n\r\n", "request line"),
            (b"GET nope HTTP/1.1\r\n\r\n", "request line"),
            (b"GET / HTTP/2\r\n\r\n", "HTTP/1.1"),
            (b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n", "colon"),
            (b"GET / HTTP/1.1\r\nBad name: x\r\n\r\n", "header name"),
            (b"GET / HTTP/1.1\r\nX: \xff\r\n\r\n", "UTF-8"),
        ] {
            let err = Request::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn websocket_handshakes_are_checked_before_they_are_taken() {
        let ok = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        assert_eq!(Request::parse(ok).unwrap().websocket_problem(), None);
        let text = std::str::from_utf8(ok).unwrap();
        for (from, to, why) in [
            ("Upgrade: websocket", "Upgrade: h2c", "websocket only"),
            ("GET /", "POST /", "is a GET"),
            ("keep-alive, Upgrade", "keep-alive", "Connection: Upgrade"),
            ("Version: 13", "Version: 8", "version 13"),
            (
                "Key: dGhlIHNhbXBsZSBub25jZQ==",
                "Key: short",
                "Sec-WebSocket-Key",
            ),
        ] {
            let bad = text.replace(from, to);
            let problem = Request::parse(bad.as_bytes()).unwrap().websocket_problem();
            assert!(
                problem.is_some_and(|p| p.contains(why)),
                "{to}: {problem:?}"
            );
        }
    }
}
