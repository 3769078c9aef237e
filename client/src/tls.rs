//! Trust for `wss://` hubs: the system's CA certificates, or one private CA (`--ca FILE`).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// A client TLS configuration trusting the certificates in `ca` (PEM, one or more) and nothing
/// else, or the system's trusted CAs when `ca` is `None`. Errors name the file.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    match ca {
        Some(path) => build(read_roots(path)?),
        None => {
            static SYSTEM: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
            SYSTEM.get_or_init(|| build(system_roots()?)).clone()
        }
    }
}

fn build(roots: RootCertStore) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The CA certificates in a PEM file.
pub fn read_roots(path: &Path) -> Result<RootCertStore, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "cannot read the CA file {}: {}",
                path.display(),
                pem_error(e)
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "the CA file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| {
            format!(
                "the CA file {} holds a certificate that cannot be used: {e}",
                path.display()
            )
        })?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found
            .errors
            .first()
            .map_or_else(String::new, |e| format!(" ({e})"));
        return Err(format!(
            "this system has no trusted CA certificates{why}; pass --ca FILE with the CA that \
             signed the hub's certificate"
        ));
    }
    Ok(roots)
}

/// A PEM error as a person reads it.
pub fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(e) => e.to_string(),
        Error::NoItemsFound => "no PEM item in it".to_string(),
        other => format!("not valid PEM ({other:?})"),
    }
}
