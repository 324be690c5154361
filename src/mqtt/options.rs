//! The broker connection's settings, from `[mqtt]`: address, credentials, TLS, the
//! last will and the limits.
//!
//! Files (the password, the CA, the client certificate and key) are read here at every
//! connection attempt, not once at start: a rotated certificate or password is used
//! without a restart, and a file that is missing now (provisioning not finished) may
//! be there at the next attempt. TLS is rustls on the *ring* provider, like the
//! uploader: the CA file when given, else the system's store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::MqttConfig;

/// SPEC section 8.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// The largest packet the client reads (SPEC section 5).
pub const MAX_INCOMING: usize = 1024 * 1024;
/// The largest packet the client sends; a bigger publish is refused before it
/// reaches the client, which would otherwise drop the connection over it.
pub const MAX_OUTGOING: usize = 256 * 1024;
/// TCP, TLS and CONNACK together, per attempt: LTE can be slow, not this slow.
pub const CONNECT_TIMEOUT_SECS: u64 = 10;

/// The will and the status a clean stop leaves: SPEC section 5.
pub const OFFLINE: &str = r#"{"state":"offline"}"#;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("mqtt.url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot read mqtt.{key} {path}: {source}")]
    File {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mqtt.{key} {path}: {reason}")]
    Content {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "no CA certificates in the system store ({0}): set mqtt.ca_file, install ca-certificates or set SSL_CERT_FILE"
    )]
    NoRoots(String),
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// The broker of an `mqtt://` or `mqtts://` URL (validated by the config already).
pub fn broker(url: &str) -> Result<Broker, SetupError> {
    let bad = |reason: &str| SetupError::Url {
        url: crate::config::mask_url(url),
        reason: reason.to_string(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    let tls = match parsed.scheme() {
        "mqtt" => false,
        "mqtts" => true,
        _ => return Err(bad("must start with mqtt:// or mqtts://")),
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            "credentials in the url are not used: set mqtt.username and mqtt.password_file",
        ));
    }
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
        return Err(bad("a broker url has no path or query"));
    }
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("no host"))?;
    let port = parsed.port().unwrap_or(if tls { 8883 } else { 1883 });
    Ok(Broker {
        host: host.to_string(),
        port,
        tls,
    })
}

/// Everything rumqttc needs for one connection attempt.
pub fn build(
    config: &MqttConfig,
    client_id: &str,
    status_topic: &str,
) -> Result<MqttOptions, SetupError> {
    let broker = broker(&config.url)?;
    let mut options = MqttOptions::new(client_id, broker.host.as_str(), broker.port);
    options
        .set_keep_alive(KEEP_ALIVE)
        .set_clean_session(true)
        .set_max_packet_size(MAX_INCOMING, MAX_OUTGOING)
        .set_last_will(LastWill::new(status_topic, OFFLINE, QoS::AtLeastOnce, true));
    if let Some(username) = &config.username {
        let password = match &config.password_file {
            Some(path) => password(path)?,
            None => String::new(),
        };
        options.set_credentials(username.as_str(), password);
    }
    if broker.tls {
        let tls = tls(config)?;
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls),
        )));
    }
    Ok(options)
}

