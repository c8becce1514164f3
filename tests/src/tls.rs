//! TLS for tests: a throwaway PKI generated at test time with the `openssl` CLI (the tool users
//! run, so subjects and fingerprints are exactly what `openssl x509` prints), the listener's
//! `DownstreamTlsContext`, and an HTTPS client (curl with `--cacert`, `--cert`/`--key`, HTTP/1.1
//! or HTTP/2 by ALPN).
//!
//! ```ignore
//! let pki = Pki::new("orders");
//! let client = pki.client("fulfillment", "/O=Retail/CN=fulfillment", &["URI:spiffe://retail.example/ns/orders/sa/fulfillment"]);
//! let gw = GatewayBuilder::new().tls(pki.server()).wasm(...).start();
//! let resp = gw.https(&Request::get("/"), &pki.trust().with_cert(&client)).unwrap();
//! ```

use crate::client::{curl, Request, Response};
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// A certificate authority with a server certificate for `127.0.0.1`, in a scratch directory.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
    /// The CA certificate (PEM): what the listener trusts for client certificates and what
    /// clients trust for the server.
    pub ca_cert: PathBuf,
    ca_key: PathBuf,
    /// The server certificate (`CN=127.0.0.1`, SANs `IP:127.0.0.1` and `DNS:localhost`).
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
}

/// A client certificate issued by a [`Pki`].
#[derive(Debug, Clone)]
pub struct ClientCert {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The subject as `openssl x509 -noout -subject -nameopt RFC2253` prints it (without
    /// `subject=`), which is how Envoy reports it.
    pub subject: String,
    /// The SHA-256 fingerprint as `openssl x509 -noout -fingerprint -sha256` prints it
    /// (uppercase hex with colons).
    pub fingerprint: String,
}

impl ClientCert {
    /// The fingerprint as lowercase hex without colons (Envoy's
    /// `connection.sha256_peer_certificate_digest`).
    pub fn fingerprint_hex(&self) -> String {
        self.fingerprint.replace(':', "").to_ascii_lowercase()
    }
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (install it with `make tools`)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A serial number no other certificate of this test run has.
fn serial() -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    format!(
        "0x{:08x}{:08x}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

const EC_KEY: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

impl Pki {
    /// A new CA (`CN=<label> Test CA`) and server certificate, valid for two days.
    pub fn new(label: &str) -> Pki {
        let dir = crate::scratch_dir(&format!("pki-{label}"));
        let ca_subject = format!("/CN={label} Test CA");
        openssl(
            &dir,
            &[
                &["req", "-x509", "-nodes"][..],
                &EC_KEY,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-days",
                    "2",
                    "-subj",
                    &ca_subject,
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat(),
        );
        let pki = Pki {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            dir,
        };
        pki.issue(
            "server",
            "/CN=127.0.0.1",
            &["IP:127.0.0.1", "DNS:localhost"],
            "serverAuth",
        );
        pki
    }

    /// Issues a client certificate: `subject` in OpenSSL's `-subj` form (`/O=Partner
    /// Co/CN=partner-gateway`), `sans` in its `subjectAltName` form (`URI:spiffe://...`,
    /// `DNS:name`, `email:...`, `IP:...`; none for a certificate without the extension).
    pub fn client(&self, name: &str, subject: &str, sans: &[&str]) -> ClientCert {
        self.issue(name, subject, sans, "clientAuth");
        let cert = self.dir.join(format!("{name}.crt"));
        let cert_arg = cert.to_string_lossy().into_owned();
        let subject = openssl(
            &self.dir,
            &[
                "x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", &cert_arg,
            ],
        );
        let fingerprint = openssl(
            &self.dir,
            &[
                "x509",
                "-noout",
                "-fingerprint",
                "-sha256",
                "-in",
                &cert_arg,
            ],
        );
        ClientCert {
            key: self.dir.join(format!("{name}.key")),
            cert,
            subject: subject
                .strip_prefix("subject=")
                .unwrap_or(&subject)
                .to_owned(),
            fingerprint: fingerprint
                .split_once('=')
                .map_or(fingerprint.as_str(), |(_, f)| f)
                .to_owned(),
        }
    }

    fn issue(&self, name: &str, subject: &str, sans: &[&str], usage: &str) {
        let mut ext = format!("extendedKeyUsage={usage}\nbasicConstraints=critical,CA:FALSE\n");
        if !sans.is_empty() {
            ext.push_str(&format!("subjectAltName={}\n", sans.join(",")));
        }
        let ext_file = format!("{name}.ext");
        std::fs::write(self.dir.join(&ext_file), ext).expect("write extensions");
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        openssl(
            &self.dir,
            &[
                &["req", "-nodes", "-utf8"][..],
                &EC_KEY,
                &["-keyout", &key, "-out", &csr, "-subj", subject],
            ]
            .concat(),
        );
        let ca_cert = self.ca_cert.to_string_lossy().into_owned();
        let ca_key = self.ca_key.to_string_lossy().into_owned();
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_cert,
                "-CAkey",
                &ca_key,
                "-set_serial",
                &serial(),
                "-days",
                "2",
                "-extfile",
                &ext_file,
                "-out",
                &crt,
            ],
        );
    }

    /// The listener's TLS: this server certificate, client certificates validated against this
    /// CA but not required (so the filters decide), ALPN h2 and HTTP/1.1.
    pub fn server(&self) -> ServerTls {
        ServerTls {
            pki: self.clone(),
            validate_clients: true,
            require_client_certificate: false,
            accept_untrusted: false,
        }
    }

    /// A client that trusts this CA and presents no certificate.
    pub fn trust(&self) -> ClientTls {
        ClientTls {
            ca: self.ca_cert.clone(),
            cert: None,
        }
    }
}

/// A listener's `DownstreamTlsContext`, rendered by [`ServerTls::transport_socket`].
#[derive(Debug, Clone)]
pub struct ServerTls {
    pki: Pki,
    validate_clients: bool,
    require_client_certificate: bool,
    accept_untrusted: bool,
}

impl ServerTls {
    /// Envoy itself refuses handshakes without a client certificate.
    pub fn require_client_certificate(mut self) -> Self {
        self.require_client_certificate = true;
        self
    }

