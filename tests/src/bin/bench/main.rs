//! `make bench`: drives load through bare Envoy, Envoy with each Palisade policy, and Envoy with
//! the closest native filter doing the same work, in the same run, and prints requests/s,
//! latency percentiles and Envoy CPU time per request with ratios.
//!
//! Method (see BENCHMARKS.md): Envoy runs with one worker pinned to core 0 and wrk with one
//! thread and 32 connections pinned to core 1, on a direct-response route so only the filters
//! are measured. Each configuration gets a warm-up, then `BENCH_RUNS` runs of `BENCH_SECONDS`;
//! the median run (by requests/s) is reported. CPU µs/request (Envoy's user+system time over
//! requests served) is the steadiest figure on a shared machine.
//!
//! Usage: `palisade-bench [group...]`; groups are policy names (default: all).

use palisade_tests::{ClientTls, Filter, GatewayBuilder, ServerTls};
use std::process::Command;

/// What a configuration is compared as.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bare,
    Palisade,
    Native,
}

/// One configuration to measure.
pub struct Row {
    label: String,
    kind: Kind,
    gateway: GatewayBuilder,
    /// For a TLS gateway: the client-side Envoy's TLS (see [`Row::over_tls`]).
    front: Option<ClientTls>,
}

impl Row {
    /// Serves this configuration over TLS. wrk cannot present client certificates, so the load
    /// goes through a client-side Envoy (1 worker, pinned to core 1 with wrk, not measured) that
    /// keeps HTTP/1.1 connections to the gateway open and connects as `client`.
    pub fn over_tls(mut self, server: ServerTls, client: ClientTls) -> Row {
        self.gateway = self.gateway.tls(server);
        self.front = Some(client);
        self
    }
}

/// A comparison: the same request through each configuration.
pub struct Group {
    /// The policy name (selects the group on the command line).
    pub name: &'static str,
    /// What is measured.
    pub about: &'static str,
    /// Headers of the benchmark request. A `:method` entry sets its method (default `GET`),
    /// e.g. `OPTIONS` for CORS preflights; a `:body-file` entry names a file whose contents
    /// are the request body.
    pub headers: Vec<(&'static str, String)>,
    /// The configurations: a bare one, the policy, its native counterpart.
    pub rows: Vec<Row>,
}

/// A configuration with these filters on a direct-response route, one worker.
pub fn row(label: &str, kind: Kind, filters: Vec<Filter>) -> Row {
    let mut gateway = GatewayBuilder::new().concurrency(1);
    for f in filters {
        gateway = gateway.filter(f);
    }
    Row {
        label: label.into(),
        kind,
        gateway,
        front: None,
    }
}

/// Envoy with no filter.
pub fn bare() -> Row {
    row("bare Envoy (no filter)", Kind::Bare, vec![])
}

mod basic_auth;
mod body;
mod client_certificate;
mod client_id_enforcement;
mod cors;
mod ip_filter;
mod json_threat_protection;
mod jwt_validation;
mod rate_limiting;
mod spike_control;
mod token_introspection;
mod xml_threat_protection;

/// All benchmark groups: each policy adds a module with a `group()` and a line here.
fn groups() -> Vec<Group> {
    vec![
        ip_filter::group(),
        cors::group(),
        cors::preflight_group(),
        client_id_enforcement::group(),
        jwt_validation::group(),
        jwt_validation::es256_group(),
        token_introspection::group(),
        basic_auth::group(),
        client_certificate::group(),
        json_threat_protection::group(),
        json_threat_protection::small_group(),
        rate_limiting::group(),
        rate_limiting::contention_group(),
        spike_control::group(),
        xml_threat_protection::group(),
        xml_threat_protection::small_group(),
    ]
}

#[derive(Clone, Copy, Default)]
struct Sample {
    rps: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    cpu_us_per_req: f64,
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

fn parse_latency_us(text: &str) -> f64 {
    let text = text.trim();
    let (num, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1_000.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        (text, 1.0)
    };
    num.parse::<f64>().unwrap_or(f64::NAN) * scale
}

fn wrk(url: &str, script: &std::path::Path, seconds: u64) -> (Sample, u64) {
    let out = Command::new("taskset")
        .args([
            "-c",
            "1",
            "wrk",
            "-t1",
            "-c32",
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .expect("run wrk (install it with scripts/install-toolchain.sh wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut s = Sample::default();
    let mut requests = 0;
    for line in text.lines() {
        let line = line.trim();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("50%") => s.p50_us = parse_latency_us(words.next().unwrap_or_default()),
            Some("90%") => s.p90_us = parse_latency_us(words.next().unwrap_or_default()),
            Some("99%") => s.p99_us = parse_latency_us(words.next().unwrap_or_default()),
            Some("Requests/sec:") => {
                s.rps = words.next().and_then(|v| v.parse().ok()).unwrap_or(0.0)
            }
            Some(n) if line.contains("requests in") => requests = n.parse().unwrap_or(0),
            _ => {}
        }
    }
    (s, requests)
}

/// The request method: the `:method` entry of the headers, else `GET`.
fn method_of<'a>(headers: &'a [(&str, String)]) -> &'a str {
    headers
        .iter()
        .find(|(n, _)| *n == ":method")
        .map_or("GET", |(_, v)| v.as_str())
}

/// The request body: the file named by the `:body-file` entry of the headers, if any.
fn body_file_of<'a>(headers: &'a [(&str, String)]) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| *n == ":body-file")
        .map(|(_, v)| v.as_str())
}

