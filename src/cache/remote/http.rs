//! The Bazel HTTP remote cache protocol: `GET`, `PUT` and `HEAD` of `/ac/KEY` (an encoded
//! `ActionResult`) and `/cas/HASH` (a blob named by the SHA-256 of its bytes), under the URL's
//! path. nginx with WebDAV, bazel-remote and any server of that protocol serve it.
//!
//! Bodies stream both ways: a blob is read from its file as it is sent, and a download is
//! handed to the caller as a reader, so memory stays bounded whatever the blob's size. A 404
//! is a miss; a 429 or 503 is the server asking to come back later (after its `Retry-After`,
//! in seconds, when it names one), waited out within `--remote-timeout` with fewer requests in
//! flight ([`super::backoff`]); every other failure is the server's, for [`super::Remote`] to
//! count.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

use super::backoff::{self, Window};
use super::{reapi, BlobReader, Body, RemoteError, RemoteSetupError, Store};

/// Action entries are small; a bigger one is the server's mistake.
const MAX_ACTION_BYTES: u64 = 64 << 20;

pub struct HttpStore {
    agent: ureq::Agent,
    /// The URL without a trailing slash: `/ac/...` and `/cas/...` go below it.
    base: String,
    /// Sent with every request to `base`, never shown.
    headers: Vec<(String, String)>,
    timeout: Duration,
    /// How many requests may be in flight at once; narrowed while the server pushes back.
    window: Arc<Window>,
    pushbacks: AtomicU64,
}

/// How to reach the server.
pub struct HttpOptions<'a> {
    pub url: &'a str,
    pub headers: Vec<(String, String)>,
    pub ca_file: Option<&'a Path>,
    /// A PEM file with the client certificate chain, and the key if `client_key` is not given.
    pub client_cert: Option<&'a Path>,
    pub client_key: Option<&'a Path>,
    /// Connecting, and each wait for the server's next bytes, give up after this long.
    pub timeout: Duration,
}

impl HttpStore {
    pub fn new(o: HttpOptions<'_>) -> Result<HttpStore, RemoteSetupError> {
        let tls = TlsConfig::builder()
            .root_certs(root_certs(o.ca_file)?)
            .client_cert(client_cert(o.client_cert, o.client_key)?)
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .timeout_connect(Some(o.timeout))
            .timeout_recv_response(Some(o.timeout))
            .timeout_per_read(Some(o.timeout))
            .timeout_per_write(Some(o.timeout))
            // Blobs are compared with their digests byte for byte: nothing may decode them.
            .accept_encoding(ureq::config::AutoHeaderValue::None)
            // A redirect elsewhere would carry the headers to a host nobody named.
            .max_redirects(0)
            // Every step in flight (twice `-j`) and each uploader keeps its connection: with
            // ureq's default of 3 idle ones, a restore of many small steps reconnected often.
            .max_idle_connections_per_host(32)
            .max_idle_connections(32)
            // Statuses are read here: a 429's or 503's `Retry-After` is wanted.
            .http_status_as_error(false)
            .build()
            .into();
        Ok(HttpStore {
            agent,
            base: o.url.trim_end_matches('/').to_string(),
            headers: o.headers,
            timeout: o.timeout,
            window: Window::new(),
            pushbacks: AtomicU64::new(0),
        })
    }

    fn url(&self, kind: &str, name: &str) -> String {
        format!("{}/{kind}/{name}", self.base)
    }

    fn with_headers<B>(&self, mut req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req
    }

    /// `attempt` made again while the server pushes back, within the budget and the window.
    fn retry<T>(&self, attempt: impl FnMut() -> Result<T, RemoteError>) -> Result<T, RemoteError> {
        backoff::retry(self.timeout, &self.window, &self.pushbacks, attempt)
    }

    /// GET: the response, or `None` for a 404.
    fn get(&self, kind: &str, name: &str) -> Result<Option<ureq::http::Response<ureq::Body>>, RemoteError> {
        self.retry(|| checked(self.with_headers(self.agent.get(&self.url(kind, name))).call()))
    }

    fn put(
        &self,
        kind: &str,
        name: &str,
        size: u64,
        body: Body<'_>,
        blob: &reapi::Digest,
    ) -> Result<(), RemoteError> {
        self.retry(|| {
            let req = self.with_headers(self.agent.put(&self.url(kind, name))).header("Content-Length", size);
            let mut reader = body.open(blob)?;
            match checked(req.send(ureq::SendBody::from_reader(&mut reader))) {
                Ok(Some(mut resp)) => {
                    // Read the (short) answer so the connection can be used again.
                    let _ = resp.body_mut().with_config().limit(1 << 16).read_to_vec();
                    Ok(())
                }
                Ok(None) => Err(RemoteError::Status(404)),
                Err(e) => Err(e),
            }
        })
    }
}

