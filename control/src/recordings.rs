//! Recordings on disk and their HTTP API, on the API port:
//! - `GET /recordings`: a JSON array of `{name, session, kind, codec, bytes, duration, state,
//!   dropped}` for every `.mjr` file in the record dir (`state`: `recording`, `done`, `failed`,
//!   or `incomplete` for a `.mjr.tmp` left by a crash; `session` and `dropped` are known only for
//!   recordings made by this process);
//! - `GET /recordings/NAME`: the file, with single-range `Range: bytes=a-b` support (206 and
//!   `Content-Range`, 416 when unsatisfiable). NAME is a listed name (`X-audio.mjr`, served from
//!   `X-audio.mjr.tmp` while it is being recorded); names with `/` or `..` are 400, others 404.
//!
//! Both require `Authorization: Bearer SECRET` when an API secret is set (401 otherwise).
//!
//! Also the naming rules of `recorder_action`: a recording is named by a flat base name inside
//! the record dir, its streams are `BASE-audio.mjr`, `BASE-video.mjr` and `BASE-data.mjr`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use sluice_dataplane::api::RecordingStats;
use sluice_dataplane::record::mjr;

/// Bytes read from disk per chunk of a download.
const CHUNK: usize = 64 * 1024;
/// Longest base name `recorder_action` accepts.
const MAX_NAME: usize = 160;

/// What this process knows about a recording it made.
#[derive(Clone, Debug)]
pub struct Known {
    pub session: String,
    /// `audio`, `video` or `data`.
    pub kind: &'static str,
    pub codec: String,
    pub stats: Arc<RecordingStats>,
}

/// The record dir and the recordings made by this process, shared by the session manager
/// (which adds to it) and the HTTP handlers (which read it). Control plane only.
#[derive(Debug)]
pub struct RecordIndex {
    dir: PathBuf,
    known: Mutex<HashMap<String, Known>>,
}

impl RecordIndex {
    pub fn new(dir: PathBuf) -> Self {
        RecordIndex {
            dir,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The record dir as configured.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the record dir if needed; returns its canonical path.
    pub fn ensure_dir(&self) -> io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        self.dir.canonicalize()
    }

    /// Remembers a recording by its file name (`BASE-KIND.mjr`).
    pub fn insert(&self, file_name: String, known: Known) {
        self.lock().insert(file_name, known);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        // Each critical section is one insert or one clone: a poisoned map is still whole.
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `GET /recordings` list, sorted by name (reads the folder: call off the runtime).
    pub fn list(&self) -> Vec<Value> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut files: Vec<(String, bool, PathBuf, u64)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let file = e.file_name().into_string().ok()?;
                let meta = e.metadata().ok().filter(|m| m.is_file())?;
                let (name, tmp) = match file.strip_suffix(".tmp") {
                    Some(n) => (n.to_owned(), true),
                    None => (file, false),
                };
                name.ends_with(".mjr")
                    .then(|| (name, tmp, e.path(), meta.len()))
            })
            .collect();
        files.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        // A finished file wins over a leftover `.tmp` of the same name.
        files.dedup_by(|later, first| later.0 == first.0);
        let known = self.lock().clone();
        files
            .into_iter()
            .map(|(name, tmp, path, bytes)| match known.get(&name) {
                Some(k) => {
                    let s = k.stats.snapshot();
                    json!({
                        "name": name, "session": k.session, "kind": k.kind,
                        "codec": k.codec, "bytes": bytes, "duration": s.duration_ms as f64 / 1000.0,
                        "state": s.state.as_str(), "dropped": s.dropped,
                    })
                }
                None => unknown_entry(&name, tmp, &path, bytes),
            })
            .collect()
    }
}

/// A file this process did not make: what its header and frames say.
fn unknown_entry(name: &str, tmp: bool, path: &Path, bytes: u64) -> Value {
    let summary = File::open(path)
        .ok()
        .and_then(|f| mjr::scan(BufReader::new(f)).ok());
    let info: Value = summary
        .as_ref()
        .and_then(|s| serde_json::from_str(&s.info_json).ok())
        .unwrap_or(Value::Null);
    let kind = match info["t"].as_str() {
        Some("a") => Value::from("audio"),
        Some("v") => Value::from("video"),
        Some("d") => Value::from("data"),
        _ => Value::Null,
    };
    json!({
        "name": name, "session": null, "kind": kind, "codec": info["c"].clone(), "bytes": bytes,
        "duration": summary.map_or(0.0, |s| f64::from(s.last_offset_ms) / 1000.0),
        "state": if tmp { "incomplete" } else { "done" },
    })
}

