//! TLS to PostgreSQL and Redis, both over rustls with the ring provider and
//! the Mozilla (webpki) roots: CA files read and checked when the clients are
//! built, and failed handshakes said in words that name what to fix.

use std::error::Error;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::CertificateError;

/// Makes ring the process's rustls provider (later calls do nothing), so
/// that a second provider compiled in by some dependency cannot leave rustls
/// unable to choose one when the first TLS connection is made.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads the PEM file of CA certificates that `setting` names; an error names
/// the setting and the path (a missing, unreadable or empty file is refused
/// at start rather than failing every connection later).
pub fn read_ca_file(setting: &str, path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|error| format!("{setting} = {shown}: cannot read the CA file ({error})"))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{setting} = {shown}: not a PEM file of CA certificates ({error})"))?;
    if certificates.is_empty() {
        return Err(format!(
            "{setting} = {shown}: the file holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)"
        ));
    }
    Ok(pem)
}

/// A TLS handshake that failed, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeFailure {
    /// The server's certificate was refused (as opposed to, say, no protocol
    /// version in common).
    pub certificate: bool,
    pub description: String,
}

impl fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

/// The TLS handshake failure somewhere in `error`'s chain of causes, if any.
pub fn handshake_failure(error: &(dyn Error + 'static)) -> Option<HandshakeFailure> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(tls) = as_rustls(error) {
            return Some(describe(tls));
        }
        current = error.source();
    }
    None
}

/// `error` as a rustls error: itself, inside an `io::Error` (how both
/// clients' sockets report it), or behind the `Arc` redis-rs keeps it in.
fn as_rustls<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(io) = error.downcast_ref::<std::io::Error>() {
        return io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    }
    if let Some(shared) = error.downcast_ref::<Arc<dyn Error + Send + Sync>>() {
        let inner: &(dyn Error + 'static) = shared.as_ref();
        return as_rustls(inner);
    }
    None
}

fn describe(error: &rustls::Error) -> HandshakeFailure {
    let (certificate, what) = match error {
        rustls::Error::InvalidCertificate(reason) => (
            true,
            match reason {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    "the server's certificate was not trusted: no trusted CA signed it"
                }
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                    "the server's certificate was not trusted: it is not valid for the host name connected to"
                }
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => {
                    "the server's certificate was not trusted: it has expired or is not valid yet"
                }
                _ => "the server's certificate was not trusted",
            },
        ),
        _ => (false, "the TLS handshake failed"),
    };
    HandshakeFailure {
        certificate,
        description: format!("{what} ({error})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_wrapped(error: rustls::Error) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, error)
    }

    #[test]
    fn an_unknown_issuer_inside_an_io_error_is_an_untrusted_certificate() {
        let error = io_wrapped(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer));
        let failure = handshake_failure(&error).expect("a handshake failure");
        assert!(failure.certificate);
        assert!(
            failure
                .description
                .contains("certificate was not trusted: no trusted CA signed it"),
            "{failure}"
        );
    }

    #[test]
    fn a_wrong_host_name_says_so() {
        let error = io_wrapped(rustls::Error::InvalidCertificate(CertificateError::NotValidForName));
        let failure = handshake_failure(&error).expect("a handshake failure");
        assert!(failure.description.contains("not valid for the host name"), "{failure}");
    }

    #[test]
    fn a_rustls_error_behind_a_shared_error_is_found() {
        let inner: Arc<dyn Error + Send + Sync> = Arc::new(io_wrapped(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        )));
        let failure = handshake_failure(&inner).expect("a handshake failure");
        assert!(failure.certificate);
    }

    #[test]
    fn a_non_certificate_tls_error_is_a_handshake_failure_only() {
        let error = io_wrapped(rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion));
        let failure = handshake_failure(&error).expect("a handshake failure");
        assert!(!failure.certificate);
        assert!(failure.description.starts_with("the TLS handshake failed"), "{failure}");
    }

    #[test]
    fn other_errors_are_not_tls_failures() {
        let error = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(handshake_failure(&error), None);
    }

    #[test]
    fn ca_files_are_checked() {
        let dir = std::env::temp_dir().join(format!("analytics-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let missing = dir.join("missing.pem");
        let error = read_ca_file("APP__REDIS__TLS_CA_FILE", &missing).expect_err("missing");
        assert!(error.starts_with("APP__REDIS__TLS_CA_FILE = "), "{error}");
        assert!(
            error.contains("missing.pem") && error.contains("cannot read"),
            "{error}"
        );
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let error = read_ca_file("APP__REDIS__TLS_CA_FILE", &empty).expect_err("empty");
        assert!(error.contains("holds no PEM certificate"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
