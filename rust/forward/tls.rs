//! TLS to a cell (rustls with the ring provider): the CA bundle the cell's certificate must chain
//! to (and nothing else: the system's roots are never trusted for cells), the gateway's client
//! certificate and key for mTLS, the name verified and sent as SNI, and the lowest version.
//!
//! The control plane reads the PEM files and hands their text here; every problem comes back as
//! `field: message`, named by the operator's field (`ca_file`, `cert_file`, ...).

use rustls::client::WantsClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ConfigBuilder, RootCertStore, SupportedProtocolVersion};
use serde::Deserialize;
use std::sync::{Arc, OnceLock};

/// What `[cells.tls]` compiles to: the PEM text of its files, the name, the lowest version.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The CA bundle (one or more `CERTIFICATE`s) the cell's certificate must chain to.
    pub ca_pem: String,
    /// The gateway's client certificate chain, end-entity first (mTLS); none: no client
    /// certificate is offered.
    #[serde(default)]
    pub cert_pem: Option<String>,
    /// The client certificate's private key: PKCS#8, SEC1 or PKCS#1, unencrypted.
    #[serde(default)]
    pub key_pem: Option<String>,
    /// The name the cell's certificate must carry, sent as SNI when it is a DNS name; none: the
    /// endpoint's host.
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default)]
    pub min_version: MinVersion,
}

/// The lowest TLS version offered; TLS 1.3 is always offered, and preferred.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum MinVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// TLS 1.3 first: rustls offers the versions given and the cell picks the highest it has.
static FROM_TLS12: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];
static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

impl MinVersion {
    fn versions(self) -> &'static [&'static SupportedProtocolVersion] {
        match self {
            MinVersion::Tls12 => FROM_TLS12,
            MinVersion::Tls13 => TLS13_ONLY,
        }
    }
}

/// One cell's TLS client configuration, built once; connections to the cell share it (and its
/// session cache, so a new connection resumes a session where the cell allows).
#[derive(Debug, Clone)]
pub struct CellTls {
    pub config: Arc<ClientConfig>,
    /// What the cell's certificate is verified against.
    pub server_name: ServerName<'static>,
}

/// The ring provider every cell's configuration is built with, made once.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

impl CellTls {
    /// The configuration of `settings` for a cell whose endpoint's host is `host` (the default
    /// server name); every problem, named by its field.
    pub fn build(settings: &TlsSettings, host: &str) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let roots = trust_anchors(&settings.ca_pem)
            .map_err(|e| errors.push(e))
            .ok();
        let name = settings.server_name.as_deref().unwrap_or(host);
        let name = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        let server_name = ServerName::try_from(name.to_owned())
            .map_err(|_| {
                let field = if settings.server_name.is_some() {
                    "server_name"
                } else {
                    "endpoint"
                };
                errors.push(format!(
                    "{field}: {name:?} is not a DNS name or an IP address"
                ));
            })
            .ok();
        let identity = client_identity(settings, &mut errors);
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(settings.min_version.versions())
            .map_err(|err| errors.push(format!("min_version: {err}")))
            .ok();
        let (Some(roots), Some(server_name), Some(identity), Some(builder)) =
            (roots, server_name, identity, builder)
        else {
            return Err(errors);
        };
        let config = with_identity(builder.with_root_certificates(roots), identity)?;
        Ok(CellTls {
            config: Arc::new(config),
            server_name,
        })
    }
}

/// Every problem of `settings` for a cell at `host`, as `field: message` (none: it builds).
pub fn check(settings: &TlsSettings, host: &str) -> Vec<String> {
    CellTls::build(settings, host).err().unwrap_or_default()
}

/// The CA bundle as trust anchors: every `CERTIFICATE` in it, at least one.
fn trust_anchors(ca_pem: &str) -> Result<RootCertStore, String> {
    let certificates = certificates(ca_pem).map_err(|err| format!("ca_file: {err}"))?;
    let mut roots = RootCertStore::empty();
    for (n, certificate) in certificates.into_iter().enumerate() {
        roots
            .add(certificate)
            .map_err(|err| format!("ca_file: certificate {}: not usable as a CA: {err}", n + 1))?;
    }
    Ok(roots)
}

