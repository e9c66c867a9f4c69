//! The pages the bridge serves to people: the built-in Workshop page and `client.js`, both
//! embedded in the binary, or the user's own built Workshop (`--workshop-dir`).
//!
//! Every response carries the same security headers: a Content-Security-Policy that lets the
//! page run only its own scripts and talk only to its own bridge, no referrer (the page's
//! address may hold the token), and no content sniffing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::config::expand_home;
use crate::server::AppState;
use crate::site::{self, Miss};

/// The built-in page: nothing runs or loads but its own files and its own bridge.
const CSP_BUILT_IN: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self' ws: wss:; manifest-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// A user's Workshop (e.g. a Three.js build): still only its own scripts, but the images,
/// workers, WebAssembly and injected styles such apps use.
const CSP_WORKSHOP_DIR: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; media-src 'self' data: blob:; \
    font-src 'self' data:; worker-src 'self' blob:; connect-src 'self' ws: wss:; \
    base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// One file compiled into the binary.
struct Embedded {
    path: &'static str,
    body: &'static [u8],
    content_type: &'static str,
}

const EMBEDDED: &[Embedded] = &[
    Embedded {
        path: "/index.html",
        body: include_bytes!("../ui/workshop/index.html"),
        content_type: "text/html; charset=utf-8",
    },
    Embedded {
        path: "/client.js",
        body: include_bytes!("../ui/workshop/client.js"),
        content_type: "text/javascript; charset=utf-8",
    },
    Embedded {
        path: "/app.js",
        body: include_bytes!("../ui/workshop/app.js"),
        content_type: "text/javascript; charset=utf-8",
    },
    Embedded {
        path: "/style.css",
        body: include_bytes!("../ui/workshop/style.css"),
        content_type: "text/css; charset=utf-8",
    },
    Embedded {
        path: "/icon.svg",
        body: include_bytes!("../ui/workshop/icon.svg"),
        content_type: "image/svg+xml",
    },
];

/// Strong ETags of the embedded files, computed once: the files cannot change while the
/// binary runs, so browsers revalidate with a cheap 304 rather than downloading again.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    EMBEDDED
        .iter()
        .map(|file| {
            let digest = Sha256::digest(file.body);
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            HeaderValue::from_str(&format!("\"{hex}\""))
                .unwrap_or(HeaderValue::from_static("\"0\""))
        })
        .collect()
});

/// Which Workshop the bridge shows at `/`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Assets {
    /// The user's own Workshop, served instead of the built-in page; `None` for the built-in.
    dir: Option<Arc<PathBuf>>,
}

impl Assets {
    /// Serves `dir` (when given) instead of the built-in page. A missing directory is only
    /// warned about: it may be a build output that appears later.
    pub(crate) fn new(dir: Option<PathBuf>) -> Self {
        let dir = dir.map(|d| expand_home(&d));
        if let Some(d) = &dir {
            if !d.join("index.html").is_file() {
                tracing::warn!(dir = %d.display(), "the workshop directory has no index.html (yet)");
            } else {
                tracing::info!(dir = %d.display(), "serving the workshop directory at /");
            }
        }
        Self {
            dir: dir.map(Arc::new),
        }
    }

    /// Answers a page request (anything that is not the hub or the API).
    pub(crate) async fn serve(&self, request: Request) -> Response {
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            let mut response =
                (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n").into_response();
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return secure(response, CSP_BUILT_IN);
        }
        match &self.dir {
            Some(dir) => serve_dir(dir, request).await,
            None => {
                let path = match request.uri().path() {
                    "/" => "/index.html",
                    other => other,
                };
                embedded(path, request.headers())
            }
        }
    }
}

/// `GET /client.js`: always the embedded client, whichever Workshop is served.
pub(crate) async fn client_js(request: Request) -> Response {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return secure(
            (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n").into_response(),
            CSP_BUILT_IN,
        );
    }
    embedded("/client.js", request.headers())
}

/// Every path the router does not know: the Workshop's files, or 404.
pub(crate) async fn fallback(State(app): State<AppState>, request: Request) -> Response {
    app.assets.serve(request).await
}

