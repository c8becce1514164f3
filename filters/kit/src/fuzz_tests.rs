//! Randomized robustness tests of the kit's parsers of client input: whatever bytes arrive,
//! nothing panics, and what is accepted satisfies each parser's contract. Deterministic (a fixed
//! xorshift seed), so a failure reproduces.

use crate::address::{nth_from_right, parse_address};
use crate::credentials::parse_basic;
use crate::selector::{cookie, query_param, without_query_param, Selector};
use crate::wire::deserialize_pairs;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A string biased towards the characters the parsers treat specially.
    fn text(&mut self, max_len: usize) -> String {
        const SPECIAL: &[&str] = &[
            ":", "[", "]", ".", ",", " ", "%", "%2", "%zz", "+", "&", "=", "?", "#", ";", "\"",
            "ffff", "::", "1", "255", "256", "Basic ", "basic", "YTpi", "==", "é", "\u{0}", "\t",
        ];
        let len = (self.next() % max_len as u64) as usize;
        let mut s = String::new();
        for _ in 0..len {
            match self.next() % 3 {
                0 => s.push_str(SPECIAL[(self.next() % SPECIAL.len() as u64) as usize]),
                1 => s.push(char::from(b'0' + (self.next() % 10) as u8)),
                _ => s.push(char::from_u32((self.next() % 0x250) as u32).unwrap_or('x')),
            }
        }
        s
    }
}

#[test]
fn client_input_parsers_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let s = rng.text(40);
        // Accepted addresses are normalized: never an IPv4-mapped IPv6 address.
        if let Some(std::net::IpAddr::V6(v6)) = parse_address(&s) {
            assert!(v6.to_ipv4_mapped().is_none(), "{s:?}");
        }
        let _ = nth_from_right(&s, (rng.next() % 4) as u32);
        if let Ok(c) = parse_basic(&s) {
            assert!(!c.username.contains(':'), "{s:?}");
        }
        let _ = query_param(&s, "k");
        let _ = without_query_param(&s, "k");
        let _ = cookie(&s, "k");
        let _ = s.parse::<Selector>();
        let _ = crate::config::parse::<serde_json::Value>(s.as_bytes());
    }
}

#[test]
fn basic_credentials_round_trip() {
    use base64::Engine;
    let mut rng = Rng(42);
    for _ in 0..5_000 {
        let user = rng.text(12).replace(':', "");
        let pass = rng.text(20);
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        );
        let c = parse_basic(&header).unwrap();
        assert_eq!((c.username, c.password), (user, pass));
    }
}

#[test]
fn header_list_decoder_never_panics_on_garbage() {
    let mut rng = Rng(7);
    for _ in 0..20_000 {
        let len = (rng.next() % 64) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| (rng.next() % 8) as u8).collect();
        let _ = deserialize_pairs(&bytes);
    }
}
