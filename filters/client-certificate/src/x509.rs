//! Just enough X.509 to list a certificate's URI and DNS subject alternative names.
//!
//! Envoy's attributes `connection.uri_san_peer_certificate` and `dns_san_peer_certificate` carry
//! only the *first* URI and DNS SAN. To match a certificate by a later SAN, the policy reads the
//! whole certificate (`connection.peer_certificate`, PEM) and walks its DER here: certificate →
//! `tbsCertificate` → `[3]` extensions → `subjectAltName` (2.5.29.17) → `GeneralNames`, keeping
//! `dNSName` (`[2]`) and `uniformResourceIdentifier` (`[6]`). Nothing else is interpreted: Envoy
//! has already validated the certificate. Every read is bounds-checked; malformed input yields
//! `None`, never a panic.
//!
//! Written by hand rather than with `x509-cert` (RustCrypto): decoding a whole certificate with
//! it added about 88 KB to a wasm module after `wasm-opt -Oz` (measured: 117 KB against a 29 KB
//! baseline with the same std use), some 40 % of this policy's artifact, for one extension whose
//! DER walk is the hundred lines below.

use base64::Engine;

/// The URI and DNS names of a certificate's `subjectAltName` extension, in certificate order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AltNames {
    /// `uniformResourceIdentifier` names (e.g. SPIFFE IDs).
    pub uris: Vec<String>,
    /// `dNSName` names.
    pub dns: Vec<String>,
}

