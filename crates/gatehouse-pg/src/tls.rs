//! TLS on both sides. Towards operators: the configured certificate, or a self-signed one
//! generated on first start (so `sslmode=require` works out of the box). Towards targets:
//! per-target `verify-full` (the target's CA, or the system roots), `require` (encrypted,
//! unverified) or `disable`.

use std::path::Path;
use std::sync::Arc;

use gatehouse_pgproto::TlsMode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// aws-lc-rs: the fastest provider rustls has here (AES-256-GCM at PostgreSQL's record
/// sizes ~3 % ahead of ring, ~18 % on 16 KiB records; the SSH front's ciphers come from it
/// too), and the one with a post-quantum key exchange: X25519MLKEM768 is preferred when
/// the client offers it (libpq on OpenSSL 3.5 does), X25519 and the NIST curves otherwise.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The operator-facing TLS configuration from `cert`/`key` (PEM). When neither file exists
/// and `generate` is true, a self-signed certificate for localhost is generated and saved
/// there first (key file mode 0600).
pub fn server_config(
    cert: &Path,
    key: &Path,
    generate: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    if generate && !cert.exists() && !key.exists() {
        generate_self_signed(cert, key)?;
    }
    let read = |what, p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            what,
            path: p.display().to_string(),
            source,
        })
    };
    let cert_pem = read("TLS certificate", cert)?;
    let key_pem = read("TLS key", key)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(TlsError::Invalid(format!(
            "{} holds no certificate",
            cert.display()
        )));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", key.display())))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| TlsError::Invalid(format!("{} / {}: {e}", cert.display(), key.display())))?;
    Ok(Arc::new(config))
}

fn generate_self_signed(cert: &Path, key: &Path) -> Result<(), TlsError> {
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| TlsError::Invalid(format!("cannot generate a TLS certificate: {e}")))?;
    let write = |p: &Path, text: String, private: bool| -> Result<(), TlsError> {
        let err = |source| TlsError::Write {
            path: p.display().to_string(),
            source,
        };
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(p).map_err(err)?;
        std::io::Write::write_all(&mut f, text.as_bytes()).map_err(err)
    };
    write(key, generated.signing_key.serialize_pem(), true)?;
    write(cert, generated.cert.pem(), false)?;
    tracing::info!(cert = %cert.display(), "generated a self-signed TLS certificate for the PostgreSQL front");
    Ok(())
}

/// The TLS client configuration for a target, or `None` for `disable`.
pub fn client_config(
    mode: TlsMode,
    ca_pem: Option<&str>,
) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    let config = match mode {
        TlsMode::Disable => return Ok(None),
        TlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth(),
        TlsMode::VerifyFull => {
            let mut roots = RootCertStore::empty();
            match ca_pem {
                Some(pem) => {
                    for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                        let c = c.map_err(|e| TlsError::Invalid(format!("target CA: {e}")))?;
                        roots
                            .add(c)
                            .map_err(|e| TlsError::Invalid(format!("target CA: {e}")))?;
                    }
                }
                None => {
                    for c in rustls_native_certs::load_native_certs().certs {
                        let _ = roots.add(c);
                    }
                }
            }
            if roots.is_empty() {
                return Err(TlsError::Invalid(
                    "verify-full needs a CA: give the target --tls-ca, or install ca-certificates"
                        .into(),
                ));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(Arc::new(config)))
}

pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_owned())
        .map_err(|_| TlsError::Invalid(format!("'{host}' is not a valid TLS server name")))
}

/// `require`: encrypt, but accept any certificate (libpq's `sslmode=require`). Signatures
/// are still checked so the handshake itself is sound.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        server_config(&cert, &key, true).unwrap();
        let first = std::fs::read(&cert).unwrap();
        server_config(&cert, &key, true).unwrap();
        assert_eq!(std::fs::read(&cert).unwrap(), first);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let missing = server_config(&dir.path().join("x"), &key, false).unwrap_err();
        assert!(
            missing.to_string().contains("cannot read TLS certificate"),
            "{missing}"
        );
        std::fs::write(&cert, "garbage").unwrap();
        assert!(server_config(&cert, &key, false).is_err());
        assert!(client_config(TlsMode::VerifyFull, Some("no pem here")).is_err());
        assert!(client_config(TlsMode::Disable, None).unwrap().is_none());
        assert!(client_config(TlsMode::Require, None).unwrap().is_some());
    }

    /// A handshake between the front's server configuration and a target-side client
    /// configuration, in memory; the negotiated key exchange group and cipher suite.
    fn handshake(client: Arc<ClientConfig>) -> (rustls::NamedGroup, rustls::CipherSuite) {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let server = server_config(&cert, &key, true).unwrap();
        let mut s = rustls::ServerConnection::new(server).unwrap();
        let mut c =
            rustls::ClientConnection::new(client, server_name("localhost").unwrap()).unwrap();
        for _ in 0..10 {
            if !c.is_handshaking() && !s.is_handshaking() {
                break;
            }
            let mut wire = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
            s.read_tls(&mut wire.as_slice()).unwrap();
            s.process_new_packets().unwrap();
            let mut wire = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut wire).unwrap();
            }
            c.read_tls(&mut wire.as_slice()).unwrap();
            c.process_new_packets().unwrap();
        }
        assert!(!c.is_handshaking() && !s.is_handshaking(), "no handshake");
        let group = s.negotiated_key_exchange_group().unwrap().name();
        assert_eq!(c.negotiated_key_exchange_group().unwrap().name(), group);
        (group, s.negotiated_cipher_suite().unwrap().suite())
    }

    #[test]
    fn prefers_a_post_quantum_key_exchange_and_falls_back_to_x25519() {
        let client = client_config(TlsMode::Require, None).unwrap().unwrap();
        let (group, suite) = handshake(client);
        assert_eq!(group, rustls::NamedGroup::X25519MLKEM768);
        assert_eq!(suite, rustls::CipherSuite::TLS13_AES_256_GCM_SHA384);
        // a client without ML-KEM (older OpenSSL) still gets an elliptic-curve exchange
        let mut classic = rustls::crypto::aws_lc_rs::default_provider();
        classic
            .kx_groups
            .retain(|g| g.name() != rustls::NamedGroup::X25519MLKEM768);
        let client = ClientConfig::builder_with_provider(Arc::new(classic))
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth();
        let (group, _) = handshake(Arc::new(client));
        assert_eq!(group, rustls::NamedGroup::X25519);
    }
}