/// Every `CERTIFICATE` section of `text`, in order; an error when there is none or the PEM is
/// broken.
fn certificates(text: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("not PEM: {err}"))?;
    if certificates.is_empty() {
        return Err("holds no PEM CERTIFICATE".into());
    }
    Ok(certificates)
}

/// The client certificate chain and key of mTLS: `Some(None)` when neither is given, `None`
/// after adding the problems to `errors`.
type Identity = Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>;

fn client_identity(settings: &TlsSettings, errors: &mut Vec<String>) -> Option<Identity> {
    let (cert_pem, key_pem) = match (&settings.cert_pem, &settings.key_pem) {
        (None, None) => return Some(None),
        (Some(_), None) => {
            errors.push("key_file: required with cert_file".into());
            return None;
        }
        (None, Some(_)) => {
            errors.push("cert_file: required with key_file".into());
            return None;
        }
        (Some(cert_pem), Some(key_pem)) => (cert_pem, key_pem),
    };
    let chain = certificates(cert_pem)
        .map_err(|err| errors.push(format!("cert_file: {err}")))
        .ok();
    let key = private_key(key_pem)
        .map_err(|err| errors.push(format!("key_file: {err}")))
        .ok();
    Some(Some((chain?, key?)))
}

/// The first private key of `text`: PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or PKCS#1
/// (`RSA PRIVATE KEY`), which the ring provider must be able to sign with.
fn private_key(text: &str) -> Result<PrivateKeyDer<'static>, String> {
    let key = PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|err| match err {
        pem::Error::NoItemsFound if text.contains("ENCRYPTED PRIVATE KEY") => {
            "holds an encrypted key; give it unencrypted (PKCS#8, SEC1 or PKCS#1)".to_owned()
        }
        pem::Error::NoItemsFound => {
            "holds no PEM PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY".to_owned()
        }
        err => format!("not PEM: {err}"),
    })?;
    provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|err| format!("not a usable key: {err}"))?;
    Ok(key)
}

/// The configuration with the client identity, if any; a key that does not match its
/// certificate is named.
fn with_identity(
    builder: ConfigBuilder<ClientConfig, WantsClientCert>,
    identity: Identity,
) -> Result<ClientConfig, Vec<String>> {
    let Some((chain, key)) = identity else {
        return Ok(builder.with_no_client_auth());
    };
    builder.with_client_auth_cert(chain, key).map_err(|err| {
        vec![match err {
            rustls::Error::InconsistentKeys(_) => {
                "key_file: does not match the certificate of cert_file".to_owned()
            }
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                format!("cert_file: not a usable certificate: {err}")
            }
            err => format!("cert_file: {err}"),
        }]
    })
}