/// An embedded file, or 404; `304 Not Modified` when the browser has it already.
fn embedded(path: &str, request_headers: &HeaderMap) -> Response {
    let Some((index, file)) = EMBEDDED.iter().enumerate().find(|(_, f)| f.path == path) else {
        return not_found(CSP_BUILT_IN);
    };
    let Some(etag) = ETAGS.get(index).cloned() else {
        return not_found(CSP_BUILT_IN);
    };
    let fresh = request_headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == etag.to_str().unwrap_or_default()
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = Response::new(Body::from(file.body));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(file.content_type),
        );
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag);
    // Revalidate every time: the page and its scripts must match the running bridge.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure(response, CSP_BUILT_IN)
}

/// A file of the user's Workshop directory. Hidden files (`.env`, `.git/…`) and anything
/// whose real path is outside the directory are 404.
async fn serve_dir(dir: &Path, request: Request) -> Response {
    if has_hidden_segment(request.uri().path()) {
        return not_found(CSP_WORKSHOP_DIR);
    }
    let (request, _) = request.into_parts();
    match site::serve(dir, &request).await {
        Ok(mut response) => {
            if response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED {
                // Files carry an ETag and Last-Modified; make the browser check them on every
                // load so a rebuilt Workshop shows at once.
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            }
            secure(response, CSP_WORKSHOP_DIR)
        }
        Err(Miss::NotFound) => not_found(CSP_WORKSHOP_DIR),
        Err(Miss::Failed(e)) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot serve from the workshop directory");
            secure(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot read the workshop directory\n",
                )
                    .into_response(),
                CSP_WORKSHOP_DIR,
            )
        }
    }
}

/// Whether any segment of the raw path starts with a dot, literally or percent-encoded
/// (`..`, `%2e%2e`, `.git`, `.env`).
fn has_hidden_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        segment.starts_with('.')
            || segment
                .get(..3)
                .is_some_and(|s| s.eq_ignore_ascii_case("%2e"))
    })
}

fn not_found(csp: &'static str) -> Response {
    let mut response = (StatusCode::NOT_FOUND, "not found\n").into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    secure(response, csp)
}

