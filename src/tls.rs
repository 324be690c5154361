//! What the uploader and the MQTT client share of TLS: rustls on ring, and the
//! system's CA store.

use std::sync::Arc;

/// The system's CA certificates (Debian's `ca-certificates`, or `SSL_CERT_FILE`);
/// `Err` says why there are none.
pub fn system_roots() -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _unparsable) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(found
            .errors
            .first()
            .map_or_else(|| "none found".to_string(), ToString::to_string));
    }
    Ok(roots)
}

/// A client config builder on ring with the safe default protocol versions.
pub fn builder()
-> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, String> {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
}