/// The rustls error somewhere in `err`'s chain, looking inside `io::Error`s too (whose `source`
/// skips the error they wrap): what a failed handshake or a refused certificate says.
pub fn tls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = err.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(inner) = err
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        if let Some(tls) = tls_error(inner) {
            return Some(tls);
        }
    }
    err.source().and_then(tls_error)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A test fixture of `rust/forward/testdata/tls` (made by scripts/make_tls_fixtures.py).
    pub fn fixture(name: &str) -> String {
        let path = format!(
            "{}/rust/forward/testdata/tls/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
    }

    /// Settings trusting the test CA, with the test gateway's client certificate.
    pub fn mtls_settings() -> TlsSettings {
        TlsSettings {
            ca_pem: fixture("ca.pem"),
            cert_pem: Some(fixture("gateway.pem")),
            key_pem: Some(fixture("gateway.key")),
            ..TlsSettings::default()
        }
    }

    fn errors(settings: &TlsSettings) -> Vec<String> {
        check(settings, "127.0.0.1")
    }

    #[test]
    fn a_ca_bundle_and_a_client_identity_build() {
        let tls = CellTls::build(&mtls_settings(), "127.0.0.1").unwrap();
        assert!(tls.config.client_auth_cert_resolver.has_certs());
        assert_eq!(tls.server_name, ServerName::try_from("127.0.0.1").unwrap());
        let bundle = TlsSettings {
            ca_pem: fixture("bundle.pem"),
            ..TlsSettings::default()
        };
        assert!(CellTls::build(&bundle, "localhost").is_ok());
    }

    #[test]
    fn keys_in_pkcs8_sec1_and_pkcs1_form_are_read() {
        for (cert, key) in [
            ("gateway.pem", "gateway.key"),
            ("gateway.pem", "gateway-sec1.key"),
            ("gateway-rsa.pem", "gateway-rsa.key"),
        ] {
            let settings = TlsSettings {
                cert_pem: Some(fixture(cert)),
                key_pem: Some(fixture(key)),
                ..mtls_settings()
            };
            assert_eq!(errors(&settings), Vec::<String>::new(), "{key}");
        }
    }

    #[test]
    fn each_bad_file_is_named_by_its_field() {
        let not_pem = TlsSettings {
            ca_pem: "not a certificate".into(),
            ..mtls_settings()
        };
        assert_eq!(errors(&not_pem), ["ca_file: holds no PEM CERTIFICATE"]);
        let broken = TlsSettings {
            ca_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n".into(),
            ..mtls_settings()
        };
        let found = errors(&broken);
        assert!(found[0].starts_with("ca_file: not PEM: "), "{found:?}");
        let garbage = TlsSettings {
            ca_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            ..mtls_settings()
        };
        let found = errors(&garbage);
        assert!(
            found[0].starts_with("ca_file: certificate 1: not usable as a CA"),
            "{found:?}"
        );
        let key_as_cert = TlsSettings {
            cert_pem: Some(fixture("gateway.key")),
            key_pem: Some(fixture("gateway.pem")),
            ..mtls_settings()
        };
        assert_eq!(
            errors(&key_as_cert),
            [
                "cert_file: holds no PEM CERTIFICATE",
                "key_file: holds no PEM PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY",
            ]
        );
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let settings = TlsSettings {
            key_pem: Some(fixture("stranger.key")),
            ..mtls_settings()
        };
        assert_eq!(
            errors(&settings),
            ["key_file: does not match the certificate of cert_file"]
        );
    }

    #[test]
    fn an_encrypted_key_and_half_an_identity_are_refused() {
        let encrypted = TlsSettings {
            key_pem: Some(
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
                    .into(),
            ),
            ..mtls_settings()
        };
        let found = errors(&encrypted);
        assert!(found[0].contains("encrypted key"), "{found:?}");
        let no_key = TlsSettings {
            key_pem: None,
            ..mtls_settings()
        };
        assert_eq!(errors(&no_key), ["key_file: required with cert_file"]);
        let no_cert = TlsSettings {
            cert_pem: None,
            ..mtls_settings()
        };
        assert_eq!(errors(&no_cert), ["cert_file: required with key_file"]);
    }

    #[test]
    fn the_server_name_is_the_override_or_the_host() {
        let named = TlsSettings {
            server_name: Some("cell.internal".into()),
            ..mtls_settings()
        };
        let tls = CellTls::build(&named, "127.0.0.1").unwrap();
        assert_eq!(
            tls.server_name,
            ServerName::try_from("cell.internal").unwrap()
        );
        let ipv6 = CellTls::build(&mtls_settings(), "[::1]").unwrap();
        assert_eq!(ipv6.server_name, ServerName::try_from("::1").unwrap());
        let bad = TlsSettings {
            server_name: Some("not a name!".into()),
            ..mtls_settings()
        };
        assert_eq!(
            errors(&bad),
            ["server_name: \"not a name!\" is not a DNS name or an IP address"]
        );
    }

    #[test]
    fn the_minimum_version_decides_what_is_offered() {
        let settings: TlsSettings =
            serde_json::from_str(r#"{"ca_pem": "", "min_version": "1.3"}"#).unwrap();
        assert_eq!(settings.min_version, MinVersion::Tls13);
        assert_eq!(MinVersion::Tls13.versions().len(), 1);
        assert_eq!(MinVersion::default().versions()[0], &rustls::version::TLS13);
        assert!(
            serde_json::from_str::<TlsSettings>(r#"{"ca_pem": "", "min_version": "1.1"}"#).is_err()
        );
    }
}
