//! TLS with libpq's settings, over rustls. tokio-postgres itself knows
//! `sslmode` = disable / prefer / require only and reads no certificate
//! files, so the four TLS parameters (`sslmode`, `sslrootcert`, `sslcert`,
//! `sslkey`) are taken out of the URL here and interpreted as libpq does:
//!
//! | sslmode       | TLS                      | server certificate checked        |
//! |---------------|--------------------------|-----------------------------------|
//! | `disable`     | never                    | -                                 |
//! | `allow`, `prefer` (default) | when offered | no                              |
//! | `require`     | always                   | chain, if a root certificate is set |
//! | `verify-ca`   | always                   | chain to `sslrootcert`            |
//! | `verify-full` | always                   | chain, and the host name          |
//!
//! `sslrootcert` defaults to `~/.postgresql/root.crt` when that file
//! exists, as in libpq; `system` means the operating system's roots.
//! Client certificates are sent only when `sslcert` and `sslkey` are set.
//! A certificate the checks reject is a [`HandshakeError`] whose message
//! names the setting to fix; the caller turns it into a
//! [`PgError::Tls`](crate::PgError::Tls), which is not retried.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use strata_core::config::SslMode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::Socket;

/// The parameters interpreted here, in the names libpq gives them.
pub(crate) const TLS_PARAMETERS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// The `sslrootcert` value meaning the operating system's roots.
const SYSTEM_ROOTS: &str = "system";

/// The TLS settings of one connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    pub(crate) mode: SslMode,
    root_cert: Option<RootCert>,
    client_cert: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RootCert {
    File(PathBuf),
    System,
}

impl std::fmt::Display for RootCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootCert::File(path) => write!(f, "sslrootcert={}", path.display()),
            RootCert::System => write!(f, "sslrootcert={SYSTEM_ROOTS}"),
        }
    }
}

impl TlsSettings {
    /// Whether the roots are the operating system's (`sslrootcert=system`),
    /// which only `verify-full` may use.
    pub(crate) fn root_is_system(&self) -> bool {
        self.root_cert == Some(RootCert::System)
    }