    /// No `validation_context`: Envoy asks for no client certificate (and gets none).
    pub fn without_client_validation(mut self) -> Self {
        self.validate_clients = false;
        self
    }

    /// `trust_chain_verification: ACCEPT_UNTRUSTED`: certificates from any CA are accepted (the
    /// setting the client-certificate README warns against).
    pub fn accept_untrusted(mut self) -> Self {
        self.accept_untrusted = true;
        self
    }

    /// The listener's `transport_socket`.
    pub fn transport_socket(&self) -> Value {
        let mut common = json!({
            "alpn_protocols": ["h2", "http/1.1"],
            "tls_certificates": [{
                "certificate_chain": {"filename": self.pki.server_cert},
                "private_key": {"filename": self.pki.server_key},
            }],
        });
        if self.validate_clients {
            let mut validation = json!({"trusted_ca": {"filename": self.pki.ca_cert}});
            if self.accept_untrusted {
                validation["trust_chain_verification"] = json!("ACCEPT_UNTRUSTED");
            }
            common["validation_context"] = validation;
        }
        json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": self.require_client_certificate,
                "common_tls_context": common,
            },
        })
    }
}

/// What an HTTPS client trusts and presents.
#[derive(Debug, Clone)]
pub struct ClientTls {
    ca: PathBuf,
    cert: Option<ClientCert>,
}

impl ClientTls {
    /// Presents `cert` in the handshake.
    pub fn with_cert(mut self, cert: &ClientCert) -> Self {
        self.cert = Some(cert.clone());
        self
    }

    /// An Envoy cluster `transport_socket` that connects with this client's certificate and
    /// verifies the server against its CA (for a gateway in front of a TLS gateway, e.g. when a
    /// load generator cannot present client certificates).
    pub fn upstream_transport_socket(&self) -> Value {
        let mut common = json!({"validation_context": {"trusted_ca": {"filename": self.ca}}});
        if let Some(cert) = &self.cert {
            common["tls_certificates"] = json!([{
                "certificate_chain": {"filename": cert.cert},
                "private_key": {"filename": cert.key},
            }]);
        }
        json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": common,
            },
        })
    }
}

/// Sends one request over HTTPS to `target` (an IPv4 loopback address; the server certificate
/// is for 127.0.0.1), over HTTP/2 when `http2` (negotiated by ALPN), else HTTP/1.1. `Err` is
/// curl's error, e.g. a refused handshake.
pub fn https(
    target: SocketAddr,
    req: &Request,
    tls: &ClientTls,
    http2: bool,
) -> Result<Response, String> {
    let mut args: Vec<&OsStr> = vec![
        if http2 { "--http2" } else { "--http1.1" }.as_ref(),
        "--cacert".as_ref(),
        tls.ca.as_os_str(),
    ];
    if let Some(cert) = &tls.cert {
        args.extend([
            "--cert".as_ref(),
            cert.cert.as_os_str(),
            "--key".as_ref(),
            cert.key.as_os_str(),
        ]);
    }
    let url = format!("https://{target}{}", req.path);
    let (version, response) = curl(&url, req, &args)?;
    let expected = if http2 { "HTTP/2" } else { "HTTP/1.1" };
    assert_eq!(version, expected, "negotiated protocol");
    Ok(response)
}