/// The DER of the first `CERTIFICATE` block of a PEM text. Envoy 1.40 reports the peer
/// certificate as plain PEM; a URL-encoded PEM (what older Envoy documentation describes) is
/// accepted too.
pub fn pem_to_der(pem: &[u8]) -> Option<Vec<u8>> {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    const END: &[u8] = b"-----END CERTIFICATE-----";
    let decoded;
    let pem = if pem.contains(&b'%') {
        decoded = percent_decode(pem)?;
        decoded.as_slice()
    } else {
        pem
    };
    let start = find(pem, BEGIN)? + BEGIN.len();
    let rest = pem.get(start..)?;
    let body = rest.get(..find(rest, END)?)?;
    let base64: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(base64)
        .ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut bytes = input.iter();
    while let Some(&b) = bytes.next() {
        if b == b'%' {
            let hi = hex_value(*bytes.next()?)?;
            let lo = hex_value(*bytes.next()?)?;
            out.push(hi << 4 | lo);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

/// The value of one hex digit.
fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

const SEQUENCE: u8 = 0x30;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const OBJECT_IDENTIFIER: u8 = 0x06;
/// `[3] EXPLICIT Extensions` in `TBSCertificate`.
const EXTENSIONS: u8 = 0xa3;
/// `dNSName [2] IA5String` (implicit, primitive).
const DNS_NAME: u8 = 0x82;
/// `uniformResourceIdentifier [6] IA5String` (implicit, primitive).
const URI: u8 = 0x86;
/// 2.5.29.17, `id-ce-subjectAltName`.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// A cursor over consecutive DER elements.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The next element's tag and contents; `None` at the end or on malformed input (long-form
    /// tags, indefinite lengths, lengths past the input).
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.0.split_first()?;
        if tag & 0x1f == 0x1f {
            return None;
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 {
                return None;
            }
            let len = rest
                .get(..count)?
                .iter()
                .fold(0usize, |len, &b| len << 8 | usize::from(b));
            (len, rest.get(count..)?)
        };
        let value = rest.get(..len)?;
        self.0 = rest.get(len..)?;
        Some((tag, value))
    }

    /// The next element, which must have `tag`.
    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        self.next()
            .and_then(|(t, value)| (t == tag).then_some(value))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The URI and DNS SANs of a DER certificate (empty when it has no `subjectAltName`), or `None`
/// when the DER is not a certificate this reader understands.
pub fn alt_names(der: &[u8]) -> Option<AltNames> {
    let certificate = Der(der).expect(SEQUENCE)?;
    let mut tbs = Der(Der(certificate).expect(SEQUENCE)?);
    let mut names = AltNames::default();
    while let Some((tag, value)) = tbs.next() {
        if tag != EXTENSIONS {
            continue;
        }
        let mut extensions = Der(Der(value).expect(SEQUENCE)?);
        while let Some((tag, extension)) = extensions.next() {
            if tag != SEQUENCE {
                return None;
            }
            let mut fields = Der(extension);
            if fields.expect(OBJECT_IDENTIFIER)? != SUBJECT_ALT_NAME {
                continue;
            }
            let (mut tag, mut value) = fields.next()?;
            if tag == BOOLEAN {
                (tag, value) = fields.next()?; // `critical`
            }
            if tag != OCTET_STRING {
                return None;
            }
            let mut general_names = Der(Der(value).expect(SEQUENCE)?);
            while let Some((tag, name)) = general_names.next() {
                let list = match tag {
                    URI => &mut names.uris,
                    DNS_NAME => &mut names.dns,
                    _ => continue,
                };
                // IA5String: ASCII. Anything else can match no configured entry.
                if let Some(name) = std::str::from_utf8(name).ok().filter(|n| n.is_ascii()) {
                    list.push(name.to_owned());
                }
            }
            if !general_names.is_empty() {
                return None;
            }
        }
        if !extensions.is_empty() {
            return None;
        }
    }
    tbs.is_empty().then_some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const MULTI_SAN: &str = include_str!("testdata/multi-san.pem");
    pub const NO_SAN: &str = include_str!("testdata/no-san.pem");

    #[test]
    fn lists_every_uri_and_dns_san_in_order() {
        let der = pem_to_der(MULTI_SAN.as_bytes()).unwrap();
        assert_eq!(
            alt_names(&der).unwrap(),
            AltNames {
                uris: vec![
                    "spiffe://retail.example/ns/orders/sa/fulfillment".into(),
                    "spiffe://retail.example/ns/orders/sa/billing".into(),
                ],
                dns: vec!["gw.partner.example".into(), "Second.Partner.Example".into()],
            }
        );
    }

    #[test]
    fn a_certificate_without_the_extension_has_no_names() {
        let der = pem_to_der(NO_SAN.as_bytes()).unwrap();
        assert_eq!(alt_names(&der).unwrap(), AltNames::default());
    }

    #[test]
    fn url_encoded_pem_is_accepted() {
        let encoded: String = MULTI_SAN
            .bytes()
            .map(|b| match b {
                b'\n' => "%0A".to_owned(),
                b'+' => "%2B".to_owned(),
                b'/' => "%2F".to_owned(),
                b'=' => "%3D".to_owned(),
                b' ' => "%20".to_owned(),
                other => (other as char).to_string(),
            })
            .collect();
        assert_eq!(
            pem_to_der(encoded.as_bytes()),
            pem_to_der(MULTI_SAN.as_bytes())
        );
    }

    #[test]
    fn garbage_never_panics_and_truncations_are_refused() {
        assert_eq!(pem_to_der(b"not a certificate"), None);
        assert_eq!(
            pem_to_der(b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----"),
            None
        );
        assert_eq!(pem_to_der(b"%zz"), None);
        let der = pem_to_der(MULTI_SAN.as_bytes()).unwrap();
        for len in 0..der.len() {
            assert_eq!(alt_names(&der[..len]), None, "cut at {len}");
        }
        // Every single-byte corruption: no panic.
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0xff;
            let _ = alt_names(&bad);
        }
        // Pseudo-random inputs, including lengths that overflow.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let len = (seed % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed & 0xff) as u8
                })
                .collect();
            let _ = alt_names(&bytes);
            let _ = alt_names(&[&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff][..], &bytes].concat());
        }
    }
}