/// The password file, read the one SPEC way; MQTT 3.1.1 as rumqttc speaks it takes
/// the password as text.
fn password(path: &Path) -> Result<String, SetupError> {
    let bytes = crate::config::read_secret_file(path).map_err(|source| SetupError::File {
        key: "password_file",
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|_| SetupError::Content {
        key: "password_file",
        path: path.to_path_buf(),
        reason: "is not UTF-8 text".to_string(),
    })
}

fn tls(config: &MqttConfig) -> Result<rustls::ClientConfig, SetupError> {
    let mut roots = rustls::RootCertStore::empty();
    match &config.ca_file {
        Some(path) => {
            for cert in certificates("ca_file", path)? {
                roots.add(cert).map_err(|e| SetupError::Content {
                    key: "ca_file",
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
        }
        None => roots = crate::tls::system_roots().map_err(SetupError::NoRoots)?,
    }
    let builder = crate::tls::builder()
        .map_err(SetupError::Tls)?
        .with_root_certificates(roots);
    match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => {
            let chain = certificates("cert_file", cert)?;
            let key = private_key(key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| SetupError::Tls(format!("client certificate: {e}")))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// Every certificate in a PEM file; none is an error.
fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, SetupError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SetupError::Content {
            key,
            path: path.to_path_buf(),
            reason: format!("not PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(SetupError::Content {
            key,
            path: path.to_path_buf(),
            reason: "holds no certificate".to_string(),
        });
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, SetupError> {
    let pem = read("key_file", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| SetupError::Content {
        key: "key_file",
        path: path.to_path_buf(),
        reason: format!("no private key: {e}"),
    })
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path).map_err(|source| SetupError::File {
        key,
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, expected: Result<(&str, u16, bool), &str>) {
        let got = broker(url).map(|b| (b.host, b.port, b.tls));
        match expected {
            Ok((host, port, tls)) => {
                assert_eq!(got.unwrap(), (host.to_string(), port, tls), "{url}")
            }
            Err(text) => {
                let err = got.unwrap_err().to_string();
                assert!(err.contains(text), "{url}: {err}");
            }
        }
    }

    #[test]
    fn broker_urls() {
        check(
            "mqtt://broker.example.com",
            Ok(("broker.example.com", 1883, false)),
        );
        check(
            "mqtts://broker.example.com",
            Ok(("broker.example.com", 8883, true)),
        );
        check("mqtts://10.0.0.5:18883/", Ok(("10.0.0.5", 18883, true)));
        check("mqtt://127.0.0.1:1883", Ok(("127.0.0.1", 1883, false)));
        check(
            "mqtt://u:secret@host",
            Err(r#"mqtt.url "mqtt://u:***@host": credentials in the url are not used"#),
        );
        check("mqtt://host/tidegate", Err("no path or query"));
        check("http://host", Err("must start with mqtt:// or mqtts://"));
    }

    fn config(url: &str) -> MqttConfig {
        MqttConfig {
            url: url.to_string(),
            username: None,
            password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            topic_prefix: "t/s/a".to_string(),
            remote_config: true,
            allow_remote_commands: false,
            config_hmac_key_file: None,
            config_confirm: Duration::from_secs(300),
        }
    }

    #[test]
    fn options_carry_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let pass = dir.path().join("mqtt.pass");
        std::fs::write(&pass, "s3cret\n").unwrap();
        let mut cfg = config("mqtt://127.0.0.1:1883");
        cfg.username = Some("pond-07".to_string());
        cfg.password_file = Some(pass);
        let options = build(&cfg, "pond-07", "t/s/a/status").unwrap();
        assert_eq!(options.client_id(), "pond-07");
        assert_eq!(options.keep_alive(), Duration::from_secs(30));
        assert!(options.clean_session());
        assert_eq!(options.max_packet_size(), 1024 * 1024);
        let will = options.last_will().unwrap();
        assert_eq!(
            (
                will.topic.as_str(),
                &will.message[..],
                will.qos,
                will.retain
            ),
            ("t/s/a/status", OFFLINE.as_bytes(), QoS::AtLeastOnce, true)
        );
        let login = options.credentials().unwrap();
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("pond-07", "s3cret")
        );
    }

    #[test]
    fn unreadable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config("mqtts://127.0.0.1");
        cfg.ca_file = Some(dir.path().join("absent.pem"));
        let err = build(&cfg, "a", "t/status").unwrap_err().to_string();
        assert!(err.starts_with("cannot read mqtt.ca_file "), "{err}");
        assert!(err.contains("absent.pem"), "{err}");

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        cfg.ca_file = Some(junk);
        let err = build(&cfg, "a", "t/status").unwrap_err().to_string();
        assert!(err.ends_with("junk.pem: holds no certificate"), "{err}");

        let mut cfg = config("mqtt://127.0.0.1");
        cfg.username = Some("u".to_string());
        cfg.password_file = Some(dir.path().join("absent.pass"));
        let err = build(&cfg, "a", "t/status").unwrap_err().to_string();
        assert!(err.starts_with("cannot read mqtt.password_file "), "{err}");
    }
}