/// A recording name: `[A-Za-z0-9._-]`, not starting with a dot, so it can never leave the
/// record dir or name a hidden file.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME + 16
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The base name a `recorder_action` `uri` asks for. `file://NAME` is relative to the record
/// dir; `file:///ABS/PATH/NAME` must be directly inside it (as configured or canonical). A
/// trailing `.mjr` is dropped. Anything with `..`, a sub-folder, or outside the dir is refused.
pub fn base_from_uri(uri: &str, dir: &Path, canonical: &Path) -> Result<String, String> {
    let path = uri
        .strip_prefix("file://")
        .ok_or_else(|| format!("uri '{uri}' must start with file://"))?;
    let path = Path::new(path);
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(format!("uri '{uri}' must not contain '.' or '..'"));
    }
    let rel = if path.is_absolute() {
        let absolute_dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
        [canonical, absolute_dir.as_path()]
            .iter()
            .find_map(|d| path.strip_prefix(d).ok())
            .ok_or_else(|| {
                format!(
                    "uri '{uri}' is outside the record dir {}",
                    canonical.display()
                )
            })?
    } else {
        path
    };
    let mut parts = rel.components();
    let name = match (parts.next(), parts.next()) {
        (Some(Component::Normal(n)), None) => n.to_str().unwrap_or_default(),
        _ => {
            return Err(format!(
                "uri '{uri}' must name a file directly inside the record dir"
            ));
        }
    };
    let name = name.strip_suffix(".mjr").unwrap_or(name);
    if !valid_name(name) || name.len() > MAX_NAME {
        return Err(format!(
            "recording name '{name}' must be 1-{MAX_NAME} characters of A-Z a-z 0-9 . _ - \
             and not start with a dot"
        ));
    }
    Ok(name.to_owned())
}

/// Janus's codec name (what `janus-pp-rec` expects in the info header) for an SDP encoding.
pub fn janus_codec(encoding: &str, clock_rate: u32) -> String {
    let name = encoding.to_ascii_lowercase();
    match name.as_str() {
        "l16" if clock_rate == 48000 => "l16-48".to_owned(),
        _ => name,
    }
}

// ----- HTTP -----

#[derive(Clone)]
pub struct HttpState {
    pub index: Arc<RecordIndex>,
    pub secret: Option<Arc<str>>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/recordings", get(list))
        .route("/recordings/", get(list))
        .route("/recordings/{*name}", get(download))
        .with_state(state)
}

fn error(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(json!({ "error": text }))).into_response()
}

/// `Authorization: Bearer SECRET` when a secret is set (see [`crate::auth`]); the 401
/// response otherwise.
fn refused(state: &HttpState, headers: &HeaderMap) -> Option<Response> {
    if crate::auth::bearer_ok(state.secret.as_deref(), headers) {
        return None;
    }
    let mut r = error(StatusCode::UNAUTHORIZED, "unauthorized");
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(r)
}

async fn list(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&state, &headers) {
        return r;
    }
    let index = Arc::clone(&state.index);
    match tokio::task::spawn_blocking(move || index.list()).await {
        Ok(list) => axum::Json(Value::Array(list)).into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "listing failed"),
    }
}

/// Which bytes of a file of `size` bytes a `Range` header asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// No (usable) range: the whole file.
    Full,
    /// `first..=last`.
    Part(u64, u64),
    Unsatisfiable,
}

/// RFC 9110 §14.1.2, one range only (a list of ranges is answered with the whole file).
pub fn parse_range(value: Option<&str>, size: u64) -> ByteRange {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    let num = |s: &str| s.trim().parse::<u64>().ok();
    let (first, last) = match (a.trim().is_empty(), num(a), num(b)) {
        // `-N`: the last N bytes.
        (true, _, Some(n)) if n > 0 => (size.saturating_sub(n), size.saturating_sub(1)),
        (true, _, _) => return ByteRange::Unsatisfiable,
        (false, Some(first), None) if b.trim().is_empty() => (first, size.saturating_sub(1)),
        (false, Some(first), Some(last)) if last >= first => {
            (first, last.min(size.saturating_sub(1)))
        }
        _ => return ByteRange::Full,
    };
    if size == 0 || first >= size {
        ByteRange::Unsatisfiable
    } else {
        ByteRange::Part(first, last)
    }
}

/// The file behind a listed name: `NAME` itself, else `NAME.tmp` while it is being recorded.
fn locate(dir: &Path, name: &str) -> Option<PathBuf> {
    let mut candidates = vec![dir.join(name)];
    if name.ends_with(".mjr") {
        candidates.push(dir.join(format!("{name}.tmp")));
    } else if !name.ends_with(".mjr.tmp") {
        return None;
    }
    candidates.into_iter().find(|p| p.is_file())
}