    /// Reads the parameters taken out of a URL (the last of a key wins);
    /// `home` is where libpq's default root certificate is looked for.
    /// The error names the setting.
    pub(crate) fn from_params(
        params: &[(String, String)],
        home: Option<&Path>,
    ) -> Result<Self, String> {
        // An empty value (`?sslmode=`, a template's unset variable) is an
        // error, not the default: it would silently weaken a fleet-wide
        // `[postgres]` setting, which a URL's own parameter overrides.
        if let Some((key, _)) = params.iter().find(|(_, v)| v.is_empty()) {
            return Err(format!("{key} is empty: give it a value or leave it out"));
        }
        let value = |key: &str| {
            params
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let mode = match value("sslmode") {
            Some(text) => text.parse::<SslMode>().map_err(|err| err.to_string())?,
            // libpq (16+): the system's roots imply verify-full, since any
            // public CA signs certificates for any name.
            None if value("sslrootcert") == Some(SYSTEM_ROOTS) => SslMode::VerifyFull,
            None => SslMode::Prefer,
        };
        if value("sslrootcert") == Some(SYSTEM_ROOTS) && mode != SslMode::VerifyFull {
            return Err(format!(
                "sslrootcert={SYSTEM_ROOTS} needs sslmode=verify-full (got sslmode={mode}): any public CA signs certificates for any name"
            ));
        }
        let default_root = home
            .map(|home| home.join(".postgresql/root.crt"))
            .filter(|path| path.is_file());
        let root_cert = match value("sslrootcert") {
            Some(SYSTEM_ROOTS) => Some(RootCert::System),
            Some(path) => Some(RootCert::File(PathBuf::from(path))),
            None => default_root.map(RootCert::File),
        };
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root_cert.is_none() {
            return Err(format!(
                "sslmode={mode} needs sslrootcert: a PEM file of the CA certificates the server's certificate chains to, or \"{SYSTEM_ROOTS}\" for the operating system's roots"
            ));
        }
        let client_cert =
            match (value("sslcert"), value("sslkey")) {
                (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
                (None, None) => None,
                (Some(_), None) => return Err(
                    "sslcert is set but sslkey is not: a client certificate needs its private key"
                        .into(),
                ),
                (None, Some(_)) => return Err(
                    "sslkey is set but sslcert is not: a private key needs its client certificate"
                        .into(),
                ),
            };
        Ok(Self {
            mode,
            root_cert,
            client_cert,
        })
    }

    /// The mode tokio-postgres negotiates with: whether to ask for TLS and
    /// whether to insist; the checks are the connector's.
    pub(crate) fn driver_mode(&self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Driver;
        match self.mode {
            SslMode::Disable => Driver::Disable,
            SslMode::Allow | SslMode::Prefer => Driver::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Driver::Require,
        }
    }

    /// The connector for these settings, reading the certificate files
    /// now (a rotated file is picked up by the next connection). The error
    /// names the setting and the file.
    pub(crate) fn connector(&self) -> Result<MakeRustls, String> {
        if self.mode == SslMode::Disable {
            return Ok(MakeRustls { inner: None });
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let checks_chain = matches!(
            self.mode,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        );
        let root_cert = self.root_cert.as_ref().filter(|_| checks_chain);
        let verifier: Arc<dyn ServerCertVerifier> = match root_cert {
            None => Arc::new(NoCertificateCheck {
                provider: provider.clone(),
            }),
            Some(root) => {
                let roots = Arc::new(load_roots(root)?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|err| format!("{root}: {err}"))?;
                if self.mode == SslMode::VerifyFull {
                    webpki
                } else {
                    Arc::new(ChainOnly { webpki })
                }
            }
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| format!("TLS set-up: {err}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|err| format!("sslcert={}: {err}", cert.display()))?;
                if chain.is_empty() {
                    return Err(format!(
                        "sslcert={}: no PEM certificate in the file",
                        cert.display()
                    ));
                }
                let private_key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|err| format!("sslkey={}: {err}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, private_key)
                    .map_err(|err| {
                        format!(
                            "sslcert={} / sslkey={}: {err}",
                            cert.display(),
                            key.display()
                        )
                    })?
            }
        };
        Ok(MakeRustls {
            inner: Some(Connector {
                config: Arc::new(config),
                mode: self.mode,
                root_cert: root_cert.cloned(),
            }),
        })
    }
}

/// The CA certificates of `root`; an unreadable file, a file without
/// certificates, or none usable is an error naming the setting.
fn load_roots(root: &RootCert) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    let certs = match root {
        RootCert::File(path) => CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|err| format!("{root}: {err}"))?,
        RootCert::System => {
            let found = rustls_native_certs::load_native_certs();
            if found.certs.is_empty() {
                let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                return Err(format!(
                    "{root}: no certificates found ({})",
                    errors.join("; ")
                ));
            }
            found.certs
        }
    };
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{root}: no usable CA certificate in it"));
    }
    Ok(store)
}

/// `prefer` and `require` without a root certificate: encryption without
/// authentication of the server, as in libpq. Handshake signatures are
/// still verified, so the session is bound to the certificate presented.
#[derive(Debug)]
struct NoCertificateCheck {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `verify-ca`: the chain is checked as for `verify-full`, the host name
/// is not. webpki checks the name only after the chain has verified, so a
/// name error means the chain was good.
#[derive(Debug)]
struct ChainOnly {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// tokio-postgres's connector factory, one per connect: `None` when
/// `sslmode=disable` (the driver then never asks for TLS).
pub(crate) struct MakeRustls {
    inner: Option<Connector>,
}

#[derive(Clone)]
struct Connector {
    config: Arc<ClientConfig>,
    mode: SslMode,
    root_cert: Option<RootCert>,
}

impl MakeTlsConnect<Socket> for MakeRustls {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, host: &str) -> Result<RustlsConnect, io::Error> {
        Ok(RustlsConnect {
            connector: self.inner.clone(),
            host: host.to_string(),
        })
    }
}

/// The handshake with one host.
pub(crate) struct RustlsConnect {
    connector: Option<Connector>,
    host: String,
}

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = HandshakeError;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream, HandshakeError>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let Some(connector) = self.connector else {
                return Err(HandshakeError {
                    message: "TLS requested with sslmode=disable".into(),
                    certificate_rejected: false,
                });
            };
            // A host that is no DNS name or IP address (empty with
            // hostaddr only) still gets a name for SNI; `verify-full` then
            // fails on it, naming the host.
            let name = ServerName::try_from(self.host.clone())
                .unwrap_or_else(|_| ServerName::try_from("postgres").expect("a valid DNS name"));
            tokio_rustls::TlsConnector::from(connector.config.clone())
                .connect(name, stream)
                .await
                .map(RustlsStream)
                .map_err(|err| HandshakeError::explain(&err, &self.host, &connector))
        })
    }
}

/// Why a TLS handshake failed, worded for the operator: a rejected
/// certificate names the setting that decides it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HandshakeError {
    message: String,
    certificate_rejected: bool,
}

