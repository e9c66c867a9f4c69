//! The user's own Workshop folder (`--workshop-dir`) over HTTP: regular files whose real path
//! is inside the folder, and nothing else.
//!
//! A symlink in the folder may lead anywhere (to `/etc/passwd`, say), and the folder is served
//! to the whole network without a token. So each requested path is resolved to its real path,
//! all links followed, and refused unless that lies inside the folder's own real path; the
//! file is then opened with [`crate::safe_open`], so a named pipe or device in the folder never
//! holds a request up. Responses carry what browsers use to revalidate and seek: an ETag,
//! Last-Modified, `304 Not Modified`, and single byte ranges (Safari plays media only so).

use std::fs::File;
use std::io::{self, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use httpdate::HttpDate;
use percent_encoding::percent_decode_str;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::safe_open::{self, Links, Refusal};

/// How much of a file is read at a time while it is sent.
const CHUNK_BYTES: usize = 64 * 1024;

/// Why a request was not answered with a file.
#[derive(Debug)]
pub(crate) enum Miss {
    /// Nothing to serve there: no such file, a hidden or outside one, a pipe or a device.
    NotFound,
    /// The folder could not be read.
    Failed(io::Error),
}

/// What a path resolved to.
enum Found {
    /// A file inside the folder, open, and the name it was asked by (for its type).
    File {
        file: Box<safe_open::RegularFile>,
        name: PathBuf,
    },
    /// A directory asked for without the trailing slash its page's relative links need.
    DirectoryWithoutSlash,
}

/// Answers a GET or HEAD for `request`'s path from the folder `root`.
pub(crate) async fn serve(root: &Path, request: &Parts) -> Result<Response, Miss> {
    let uri_path = request.uri.path();
    let relative = relative_path(uri_path).ok_or(Miss::NotFound)?;
    let wants_directory = uri_path.ends_with('/');
    let root = root.to_owned();
    let found = tokio::task::spawn_blocking(move || resolve(&root, relative, wants_directory))
        .await
        .map_err(|e| Miss::Failed(io::Error::other(e)))??;
    match found {
        Found::File { file, name } => respond(*file, &name, request).await,
        Found::DirectoryWithoutSlash => redirect_with_slash(&request.uri),
    }
}

/// The path below the folder that `uri_path` names: each segment percent-decoded and one
/// plain name, so nothing climbs out (`..`, `%2f`, a drive on Windows) or reaches a hidden file.
fn relative_path(uri_path: &str) -> Option<PathBuf> {
    let mut path = PathBuf::new();
    for segment in uri_path.split('/').filter(|s| !s.is_empty()) {
        let decoded = percent_decode_str(segment).decode_utf8().ok()?;
        if decoded.starts_with('.') || decoded.contains('\0') {
            return None;
        }
        let mut parts = Path::new(&*decoded).components();
        match (parts.next(), parts.next()) {
            (Some(Component::Normal(name)), None) => path.push(name),
            _ => return None,
        }
    }
    Some(path)
}

/// Finds and opens the file `relative` names in `root`, if its real path is inside `root`'s.
fn resolve(root: &Path, relative: PathBuf, wants_directory: bool) -> Result<Found, Miss> {
    // Resolved per request: the folder may be a build output made, or remade, after start.
    let root = std::fs::canonicalize(root).map_err(miss)?;
    let mut real = inside(&root, &root.join(&relative))?;
    let mut name = relative;
    if std::fs::metadata(&real).map_err(miss)?.is_dir() {
        if !wants_directory && !name.as_os_str().is_empty() {
            return Ok(Found::DirectoryWithoutSlash);
        }
        // index.html may itself be a link out of the folder: resolved and checked the same.
        real = inside(&root, &real.join("index.html"))?;
        name.push("index.html");
    } else if wants_directory {
        return Err(Miss::NotFound);
    }
    // The real path has no links left, so a link that appears there now is refused.
    let file =
        safe_open::open_regular(&real, Links::Refuse, u64::MAX).map_err(
            |refusal| match refusal {
                Refusal::Open(e) | Refusal::Read(e) => miss(e),
                _ => Miss::NotFound,
            },
        )?;
    if !opened_inside(&file.file, &root) {
        tracing::warn!(path = %name.display(), "not serving a file that moved out of the workshop directory while it was opened");
        return Err(Miss::NotFound);
    }
    Ok(Found::File {
        file: Box::new(file),
        name,
    })
}

/// The real path of `path`, if it is inside `root` (a real path itself).
fn inside(root: &Path, path: &Path) -> Result<PathBuf, Miss> {
    let real = std::fs::canonicalize(path).map_err(miss)?;
    if real.starts_with(root) {
        Ok(real)
    } else {
        tracing::warn!(path = %path.display(), real = %real.display(), "not serving a file whose real path is outside the workshop directory");
        Err(Miss::NotFound)
    }
}

/// Whether the open file is really inside `root`. A directory on the way that was swapped
/// for a symlink after its real path was checked would lead elsewhere; the open handle's own
/// path says where the file is. Linux tells through `/proc`; elsewhere the check before the
/// open stands.
#[cfg(target_os = "linux")]
fn opened_inside(file: &File, root: &Path) -> bool {
    use std::os::fd::AsRawFd;
    match std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
        Ok(path) => path.starts_with(root),
        // No /proc (a sandbox): the check before the open stands.
        Err(_) => true,
    }
}