/// Adds the headers every page response carries.
fn secure(mut response: Response, csp: &'static str) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::{Bridge, BridgeHandle, Config};

    async fn start(workshop_dir: Option<PathBuf>) -> (BridgeHandle, tempfile::TempDir) {
        let tmp = tempfile::tempdir().unwrap();
        let config = Config {
            port: 0,
            bind: "127.0.0.1".parse().unwrap(),
            state_file: tmp.path().join("state.yaml"),
            inbox_dir: tmp.path().join("inbox"),
            outbox_dir: tmp.path().join("outbox"),
            token: Some("5ecre7000000000000000000000000000000000000000000000000000000000a".into()),
            workshop_dir,
            ..Config::default()
        };
        (Bridge::start(config).await.unwrap(), tmp)
    }

    /// A raw HTTP/1.1 GET, so that paths reach the bridge exactly as written.
    async fn get(addr: SocketAddr, raw_path: &str, extra: &str) -> (u16, String, Vec<u8>) {
        exchange(addr, "GET", raw_path, extra).await
    }

    async fn exchange(
        addr: SocketAddr,
        method: &str,
        raw_path: &str,
        extra: &str,
    ) -> (u16, String, Vec<u8>) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "{method} {raw_path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut reply = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_to_end(&mut reply),
        )
        .await
        .unwrap()
        .unwrap();
        let split = reply.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&reply[..split]).to_ascii_lowercase();
        let status = head[9..12].parse().unwrap();
        (status, head, reply[split + 4..].to_vec())
    }

    fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(str::trim)
    }

    #[tokio::test]
    async fn built_in_page_and_assets_with_types_caching_and_security_headers() {
        let (bridge, _tmp) = start(None).await;
        let addr = bridge.local_addr();
        for (path, mime) in [
            ("/", "text/html"),
            ("/?token=abc", "text/html"),
            ("/client.js", "text/javascript"),
            ("/app.js", "text/javascript"),
            ("/style.css", "text/css"),
            ("/icon.svg", "image/svg+xml"),
        ] {
            let (status, head, body) = get(addr, path, "").await;
            assert_eq!(status, 200, "{path}");
            assert!(
                header(&head, "content-type").unwrap().starts_with(mime),
                "{path}"
            );
            assert_eq!(header(&head, "cache-control"), Some("no-cache"), "{path}");
            assert_eq!(header(&head, "referrer-policy"), Some("no-referrer"));
            assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));
            let csp = header(&head, "content-security-policy").unwrap();
            assert!(
                csp.contains("script-src 'self'") && csp.contains("connect-src 'self' ws: wss:")
            );
            assert!(!body.is_empty());
            let etag = header(&head, "etag").unwrap().to_owned();
            let (status, head, body) = get(addr, path, &format!("If-None-Match: {etag}\r\n")).await;
            assert_eq!(status, 304, "{path}");
            assert!(body.is_empty());
            assert_eq!(header(&head, "etag"), Some(etag.as_str()));
        }
        let (_, _, page) = get(addr, "/", "").await;
        assert!(String::from_utf8_lossy(&page).contains("/app.js"));
        assert_eq!(get(addr, "/nope.js", "").await.0, 404);
        // The API and the hub are untouched.
        assert_eq!(get(addr, "/healthz", "").await.0, 200);
        bridge.shutdown().await;
    }

    #[tokio::test]
    async fn workshop_dir_replaces_the_page_but_keeps_client_js_and_its_walls() {
        let root = tempfile::tempdir().unwrap();
        let site = root.path().join("site");
        std::fs::create_dir_all(site.join("assets")).unwrap();
        std::fs::write(site.join("index.html"), "<h1>my scene</h1>").unwrap();
        std::fs::write(site.join("assets/main.js"), "console.log(1)").unwrap();
        std::fs::write(site.join("client.js"), "not the real client").unwrap();
        std::fs::write(site.join(".env"), "SECRET=1").unwrap();
        std::fs::write(root.path().join("outside-secret.txt"), "secret").unwrap();
        let (bridge, _tmp) = start(Some(site)).await;
        let addr = bridge.local_addr();

        let (status, head, body) = get(addr, "/", "").await;
        assert_eq!(status, 200);
        assert_eq!(body, b"<h1>my scene</h1>");
        assert!(
            header(&head, "content-type")
                .unwrap()
                .starts_with("text/html")
        );
        assert_eq!(header(&head, "referrer-policy"), Some("no-referrer"));
        assert!(
            header(&head, "content-security-policy")
                .unwrap()
                .contains("script-src 'self'")
        );
        let (status, head, _) = get(addr, "/assets/main.js", "").await;
        assert_eq!(status, 200);
        assert!(
            header(&head, "content-type")
                .unwrap()
                .contains("javascript")
        );
        let (status, _, body) = get(addr, "/client.js", "").await;
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&body).contains("connectBridge"));
        // The built-in page's own files are not mixed in.
        assert_eq!(get(addr, "/style.css", "").await.0, 404);
        for evil in [
            "/../outside-secret.txt",
            "/..%2foutside-secret.txt",
            "/%2e%2e/outside-secret.txt",
            "/%2E%2E%2Foutside-secret.txt",
            "/assets/../../outside-secret.txt",
            "/assets/%2e%2e/%2e%2e/outside-secret.txt",
            "/.env",
            "/%2eenv",
            "//etc/passwd",
            "/..%5c..%5coutside-secret.txt",
        ] {
            let (status, _, body) = get(addr, evil, "").await;
            assert_eq!(status, 404, "{evil}");
            assert!(!String::from_utf8_lossy(&body).contains("secret"), "{evil}");
        }
        bridge.shutdown().await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn workshop_dir_files_revalidate_seek_answer_head_and_redirect_directories() {
        let root = tempfile::tempdir().unwrap();
        let site = root.path().join("site");
        std::fs::create_dir_all(site.join("levels")).unwrap();
        std::fs::write(site.join("index.html"), "<h1>my scene</h1>").unwrap();
        std::fs::write(site.join("levels/index.html"), "<h1>level</h1>").unwrap();
        std::fs::write(site.join("clip.mp4"), b"0123456789").unwrap();
        // The folder given may itself be a link (to a build output, say).
        let link = root.path().join("current");
        std::os::unix::fs::symlink(&site, &link).unwrap();
        let (bridge, _tmp) = start(Some(link)).await;
        let addr = bridge.local_addr();

        let (status, head, body) = get(addr, "/clip.mp4", "").await;
        assert_eq!((status, body.as_slice()), (200, &b"0123456789"[..]));
        assert_eq!(header(&head, "content-type"), Some("video/mp4"));
        assert_eq!(header(&head, "content-length"), Some("10"));
        assert_eq!(header(&head, "accept-ranges"), Some("bytes"));
        assert_eq!(header(&head, "cache-control"), Some("no-cache"));
        let etag = header(&head, "etag").unwrap().to_owned();
        // (The helper lowercases the head; the date is compared in its own case.)
        let mtime = std::fs::metadata(site.join("clip.mp4"))
            .unwrap()
            .modified()
            .unwrap();
        let modified = httpdate::fmt_http_date(mtime);
        assert_eq!(
            header(&head, "last-modified"),
            Some(modified.to_ascii_lowercase().as_str())
        );

        let (status, head, body) =
            get(addr, "/clip.mp4", &format!("If-None-Match: {etag}\r\n")).await;
        assert_eq!((status, body.len()), (304, 0));
        assert_eq!(header(&head, "etag"), Some(etag.as_str()));
        let since = format!("If-Modified-Since: {modified}\r\n");
        assert_eq!(get(addr, "/clip.mp4", &since).await.0, 304);
        let other = "If-None-Match: \"something-else\"\r\n";
        assert_eq!(get(addr, "/clip.mp4", other).await.0, 200);

        let (status, head, body) = get(addr, "/clip.mp4", "Range: bytes=2-4\r\n").await;
        assert_eq!((status, body.as_slice()), (206, &b"234"[..]));
        assert_eq!(header(&head, "content-range"), Some("bytes 2-4/10"));
        let (status, _, body) = get(addr, "/clip.mp4", "Range: bytes=-3\r\n").await;
        assert_eq!((status, body.as_slice()), (206, &b"789"[..]));
        let (status, head, _) = get(addr, "/clip.mp4", "Range: bytes=10-\r\n").await;
        assert_eq!(status, 416);
        assert_eq!(header(&head, "content-range"), Some("bytes */10"));
        // A range of an older version of the file is not applied.
        let stale = "Range: bytes=2-4\r\nIf-Range: \"stale\"\r\n";
        assert_eq!(get(addr, "/clip.mp4", stale).await.0, 200);

        let (status, head, body) = exchange(addr, "HEAD", "/clip.mp4", "").await;
        assert_eq!((status, body.len()), (200, 0));
        assert_eq!(header(&head, "content-length"), Some("10"));
        assert_eq!(header(&head, "etag"), Some(etag.as_str()));

        let (status, head, _) = get(addr, "/levels?x=1", "").await;
        assert_eq!(status, 307);
        assert_eq!(header(&head, "location"), Some("/levels/?x=1"));
        let (status, _, body) = get(addr, "/levels/", "").await;
        assert_eq!((status, body.as_slice()), (200, &b"<h1>level</h1>"[..]));
        assert_eq!(get(addr, "/clip.mp4/", "").await.0, 404);
        bridge.shutdown().await;
    }

    #[test]
    fn hidden_segments_are_recognised_in_any_spelling() {
        assert!(has_hidden_segment("/../x"));
        assert!(has_hidden_segment("/a/%2E%2e/x"));
        assert!(has_hidden_segment("/.git/config"));
        assert!(!has_hidden_segment("/assets/app.3f2a.js"));
        assert!(!has_hidden_segment("/"));
    }
}