impl HandshakeError {
    /// Whether the server's certificate failed the checks `sslmode` asks
    /// for (not a network fault: retrying meets the same certificate).
    pub fn certificate_rejected(&self) -> bool {
        self.certificate_rejected
    }

    fn explain(err: &io::Error, host: &str, connector: &Connector) -> Self {
        let mode = connector.mode;
        let root = connector
            .root_cert
            .as_ref()
            .map_or_else(|| "no sslrootcert".to_string(), |r| r.to_string());
        let tls_error = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>());
        let (message, certificate_rejected) = match tls_error {
            Some(rustls::Error::InvalidCertificate(cert_error)) => {
                let message = match cert_error {
                    CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                        "the server's certificate is not signed by a CA in {root} (sslmode={mode})"
                    ),
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. } => format!(
                        "the server's certificate is not valid for host \"{host}\" (sslmode={mode} checks the host name: connect by a name the certificate holds, or use sslmode=verify-ca)"
                    ),
                    other => format!(
                        "the server's certificate was rejected (sslmode={mode}, {root}): {other:?}"
                    ),
                };
                (message, true)
            }
            Some(rustls::Error::AlertReceived(alert)) => {
                use rustls::AlertDescription as Alert;
                let about_certificates = matches!(
                    alert,
                    Alert::BadCertificate
                        | Alert::UnsupportedCertificate
                        | Alert::CertificateRevoked
                        | Alert::CertificateExpired
                        | Alert::CertificateUnknown
                        | Alert::UnknownCA
                        | Alert::AccessDenied
                        | Alert::CertificateRequired
                );
                (
                    format!("the server ended the TLS handshake with {host} ({alert:?}); check sslcert/sslkey and the server's TLS settings"),
                    about_certificates,
                )
            }
            Some(other) => (format!("TLS handshake with {host}: {other}"), false),
            None => (format!("TLS handshake with {host}: {err}"), false),
        };
        Self {
            message,
            certificate_rejected,
        }
    }
}

/// A TLS session on a Postgres socket.
pub struct RustlsStream(tokio_rustls::client::TlsStream<Socket>);

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl TlsStream for RustlsStream {
    /// `tls-server-end-point` (RFC 5929): the hash of the server's
    /// certificate, so SCRAM-SHA-256-PLUS binds the authentication to this
    /// TLS session and a man in the middle relaying it fails (as libpq's
    /// default `channel_binding=prefer`). None when the certificate's
    /// signature hash is not known (SCRAM then runs without binding).
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| server_end_point(leaf.as_ref()))
            .map_or_else(ChannelBinding::none, ChannelBinding::tls_server_end_point)
    }
}

/// The `tls-server-end-point` value of a DER certificate: its hash with
/// the hash function of its signature algorithm, SHA-256 for MD5 and
/// SHA-1 (RFC 5929 section 4.1), as the server computes it. `None` for
/// algorithms without a single hash (Ed25519, RSASSA-PSS) or a certificate
/// that does not parse.
pub(crate) fn server_end_point(der: &[u8]) -> Option<Vec<u8>> {
    use sha2::{Digest, Sha256, Sha384, Sha512};
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, ... }
    let (certificate, _) = der_element(der, 0x30)?;
    let (_, after_tbs) = der_element(certificate, 0x30)?;
    let (algorithm, _) = der_element(after_tbs, 0x30)?;
    let (oid, _) = der_element(algorithm, 0x06)?;
    // Arcs after 1.2.840.113549.1.1 (RSA) and 1.2.840.10045.4 (ECDSA).
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    enum Hash {
        Sha256,
        Sha384,
        Sha512,
    }
    let hash = match oid {
        // md5, sha1, sha256 WithRSAEncryption
        [rest @ .., last] if rest == RSA && matches!(last, 4 | 5 | 11) => Hash::Sha256,
        [rest @ .., 12] if rest == RSA => Hash::Sha384,
        [rest @ .., 13] if rest == RSA => Hash::Sha512,
        // ecdsa-with-SHA1, ecdsa-with-SHA256/384/512
        [rest @ .., 1] if rest == ECDSA => Hash::Sha256,
        [rest @ .., 3, 2] if rest == ECDSA => Hash::Sha256,
        [rest @ .., 3, 3] if rest == ECDSA => Hash::Sha384,
        [rest @ .., 3, 4] if rest == ECDSA => Hash::Sha512,
        _ => return None,
    };
    Some(match hash {
        Hash::Sha256 => Sha256::digest(der).to_vec(),
        Hash::Sha384 => Sha384::digest(der).to_vec(),
        Hash::Sha512 => Sha512::digest(der).to_vec(),
    })
}