#[cfg(not(target_os = "linux"))]
fn opened_inside(_file: &File, _root: &Path) -> bool {
    true
}

/// Errors that mean "nothing to serve here" are 404; the rest are the folder's trouble.
fn miss(error: io::Error) -> Miss {
    match error.kind() {
        io::ErrorKind::NotFound
        | io::ErrorKind::NotADirectory
        | io::ErrorKind::PermissionDenied
        | io::ErrorKind::InvalidInput => Miss::NotFound,
        // A symlink loop in the folder.
        #[cfg(unix)]
        _ if error.raw_os_error() == Some(libc::ELOOP) => Miss::NotFound,
        _ => Miss::Failed(error),
    }
}

/// `307` to the same path with a slash, as the page's relative links expect.
fn redirect_with_slash(uri: &Uri) -> Result<Response, Miss> {
    let location = match uri.query() {
        Some(query) => format!("{}/?{query}", uri.path()),
        None => format!("{}/", uri.path()),
    };
    let location = HeaderValue::from_str(&location).map_err(|_| Miss::NotFound)?;
    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// The file, a part of it, or `304`, with its type and validators.
async fn respond(
    opened: safe_open::RegularFile,
    name: &Path,
    request: &Parts,
) -> Result<Response, Miss> {
    let len = opened.meta.len();
    let modified = opened.meta.modified().ok();
    let validators = Validators::new(len, modified);
    let headers = &request.headers;
    let mut response = if validators.not_modified(headers) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let range = match headers.get(header::RANGE) {
            Some(range) if validators.range_applies(headers) => parse_range(range, len),
            _ => None,
        };
        let head = request.method == Method::HEAD;
        let mut response = match range {
            None => body(opened.file, 0, len, head).await?,
            Some(Ok((start, end))) => {
                let mut response = body(opened.file, start, end - start + 1, head).await?;
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                insert(
                    &mut response,
                    header::CONTENT_RANGE,
                    format!("bytes {start}-{end}/{len}"),
                );
                response
            }
            Some(Err(Unsatisfiable)) => {
                let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
                insert(
                    &mut response,
                    header::CONTENT_RANGE,
                    format!("bytes */{len}"),
                );
                return Ok(response);
            }
        };
        let mime = mime_guess::from_path(name)
            .first_raw()
            .unwrap_or("application/octet-stream");
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        response
    };
    validators.insert_into(response.headers_mut());
    Ok(response)
}

/// `len` bytes of `file` from `start`, streamed (a Workshop's models and media can be large);
/// only the length for HEAD.
async fn body(file: File, start: u64, len: u64, head: bool) -> Result<Response, Miss> {
    let body = if head {
        Body::empty()
    } else {
        let mut file = tokio::fs::File::from_std(file);
        if start > 0 {
            file.seek(SeekFrom::Start(start))
                .await
                .map_err(Miss::Failed)?;
        }
        Body::from_stream(ReaderStream::with_capacity(file.take(len), CHUNK_BYTES))
    };
    let mut response = Response::new(body);
    insert(&mut response, header::CONTENT_LENGTH, len.to_string());
    Ok(response)
}

fn insert(response: &mut Response, name: header::HeaderName, value: String) {
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(name, value);
    }
}

/// A file's ETag (from its size and modification time, so a rebuilt file gets a new one) and
/// Last-Modified.
struct Validators {
    etag: Option<String>,
    modified: Option<HttpDate>,
}

impl Validators {
    fn new(len: u64, modified: Option<SystemTime>) -> Self {
        let since_epoch = modified.and_then(|m| m.duration_since(UNIX_EPOCH).ok());
        Self {
            etag: since_epoch
                .map(|d| format!("\"{:x}.{:08x}-{len:x}\"", d.as_secs(), d.subsec_nanos())),
            modified: modified.map(HttpDate::from),
        }
    }

