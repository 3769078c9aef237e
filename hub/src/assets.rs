//! The files the hub serves over HTTP, embedded in the binary: the pages in `www/` and the browser
//! worker package that `build.rs` produced. Only these paths exist; nothing else on disk can be
//! reached.

/// One served file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

macro_rules! www {
    ($file:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../www/", $file))
    };
}

macro_rules! pkg {
    ($file:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/pkg/", $file))
    };
}

const HTML: &str = "text/html; charset=utf-8";
pub(crate) const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
pub(crate) const WASM: &str = "application/wasm";
pub(crate) const JSON: &str = "application/json";

/// Whether `build.rs` built the browser worker (false: the wasm32 target was missing, and the
/// package is a stand-in that says so).
pub(crate) const BROWSER_WORKER_BUILT: bool =
    matches!(env!("TASKHUB_BROWSER_WORKER").as_bytes(), b"built");

/// The asset at a request path (query string already removed), if any.
pub(crate) fn lookup(path: &str) -> Option<Asset> {
    let (content_type, body): (&str, &[u8]) = match path {
        "/" | "/index.html" => (HTML, www!("index.html")),
        "/dashboard" | "/dashboard.html" => (HTML, www!("dashboard.html")),
        "/app.js" => (JS, www!("app.js")),
        "/dashboard.js" => (JS, www!("dashboard.js")),
        "/link.js" => (JS, www!("link.js")),
        "/chart.js" => (JS, www!("chart.js")),
        "/compute.js" => (JS, www!("compute.js")),
        "/style.css" => (CSS, www!("style.css")),
        "/pkg/wasm_worker.js" => (JS, pkg!("wasm_worker.js")),
        "/pkg/wasm_worker_bg.wasm" => (WASM, pkg!("wasm_worker_bg.wasm")),
        _ => return None,
    };
    Some(Asset { content_type, body })
}
