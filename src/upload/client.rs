//! One HTTP client per upload run: the POST of a batch with the contract's headers,
//! and what came back.
//!
//! TLS is rustls on the *ring* provider with the roots of the system's CA store
//! (`/etc/ssl/certs`, or `SSL_CERT_FILE`/`SSL_CERT_DIR`), loaded at each run: a farm's
//! private CA is trusted the system's way, and root updates come with the OS. HTTP/1.1
//! only, redirects not followed (a 301 to another URL is a configuration to fix, not
//! a reason to re-send readings elsewhere), proxies from the environment as usual.
//! Every request has a connect timeout (`min(upload.timeout, 10 s)`) and a total one
//! (`upload.timeout`).
//!
//! This module decides nothing: what an answer means is [`super::policy`]'s.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderValue};

use super::UploadError;
use super::encode;
use crate::config::UploadConfig;

/// The longest a connection may take to open, whatever `upload.timeout` says.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// How much of an answer's body is kept: enough for the dead letter and the log.
const BODY_LIMIT: usize = 1024;

/// The server's answer to one POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub date: Option<String>,
    /// Where a 3xx points.
    pub location: Option<String>,
    /// The start of the body, as text.
    pub body: String,
}

impl Answer {
    /// `503 Service Unavailable`, with the target of a redirect.
    pub fn describe(&self) -> String {
        let reason = reqwest::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let mut text = format!("{} {reason}", self.status).trim_end().to_string();
        if let Some(location) = &self.location {
            text.push_str(&format!(" (Location: {location})"));
        }
        text
    }
}

pub struct Client {
    http: reqwest::Client,
    url: reqwest::Url,
    /// The headers every request of the run carries.
    headers: HeaderMap,
    timeout: Duration,
}

impl Client {
    /// A client for `config`, with the token file read now.
    pub fn new(config: &UploadConfig) -> Result<Client, UploadError> {
        let setup = |reason: String| UploadError::Setup {
            url: crate::config::mask_url(&config.url),
            reason,
        };
        let url = reqwest::Url::parse(&config.url).map_err(|e| setup(e.to_string()))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(encode::content_type(config.format)),
        );
        if config.gzip {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        if let Some(path) = &config.token_file {
            headers.insert(header::AUTHORIZATION, bearer(path)?);
        }
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls(&url).map_err(setup)?)
            .user_agent(concat!("tidegate/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.timeout.min(CONNECT_LIMIT))
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .tcp_keepalive(Duration::from_secs(30))
            .pool_max_idle_per_host(1)
            .build()
            .map_err(|e| setup(chain(&e.without_url())))?;
        Ok(Client {
            http,
            url,
            headers,
            timeout: config.timeout,
        })
    }

    /// POSTs one batch's body under its key.
    pub async fn post(&self, key: &str, body: Bytes) -> Result<Answer, String> {
        let key = HeaderValue::from_str(key).map_err(|e| e.to_string())?;
        let sent = self
            .http
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header("Idempotency-Key", key)
            .body(body)
            .send()
            .await;
        let mut response = sent.map_err(|e| self.describe(e))?;
        let text = |name: header::HeaderName, r: &reqwest::Response| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let mut answer = Answer {
            status: response.status().as_u16(),
            retry_after: text(header::RETRY_AFTER, &response),
            date: text(header::DATE, &response),
            location: text(header::LOCATION, &response),
            body: String::new(),
        };
        // The start of the body only; a failure to read the rest does not change the
        // answer (the connection is simply not reused).
        let mut start = Vec::new();
        while start.len() < BODY_LIMIT {
            match response.chunk().await {
                Ok(Some(chunk)) => start.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        start.truncate(BODY_LIMIT);
        answer.body = String::from_utf8_lossy(&start).trim().to_string();
        Ok(answer)
    }

    /// A transport error as one line an operator can act on, without the URL (which
    /// may carry a password).
    fn describe(&self, error: reqwest::Error) -> String {
        let error = error.without_url();
        if error.is_timeout() {
            return format!(
                "no answer within {}",
                humantime::format_duration(self.timeout)
            );
        }
        let detail = chain(&error);
        if error.is_connect() {
            format!("cannot connect to {}: {detail}", host(&self.url))
        } else {
            format!("request failed: {detail}")
        }
    }
}

/// `Authorization: Bearer <token>` from the token file, read at each run so a new
/// token is used without a restart.
fn bearer(path: &Path) -> Result<HeaderValue, UploadError> {
    let token = crate::config::read_secret_file(path).map_err(|source| UploadError::Token {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |what: &'static str| UploadError::BadToken {
        path: path.to_path_buf(),
        what,
    };
    if token.is_empty() {
        return Err(bad("is empty"));
    }
    let mut value = b"Bearer ".to_vec();
    value.extend_from_slice(&token);
    let mut value = HeaderValue::from_bytes(&value)
        .map_err(|_| bad("holds characters an HTTP header cannot carry"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// rustls on ring. Roots only for https: a plain-http URL must not fail on a system
/// without a CA store.
fn tls(url: &reqwest::Url) -> Result<rustls::ClientConfig, String> {
    let roots = if url.scheme() == "https" {
        crate::tls::system_roots().map_err(|why| {
            format!(
                "no CA certificates in the system store ({why}): install ca-certificates or set SSL_CERT_FILE"
            )
        })?
    } else {
        rustls::RootCertStore::empty()
    };
    Ok(crate::tls::builder()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The host (and port) of a URL, never its credentials.
fn host(url: &reqwest::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => "the server".to_string(),
    }
}

/// An error and its causes as one line, outermost first, repeats left out.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    // reqwest's outermost layers say only that a request was being sent.
    parts.retain(|p| !p.starts_with("error sending request") && p != "client error (Connect)");
    if parts.is_empty() {
        error.to_string()
    } else {
        parts.join(": ")
    }
}