    /// Whether the browser's copy is current: `If-None-Match` (weakly compared) decides when
    /// sent, else `If-Modified-Since`.
    fn not_modified(&self, headers: &HeaderMap) -> bool {
        if let Some(tags) = headers.get(header::IF_NONE_MATCH) {
            let Some(etag) = &self.etag else {
                return false;
            };
            let tags = tags.to_str().unwrap_or_default();
            return tags.trim() == "*"
                || tags
                    .split(',')
                    .any(|tag| tag.trim().trim_start_matches("W/") == etag);
        }
        match (
            self.since(headers, header::IF_MODIFIED_SINCE),
            self.modified,
        ) {
            (Some(since), Some(modified)) => modified <= since,
            _ => false,
        }
    }

    /// Whether a `Range` is for this version of the file: `If-Range` names it by its ETag
    /// (strongly compared) or its exact date, or is absent.
    fn range_applies(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::IF_RANGE) else {
            return true;
        };
        let value = value.to_str().unwrap_or_default().trim();
        if value.starts_with('"') {
            return self.etag.as_deref() == Some(value);
        }
        self.modified.is_some() && self.since(headers, header::IF_RANGE) == self.modified
    }

    fn since(&self, headers: &HeaderMap, name: header::HeaderName) -> Option<HttpDate> {
        headers.get(name)?.to_str().ok()?.trim().parse().ok()
    }

    fn insert_into(&self, headers: &mut HeaderMap) {
        if let Some(etag) = self
            .etag
            .as_deref()
            .and_then(|e| HeaderValue::from_str(e).ok())
        {
            headers.insert(header::ETAG, etag);
        }
        if let Some(modified) = self
            .modified
            .and_then(|m| HeaderValue::from_str(&m.to_string()).ok())
        {
            headers.insert(header::LAST_MODIFIED, modified);
        }
    }
}

/// A `Range` that asks for nothing inside the file: answered with 416.
#[derive(Debug, PartialEq, Eq)]
struct Unsatisfiable;

/// The first and last byte a `Range: bytes=…` header asks for in a file of `len` bytes.
/// `None` (send the whole file, as HTTP allows) for anything but one well-formed byte range:
/// several ranges would need a multipart answer, which Workshop pages have no use for.
fn parse_range(value: &HeaderValue, len: u64) -> Option<Result<(u64, u64), Unsatisfiable>> {
    let value = value.to_str().ok()?.trim();
    let (unit, spec) = value.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return None;
    }
    let (first, last) = spec.trim().split_once('-')?;
    let number = |s: &str| s.trim().parse::<u64>().ok();
    let range = match (first.trim().is_empty(), last.trim().is_empty()) {
        // The last N bytes.
        (true, false) => {
            let suffix = number(last)?;
            if suffix == 0 || len == 0 {
                return Some(Err(Unsatisfiable));
            }
            (len - suffix.min(len), len - 1)
        }
        // From a byte to the end.
        (false, true) => (number(first)?, len.saturating_sub(1)),
        (false, false) => {
            let (start, end) = (number(first)?, number(last)?);
            if end < start {
                return None;
            }
            (start, end.min(len.saturating_sub(1)))
        }
        (true, true) => return None,
    };
    if range.0 >= len {
        return Some(Err(Unsatisfiable));
    }
    Some(Ok(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_paths_become_plain_names_below_the_folder() {
        assert_eq!(relative_path("/"), Some(PathBuf::new()));
        assert_eq!(
            relative_path("/assets/app%20one.js"),
            Some(PathBuf::from("assets/app one.js"))
        );
        assert_eq!(
            relative_path("//etc/passwd"),
            Some(PathBuf::from("etc/passwd"))
        );
        for refused in [
            "/../x",
            "/a/%2e%2e/x",
            "/a%2f..%2f..%2fx",
            "/.env",
            "/a/%2Egit",
            "/a%00b",
        ] {
            assert_eq!(relative_path(refused), None, "{refused}");
        }
    }

    #[test]
    fn one_byte_range_is_honoured_and_anything_else_is_the_whole_file_or_416() {
        let range = |v: &str| parse_range(&HeaderValue::from_str(v).unwrap(), 100);
        assert_eq!(range("bytes=0-9"), Some(Ok((0, 9))));
        assert_eq!(range("bytes=90-"), Some(Ok((90, 99))));
        assert_eq!(range("bytes=-10"), Some(Ok((90, 99))));
        assert_eq!(range("bytes=-500"), Some(Ok((0, 99))));
        assert_eq!(range("bytes=50-500"), Some(Ok((50, 99))));
        assert_eq!(range("bytes=100-"), Some(Err(Unsatisfiable)));
        assert_eq!(range("bytes=-0"), Some(Err(Unsatisfiable)));
        for ignored in [
            "bytes=0-1,5-6",
            "lines=1-2",
            "bytes=9-1",
            "bytes=-",
            "bytes=x-1",
        ] {
            assert_eq!(range(ignored), None, "{ignored}");
        }
        assert_eq!(
            parse_range(&HeaderValue::from_static("bytes=0-"), 0),
            Some(Err(Unsatisfiable))
        );
    }
}
