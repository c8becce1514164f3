//! The sample upstream for `make demo`: echoes every request as JSON.
//! Usage: `palisade-echo [port]` (default 8081), on 127.0.0.1.

fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8081);
    let upstream = palisade_tests::Upstream::start_on(port);
    eprintln!("echo upstream on 127.0.0.1:{}", upstream.port());
    loop {
        std::thread::park();
    }
}