/// A response by its status: a success, `None` for a 404, else the failure (429 and 503 as
/// [`RemoteError::Busy`], with the `Retry-After` seconds when given).
fn checked(
    sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<Option<ureq::http::Response<ureq::Body>>, RemoteError> {
    let resp = sent.map_err(error)?;
    match resp.status().as_u16() {
        200..=299 => Ok(Some(resp)),
        404 => Ok(None),
        status @ (429 | 503) => {
            let after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            Err(RemoteError::Busy { status, after })
        }
        status => Err(RemoteError::Status(status)),
    }
}

fn error(e: ureq::Error) -> RemoteError {
    match e {
        ureq::Error::StatusCode(s) => RemoteError::Status(s),
        // A body that no longer has its digest says so (`read_error` finds it).
        ureq::Error::Io(io) => super::read_error(&reapi::Digest::default(), io),
        // ureq's messages name the host and the cause, never a header.
        other => RemoteError::Transport(other.to_string()),
    }
}

impl Store for HttpStore {
    fn get_action(&self, key: &reapi::Digest) -> Result<Option<Vec<u8>>, RemoteError> {
        let key = &key.hash;
        let Some(mut resp) = self.get("ac", key)? else { return Ok(None) };
        resp.body_mut()
            .with_config()
            .limit(MAX_ACTION_BYTES)
            .read_to_vec()
            .map(Some)
            .map_err(|e| RemoteError::Transport(format!("reading action entry {key}: {e}")))
    }

    fn put_action(&self, key: &reapi::Digest, body: &[u8]) -> Result<(), RemoteError> {
        self.put("ac", &key.hash, body.len() as u64, Body::Bytes(body), key)
    }

    fn has_blob(&self, blob: &reapi::Digest) -> Result<bool, RemoteError> {
        self.retry(|| checked(self.with_headers(self.agent.head(&self.url("cas", &blob.hash))).call()))
            .map(|r| r.is_some())
    }

    fn get_blob(&self, blob: &reapi::Digest) -> Result<Option<BlobReader>, RemoteError> {
        let Some(resp) = self.get("cas", &blob.hash)? else { return Ok(None) };
        let body = resp.into_body();
        Ok(Some((body.content_length(), Box::new(body.into_reader()))))
    }

    fn pressure(&self) -> (u64, usize) {
        (self.pushbacks.load(std::sync::atomic::Ordering::Relaxed), self.window.narrowest())
    }

    fn put_blob(&self, blob: &reapi::Digest, body: Body<'_>) -> Result<(), RemoteError> {
        self.put("cas", &blob.hash, blob.size_bytes.max(0) as u64, body, blob)
    }
}

/// The CA file's certificates, else the system's bundle, else Mozilla's roots (webpki-roots).
fn root_certs(ca_file: Option<&Path>) -> Result<RootCerts, RemoteSetupError> {
    Ok(match ca_pem(ca_file)? {
        Some(pem) => RootCerts::new_with_certs(&pem_certs(&pem)),
        None => RootCerts::WebPki,
    })
}

/// The PEM of the CAs to trust: `--remote-ca FILE`'s, else the system's bundle (`SSL_CERT_FILE`,
/// else the usual places); `None` for Mozilla's roots. Shared with the gRPC client.
pub(super) fn ca_pem(ca_file: Option<&Path>) -> Result<Option<Vec<u8>>, RemoteSetupError> {
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|source| RemoteSetupError::ReadCa { path: path.to_path_buf(), source })?;
        if pem_certs(&pem).is_empty() {
            return Err(RemoteSetupError::NoCaCertificate { path: path.to_path_buf() });
        }
        return Ok(Some(pem));
    }
    let system = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from).into_iter().chain(
        ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"]
            .map(Into::into),
    );
    for path in system {
        if let Ok(pem) = std::fs::read(&path) {
            if !pem_certs(&pem).is_empty() {
                return Ok(Some(pem));
            }
        }
    }
    Ok(None)
}

fn pem_certs(pem: &[u8]) -> Vec<Certificate<'static>> {
    ureq::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect()
}

fn client_cert(cert: Option<&Path>, key: Option<&Path>) -> Result<Option<ClientCert>, RemoteSetupError> {
    let Some(ClientPems { cert: pem, key: key_pem }) = client_pems(cert, key)? else { return Ok(None) };
    let key = ureq::tls::parse_pem(&key_pem).find_map(|item| match item {
        Ok(PemItem::PrivateKey(k)) => Some(k),
        _ => None,
    });
    let key: PrivateKey<'static> = key.ok_or(RemoteSetupError::NoClientKey)?;
    Ok(Some(ClientCert::new_with_certs(&pem_certs(&pem), key)))
}

/// A client certificate chain's PEM and its key's PEM.
pub(super) struct ClientPems {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

/// The client certificate's PEM and its key's PEM (the same file unless `--remote-client-key`),
/// both checked to hold what they should. Shared with the gRPC client.
pub(super) fn client_pems(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<ClientPems>, RemoteSetupError> {
    let Some(cert_path) = cert else {
        return match key {
            Some(_) => Err(RemoteSetupError::KeyWithoutCert),
            None => Ok(None),
        };
    };
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| RemoteSetupError::ReadClientPem { path: p.to_path_buf(), source })
    };
    let pem = read(cert_path)?;
    if pem_certs(&pem).is_empty() {
        return Err(RemoteSetupError::NoClientCertificate { path: cert_path.to_path_buf() });
    }
    let key_pem = match key {
        Some(k) => read(k)?,
        None => pem.clone(),
    };
    if !ureq::tls::parse_pem(&key_pem).any(|item| matches!(item, Ok(PemItem::PrivateKey(_)))) {
        return Err(RemoteSetupError::NoClientKey);
    }
    Ok(Some(ClientPems { cert: pem, key: key_pem }))
}
