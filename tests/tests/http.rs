//! The hub's port also serves the join page, the dashboard and the browser worker package.

use taskhub_tests::{http as request, hub};

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