/// The content of the DER element at the start of `input` if its tag is
/// `tag`, and what follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |len, &byte| (len << 8) | usize::from(byte));
        (len, &rest[count..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_libpq_mode_is_accepted_and_prefer_is_the_default() {
        for mode in SslMode::ALL {
            let settings = TlsSettings::from_params(
                &params(&[("sslmode", mode.as_str()), ("sslrootcert", "/ca.pem")]),
                None,
            )
            .expect("valid");
            assert_eq!(settings.mode, mode);
        }
        let system =
            TlsSettings::from_params(&params(&[("sslrootcert", "system")]), None).expect("valid");
        assert_eq!(
            system.mode,
            SslMode::VerifyFull,
            "libpq: system roots imply verify-full"
        );
        let weak = TlsSettings::from_params(
            &params(&[("sslrootcert", "system"), ("sslmode", "verify-ca")]),
            None,
        )
        .expect_err("system roots with a weaker mode");
        assert!(weak.contains("verify-full"), "{weak}");
        let default = TlsSettings::from_params(&[], None).expect("valid");
        assert_eq!(default.mode, SslMode::Prefer);
        assert_eq!(
            default.driver_mode(),
            tokio_postgres::config::SslMode::Prefer
        );
    }

    #[test]
    fn bad_settings_are_named() {
        let err = TlsSettings::from_params(&params(&[("sslmode", "verify_full")]), None)
            .expect_err("unknown mode");
        assert!(err.contains("sslmode \"verify_full\""), "{err}");
        let err = TlsSettings::from_params(&params(&[("sslmode", "verify-full")]), None)
            .expect_err("no root");
        assert!(err.contains("needs sslrootcert"), "{err}");
        let err =
            TlsSettings::from_params(&params(&[("sslcert", "/c.pem")]), None).expect_err("no key");
        assert!(err.contains("sslkey"), "{err}");
        let missing = TlsSettings::from_params(
            &params(&[
                ("sslmode", "verify-ca"),
                ("sslrootcert", "/nonexistent/ca.pem"),
            ]),
            None,
        )
        .expect("parses")
        .connector()
        .err()
        .expect("unreadable");
        assert!(
            missing.starts_with("sslrootcert=/nonexistent/ca.pem: "),
            "{missing}"
        );
    }

    /// A certificate reduced to what `server_end_point` reads: an empty
    /// tbsCertificate and a signature algorithm.
    fn certificate_signed_with(oid: &[u8]) -> Vec<u8> {
        let mut algorithm = vec![0x06, oid.len() as u8];
        algorithm.extend_from_slice(oid);
        let mut body = vec![0x30, 0x00, 0x30, algorithm.len() as u8];
        body.extend_from_slice(&algorithm);
        let mut der = vec![0x30, body.len() as u8];
        der.extend_from_slice(&body);
        der
    }

    #[test]
    fn channel_binding_hashes_with_the_signature_hash() {
        use sha2::{Digest, Sha256, Sha384};
        let ecdsa_sha384 =
            certificate_signed_with(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03]);
        assert_eq!(
            server_end_point(&ecdsa_sha384),
            Some(Sha384::digest(&ecdsa_sha384).to_vec())
        );
        // sha1WithRSAEncryption: SHA-256 (RFC 5929).
        let rsa_sha1 =
            certificate_signed_with(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05]);
        assert_eq!(
            server_end_point(&rsa_sha1),
            Some(Sha256::digest(&rsa_sha1).to_vec())
        );
        // Ed25519 has no hash of its own: no binding rather than a wrong one.
        assert_eq!(
            server_end_point(&certificate_signed_with(&[0x2b, 0x65, 0x70])),
            None
        );
        assert_eq!(
            server_end_point(&ecdsa_sha384[..ecdsa_sha384.len() - 1]),
            None
        );
        assert_eq!(server_end_point(b""), None);
    }

    #[test]
    fn libpq_default_root_certificate_is_used_when_present() {
        let home = tempfile::tempdir().expect("tempdir");
        let none = TlsSettings::from_params(&[], Some(home.path())).expect("valid");
        assert_eq!(none.root_cert, None);
        std::fs::create_dir_all(home.path().join(".postgresql")).expect("mkdir");
        std::fs::write(home.path().join(".postgresql/root.crt"), "").expect("write");
        let found =
            TlsSettings::from_params(&params(&[("sslmode", "verify-full")]), Some(home.path()))
                .expect("default root");
        assert_eq!(
            found.root_cert,
            Some(RootCert::File(home.path().join(".postgresql/root.crt")))
        );
    }
}