async fn download(
    State(state): State<HttpState>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refused(&state, &headers) {
        return r;
    }
    if !valid_name(&name) {
        return error(StatusCode::BAD_REQUEST, "invalid recording name");
    }
    let dir = state.index.dir().to_owned();
    let lookup = name.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let path = locate(&dir, &lookup)?;
        let file = File::open(path).ok()?;
        let size = file.metadata().ok()?.len();
        Some((file, size))
    })
    .await;
    let Ok(Some((file, size))) = opened else {
        return error(StatusCode::NOT_FOUND, "no such recording");
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, first, len) = match parse_range(range, size) {
        ByteRange::Full => (StatusCode::OK, 0, size),
        ByteRange::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        ByteRange::Unsatisfiable => {
            let mut r = error(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let mut response = Response::new(file_body(file, first, len));
    *response.status_mut() = status;
    let h = response.headers_mut();
    let mut set = |k: header::HeaderName, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    set(header::CONTENT_TYPE, "application/octet-stream".into());
    set(header::CONTENT_LENGTH, len.to_string());
    set(header::ACCEPT_RANGES, "bytes".into());
    set(
        header::CONTENT_DISPOSITION,
        format!("attachment; filename=\"{name}\""),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        set(
            header::CONTENT_RANGE,
            format!("bytes {first}-{}/{size}", first + len - 1),
        );
    }
    response
}

/// `len` bytes of `file` from `first`, read in chunks off the runtime.
fn file_body(file: File, first: u64, len: u64) -> Body {
    let stream =
        futures_util::stream::unfold((Some(file), first, len), |(file, pos, left)| async move {
            let mut file = file?;
            if left == 0 {
                return None;
            }
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; CHUNK.min(left as usize)];
                let n = file
                    .seek(SeekFrom::Start(pos))
                    .and_then(|_| file.read(&mut buf));
                (file, buf, n)
            })
            .await;
            match read {
                Ok((file, mut buf, Ok(n))) if n > 0 => {
                    buf.truncate(n);
                    let next = (Some(file), pos + n as u64, left - n as u64);
                    Some((Ok::<_, io::Error>(Bytes::from(buf)), next))
                }
                Ok((_, _, Err(e))) => Some((Err(e), (None, pos, 0))),
                _ => Some((
                    Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                    (None, pos, 0),
                )),
            }
        });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_resolve_inside_the_record_dir_only() {
        let dir = Path::new("rec");
        let canon = Path::new("/srv/rec");
        let ok = |u: &str| base_from_uri(u, dir, canon);
        assert_eq!(ok("file://call-1").as_deref(), Ok("call-1"));
        assert_eq!(ok("file://call-1.mjr").as_deref(), Ok("call-1"));
        assert_eq!(ok("file:///srv/rec/x_y.z").as_deref(), Ok("x_y.z"));
        for bad in [
            "file://../x",
            "file:///srv/rec/../etc/passwd",
            "file:///etc/passwd",
            "file:///srv/recx/a",
            "file://a/b",
            "file:///srv/rec",
            "file://",
            "file://.hidden",
            "file://a b",
            "http://x/y",
            "/srv/rec/a",
        ] {
            assert!(ok(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn download_names_cannot_escape() {
        assert!(valid_name("abc-audio.mjr"));
        for bad in ["", "..", "../x", "a/b", ".mjr", "a..b", "a\\b", "é"] {
            assert!(!valid_name(bad), "{bad}");
        }
        let dir = Path::new("/nonexistent");
        assert_eq!(locate(dir, "x.txt"), None);
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        use ByteRange::*;
        let r = |v: &str| parse_range(Some(v), 100);
        assert_eq!(parse_range(None, 100), Full);
        assert_eq!(r("bytes=0-9"), Part(0, 9));
        assert_eq!(r("bytes=90-"), Part(90, 99));
        assert_eq!(r("bytes=90-500"), Part(90, 99));
        assert_eq!(r("bytes=-10"), Part(90, 99));
        assert_eq!(r("bytes=-500"), Part(0, 99));
        assert_eq!(r("bytes=100-"), Unsatisfiable);
        assert_eq!(r("bytes=-0"), Unsatisfiable);
        assert_eq!(r("bytes=0-1,5-6"), Full);
        assert_eq!(r("items=0-1"), Full);
        assert_eq!(r("bytes=5-1"), Full);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
    }

    #[test]
    fn codec_names_are_janus_names() {
        assert_eq!(janus_codec("PCMU", 8000), "pcmu");
        assert_eq!(janus_codec("opus", 48000), "opus");
        assert_eq!(janus_codec("VP8", 90000), "vp8");
        assert_eq!(janus_codec("L16", 48000), "l16-48");
    }

    #[test]
    fn a_missing_dir_lists_nothing() {
        let idx = RecordIndex::new(PathBuf::from("/nonexistent/sluice-recordings"));
        assert!(idx.list().is_empty());
    }
}