fn lua_script(dir: &std::path::Path, headers: &[(&str, String)]) -> std::path::PathBuf {
    let mut lua = format!("wrk.method = {:?}\n", method_of(headers));
    for (n, v) in headers.iter().filter(|(n, _)| !n.starts_with(':')) {
        lua.push_str(&format!("wrk.headers[{n:?}] = {v:?}\n"));
    }
    if let Some(file) = body_file_of(headers) {
        lua.push_str(&format!(
            "local f = io.open({file:?}, \"rb\")\nwrk.body = f:read(\"*a\")\nf:close()\n"
        ));
    }
    let path = dir.join("request.lua");
    std::fs::write(&path, lua).expect("write wrk script");
    path
}

fn measure(row: &Row, headers: &[(&str, String)]) -> Sample {
    let gw = row.gateway.clone().start();
    let _ = Command::new("taskset")
        .args(["-a", "-cp", "0", &gw.pid().to_string()])
        .output();
    // A TLS gateway is loaded through a client-side Envoy on wrk's core.
    let front = row.front.as_ref().map(|client| {
        let front = GatewayBuilder::new()
            .concurrency(1)
            .upstream_port(gw.addr().port())
            .upstream_tls(client)
            .start();
        let _ = Command::new("taskset")
            .args(["-a", "-cp", "1", &front.pid().to_string()])
            .output();
        front
    });
    let target = front.as_ref().unwrap_or(&gw);
    let url = format!("http://{}/bench", target.addr());
    let dir = palisade_tests::scratch_dir("bench");
    let script = lua_script(&dir, headers);
    // Check the configuration really serves (a denied request would measure the wrong thing).
    let mut probe = palisade_tests::Request::new(method_of(headers), "/bench");
    for (n, v) in headers.iter().filter(|(n, _)| !n.starts_with(':')) {
        probe = probe.header(n, v);
    }
    if let Some(file) = body_file_of(headers) {
        probe = probe.body(std::fs::read(file).expect("read the benchmark body"));
    }
    // Policies that load state in the background (a registry, keys) may need a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut status = target.send(&probe).status;
    while status != 200 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
        status = target.send(&probe).status;
    }
    assert_eq!(
        status, 200,
        "{}: the benchmark request is not allowed",
        row.label
    );

    let seconds = env_num("BENCH_SECONDS", 5);
    wrk(&url, &script, 1);
    let mut samples: Vec<Sample> = (0..env_num("BENCH_RUNS", 3))
        .map(|_| {
            let before = cpu_ticks(gw.pid());
            let (mut s, requests) = wrk(&url, &script, seconds);
            let ticks = cpu_ticks(gw.pid()) - before;
            // CLK_TCK is 100 on Linux: a tick is 10 ms.
            s.cpu_us_per_req = ticks as f64 * 10_000.0 / requests.max(1) as f64;
            s
        })
        .collect();
    samples.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    samples[samples.len() / 2]
}

fn main() {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    let mut report = String::new();
    report.push_str(&format!(
        "Envoy {} · {} cores · `wrk -t1 -c32 -d{}s`, median of {} runs · Envoy 1 worker on core 0, wrk on core 1\n\n",
        envoy_version(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        env_num("BENCH_SECONDS", 5),
        env_num("BENCH_RUNS", 3),
    ));
    for group in groups() {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == group.name) {
            continue;
        }
        eprintln!("== {} ({})", group.name, group.about);
        let results: Vec<(&Row, Sample)> = group
            .rows
            .iter()
            .map(|r| {
                let s = measure(r, &group.headers);
                eprintln!(
                    "   {:<34} {:>9.0} rps  {:>6.1} µs/req",
                    r.label, s.rps, s.cpu_us_per_req
                );
                (r, s)
            })
            .collect();
        let find = |k: Kind| results.iter().find(|(r, _)| r.kind == k).map(|(_, s)| *s);
        let (bare, native) = (find(Kind::Bare), find(Kind::Native));
        report.push_str(&format!("### {}: {}\n\n", group.name, group.about));
        report.push_str("| configuration | req/s | p50 | p90 | p99 | Envoy CPU µs/req | req/s vs bare | req/s vs native | CPU µs/req vs native |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for (r, s) in &results {
            let ratio = |base: Option<Sample>| {
                base.filter(|_| r.kind != Kind::Bare)
                    .map_or("–".to_string(), |b| format!("{:.2}×", s.rps / b.rps))
            };
            let vs_native = native
                .filter(|_| r.kind == Kind::Palisade)
                .map_or("–".to_string(), |n| {
                    format!("{:.2}×", s.cpu_us_per_req / n.cpu_us_per_req)
                });
            report.push_str(&format!(
                "| {} | {:.0} | {:.0} µs | {:.0} µs | {:.0} µs | {:.1} | {} | {} | {} |\n",
                r.label,
                s.rps,
                s.p50_us,
                s.p90_us,
                s.p99_us,
                s.cpu_us_per_req,
                ratio(bare),
                if r.kind == Kind::Palisade {
                    ratio(native)
                } else {
                    "–".into()
                },
                vs_native,
            ));
        }
        report.push('\n');
    }
    println!("{report}");
    let out = palisade_tests::root().join("target/bench-results.md");
    let _ = std::fs::write(&out, &report);
    eprintln!("(also written to {})", out.display());
}

fn envoy_version() -> String {
    let out = Command::new(palisade_tests::envoy_bin())
        .arg("--version")
        .output();
    // "<path>  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    out.ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let (_, version) = text.split_once("version: ")?;
            version.split('/').nth(1).map(str::to_owned)
        })
        .unwrap_or_else(|| "?".into())
}
