//! The hub's port also serves the join page, the dashboard and the browser worker package.

use taskhub_tests::{http as request, http_raw, hub};

#[tokio::test]
async fn pages_and_the_wasm_package_are_served_with_their_types() {
    let hub = hub(|_| {}).await;
    let addr = hub.addr();
    for (path, ty, marker) in [
        ("/", "text/html", &b"app.js"[..]),
        ("/dashboard", "text/html", b"dashboard.js"),
        ("/app.js", "text/javascript", b"BrowserWorker"),
        ("/compute.js", "text/javascript", b"runTask"),
        ("/style.css", "text/css", b"font-family"),
        ("/pkg/wasm_worker.js", "text/javascript", b"BrowserWorker"),
        ("/pkg/wasm_worker_bg.wasm", "application/wasm", b"\0asm"),
    ] {
        let (status, headers, body) = request(addr, "GET", path).await;
        assert_eq!(status, "HTTP/1.1 200 OK", "{path}");
        assert!(
            headers.contains(&format!("content-type: {ty}")),
            "{path}: {headers}"
        );
        assert!(
            headers.contains(&format!("content-length: {}", body.len())),
            "{path}"
        );
        assert!(
            body.windows(marker.len()).any(|w| w == marker),
            "{path} body"
        );
    }
    // The fragment never reaches the server, but a query string may: it is ignored.
    let (status, _, _) = request(addr, "GET", "/?x=1").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let (status, _, body) = request(addr, "HEAD", "/").await;
    assert_eq!((status.as_str(), body.len()), ("HTTP/1.1 200 OK", 0));
    hub.stop().await;
}

#[tokio::test]
async fn nothing_else_is_reachable() {
    let hub = hub(|_| {}).await;
    let addr = hub.addr();
    for path in [
        "/nope",
        "/../Cargo.toml",
        "/../../etc/passwd",
        "/www/index.html",
        "/pkg/",
        "/%2e%2e/Cargo.toml",
    ] {
        let (status, _, body) = request(addr, "GET", path).await;
        assert_eq!(status, "HTTP/1.1 404 Not Found", "{path}");
        assert_eq!(body, b"not found\n");
    }
    let (status, _, _) = request(addr, "POST", "/").await;
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    hub.stop().await;
}

#[tokio::test]
async fn the_http_side_answers_like_a_server() {
    let hub = hub(|_| {}).await;
    let addr = hub.addr();
    // A head of exactly 8 KiB is served; one byte more is 431.
    let head = |total: usize| {
        let start = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nX-Pad: ");
        let pad = total - start.len() - "\r\n\r\n".len();
        format!("{start}{}\r\n\r\n", "p".repeat(pad))
    };
    let (status, _, _) = http_raw(addr, head(8 * 1024).as_bytes()).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let (status, _, body) = http_raw(addr, head(8 * 1024 + 1).as_bytes()).await;
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    assert_eq!(body, b"the request head is over 8192 bytes\n");
    let (status, _, _) = http_raw(addr, head(9 * 1024).as_bytes()).await;
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    // A head with no end at all, 8 KiB of it, gets the same.
    let (status, _, _) = http_raw(addr, "x".repeat(8 * 1024).as_bytes()).await;
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    // Garbage is a bad request, not a wrong method.
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/9\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
    ] {
        let (status, _, body) = http_raw(addr, garbage).await;
        assert_eq!(status, "HTTP/1.1 400 Bad Request", "{garbage:?}");
        assert!(!body.is_empty());
    }
    // A WebSocket handshake the hub cannot take says why, and which version it speaks.
    let upgrade = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let (status, headers, body) = http_raw(addr, upgrade.as_bytes()).await;
    assert_eq!(status, "HTTP/1.1 426 Upgrade Required");
    assert!(headers.contains("sec-websocket-version: 13"), "{headers}");
    assert_eq!(body, b"this hub speaks WebSocket version 13\n");
    let (status, _, body) = http_raw(
        addr,
        format!("GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: h2c\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status, "HTTP/1.1 426 Upgrade Required");
    assert_eq!(body, b"this port upgrades to websocket only\n");
    // And a real client still gets in.
    let c = taskhub_tests::client(&hub.url()).await;
    assert!(c.stats().await.is_ok());
    hub.stop().await;
}

/// With `--allowed-origin`, only the listed sites' pages (and the hub's own) may open a
/// WebSocket; clients that send no `Origin` (all but browsers) are never refused for it.
#[tokio::test]
async fn an_origin_allow_list_keeps_other_sites_pages_out() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let try_origin = |url: String, origin: Option<String>| async move {
        let mut req = url.into_client_request().unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("Origin", o.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok(_) => 101,
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
            Err(e) => panic!("{e}"),
        }
    };
    let open = hub(|_| {}).await;
    assert_eq!(
        try_origin(open.url(), Some("https://anywhere.example".into())).await,
        101,
        "no list: any page"
    );
    open.stop().await;
    let hub = hub(|c| c.allowed_origins = vec!["https://good.example".into()]).await;
    let own = format!("http://{}", hub.addr());
    for (origin, status) in [
        (Some("https://good.example".to_string()), 101),
        (Some(own), 101),
        (None, 101),
        (Some("https://evil.example".to_string()), 403),
        (Some("http://good.example".to_string()), 403),
    ] {
        assert_eq!(
            try_origin(hub.url(), origin.clone()).await,
            status,
            "{origin:?}"
        );
    }
    hub.stop().await;
}
