//! The hub's one port speaks both WebSocket and plain HTTP. [`read_head`] reads the request head;
//! a WebSocket upgrade goes on to the session (the head is replayed to tungstenite through
//! [`Replay`]), anything else is answered here from the embedded assets and the connection closed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::bundles::Site;

/// Longest request head accepted.
const MAX_HEAD: usize = 8 * 1024;

/// Read until the end of the HTTP request head. Returns the bytes read (the head, and possibly
/// the start of what follows it).
pub(crate) async fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(buf);
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
    }
}

/// Whether the head asks for a WebSocket upgrade.
pub(crate) fn is_upgrade(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    text.lines().skip(1).any(|line| {
        let Some((name, value)) = line.split_once(':') else {
            return false;
        };
        name.trim().eq_ignore_ascii_case("upgrade")
            && value.trim().eq_ignore_ascii_case("websocket")
    })
}

/// Answer a plain HTTP request from the site (embedded assets and worker bundles), then close.
pub(crate) async fn serve_static(
    mut stream: TcpStream,
    head: &[u8],
    site: &Site,
) -> io::Result<()> {
    let text = String::from_utf8_lossy(head);
    let mut parts = text.lines().next().unwrap_or_default().split_whitespace();
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let (status, content_type, body): (&str, &str, &[u8]) = match (method, site.lookup(path)) {
        ("GET" | "HEAD", Some((content_type, body))) => ("200 OK", content_type, body),
        ("GET" | "HEAD", None) => ("404 Not Found", "text/plain; charset=utf-8", b"not found\n"),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            b"only GET and HEAD\n",
        ),
    };
    tracing::debug!(%method, %path, %status, "http");
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n\
         Access-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    if method != "HEAD" {
        stream.write_all(body).await?;
    }
    stream.shutdown().await
}

/// A stream that first yields bytes already read from it, then reads on.
#[derive(Debug)]
pub(crate) struct Replay {
    prefix: Vec<u8>,
    at: usize,
    inner: TcpStream,
}

impl Replay {
    pub fn new(prefix: Vec<u8>, inner: TcpStream) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrades_are_recognised_case_insensitively() {
        assert!(is_upgrade(
            b"GET / HTTP/1.1\r\nHost: x\r\nUPGRADE: WebSocket\r\n\r\n"
        ));
        assert!(!is_upgrade(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!is_upgrade(b"GET /upgrade:websocket HTTP/1.1\r\n\r\n"));
    }
}
