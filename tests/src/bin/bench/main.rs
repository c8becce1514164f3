//! `make bench`: drives load through bare Envoy, Envoy with each Palisade policy, the same
//! number of do-nothing wasm filters (the floor), and Envoy with the closest native filter doing
//! the same work, in the same run, and prints requests/s, latency percentiles, Envoy CPU time
//! per request, Envoy's RSS and ratios.
//!
//! Method (see BENCHMARKS.md): every configuration of a group is started, probed (the benchmark
//! request must get a 200) and warmed up for 1 s; then `BENCH_RUNS` rounds each run every
//! configuration for `BENCH_SECONDS` in turn (interleaved, so a change of machine load hits all
//! rows alike), and each row reports its median run (by requests/s; the mean of the middle two
//! for an even count). `BENCH_MODE` picks the layout:
//!
//! * `pinned` (default): Envoy with one worker pinned to core 0, `wrk -t1 -c32` (and this
//!   runner) pinned to core 1. The steadiest figures on a shared 2-core machine.
//! * `shared`: Envoy with `--concurrency 2` and `wrk -t2 -c32`, nothing pinned, 2 rounds by
//!   default: the layout of issue 14's table.
//!
//! CPU µs/request (Envoy's user+system time over requests served) is the steadiest figure.
//!
//! Usage: `palisade-bench [group...]`; groups are policy names (default: all), plus `chain`
//! (the six-policy chain) and `memory` (Envoy's RSS with each policy, 2 workers;
//! `memory=ip-filter,chain` measures only those groups, with bare Envoy and the floor).

use palisade_tests::{ClientTls, Filter, GatewayBuilder, MockServer, ServerTls};
use std::process::Command;
use std::sync::OnceLock;

/// What a configuration is compared as.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bare,
    /// Do-nothing wasm filters in place of the policies (`examples/noop`).
    Floor,
    Palisade,
    Native,
}

/// One configuration to measure.
#[derive(Clone)]
pub struct Row {
    label: String,
    kind: Kind,
    /// Everything but the filters (route, clusters, workers, TLS).
    gateway: GatewayBuilder,
    filters: Vec<Filter>,
    /// For a TLS gateway: the client-side Envoy's TLS (see [`Row::over_tls`]).
    front: Option<ClientTls>,
    /// Left out of the results (with a message) when Envoy refuses it or it does not serve.
    optional: bool,
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

    /// Routes to a loopback upstream answering `200 ok` to `/bench` after reading the whole
    /// request, instead of Envoy's direct response (which answers at the request headers).
    pub fn routed(mut self) -> Row {
        static SINK: OnceLock<MockServer> = OnceLock::new();
        let sink = SINK.get_or_init(|| {
            let server = MockServer::start();
            server.respond("/bench", 200, "ok\n");
            server
        });
        self.gateway = self.gateway.upstream_port(sink.port());
        self
    }

    /// Skipped rather than failing the run when it cannot be measured (an artifact another
    /// crate builds, which may be missing or out of date).
    pub fn optional(mut self) -> Row {
        self.optional = true;
        self
    }

    fn wasm_filters(&self) -> usize {
        self.filters
            .iter()
            .filter(|f| matches!(f, Filter::Wasm { .. }))
            .count()
    }

    /// The same configuration with every wasm filter replaced by the do-nothing module: what
    /// any proxy-wasm filter in that place costs, so `policy / floor` is the policy's own cost.
    fn floor(&self) -> Row {
        let filters: Vec<Filter> = self
            .filters
            .iter()
            .map(|f| match f {
                Filter::Wasm { .. } => Filter::wasm("noop", ""),
                native => native.clone(),
            })
            .collect();
        let mut names: Vec<String> = Vec::new();
        let noops = self.wasm_filters();
        if noops > 0 {
            names.push(if noops == 1 {
                "1 noop (wasm)".into()
            } else {
                format!("{noops} × noop (wasm)")
            });
        }
        for f in &filters {
            if let Filter::Native(v) = f {
                let name = v["name"].as_str().unwrap_or("native");
                names.push(name.trim_start_matches("envoy.filters.http.").to_owned());
            }
        }
        Row {
            label: format!("floor: {}", names.join(" + ")),
            kind: Kind::Floor,
            gateway: self.gateway.clone(),
            filters,
            front: self.front.clone(),
            optional: self.optional,
        }
    }

    fn builder(&self) -> GatewayBuilder {
        self.filters
            .iter()
            .fold(self.gateway.clone(), |g, f| g.filter(f.clone()))
    }
}

/// A comparison: the same request through each configuration.
#[derive(Clone)]
pub struct Group {
    /// The policy name (selects the group on the command line).
    pub name: &'static str,
    /// What is measured.
    pub about: &'static str,
    /// Headers of the benchmark request. A `:method` entry sets its method (default `GET`),
    /// e.g. `OPTIONS` for CORS preflights; a `:body-file` entry names a file whose contents
    /// are the request body; a `:tokens-file` entry names a file of tokens, one a line, sent as
    /// `authorization: Bearer <token>` in turn (a different token every request).
    pub headers: Vec<(&'static str, String)>,
    /// The configurations: a bare one, the policy, its native counterpart. A floor row for
    /// each number of wasm filters among the policy rows is added by the runner.
    pub rows: Vec<Row>,
    /// A body the policy rows must refuse (not 200): proves the policy sees the body in this
    /// filter chain.
    pub refused_body: Option<Vec<u8>>,
}

/// How load is laid out on the machine (`BENCH_MODE`).
struct Mode {
    name: &'static str,
    /// Envoy workers (`--concurrency`).
    workers: u32,
    /// wrk threads.
    threads: u32,
    /// Envoy on core 0, wrk and this runner on core 1.
    pinned: bool,
    default_runs: u64,
}

fn mode() -> &'static Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    MODE.get_or_init(|| match std::env::var("BENCH_MODE").as_deref() {
        Ok("shared") => Mode {
            name: "shared",
            workers: 2,
            threads: 2,
            pinned: false,
            default_runs: 2,
        },
        Ok("pinned") | Err(_) => Mode {
            name: "pinned",
            workers: 1,
            threads: 1,
            pinned: true,
            default_runs: 3,
        },
        Ok(other) => panic!("BENCH_MODE={other}: expected `pinned` or `shared`"),
    })
}

/// A configuration with these filters on a direct-response route, with the mode's workers.
pub fn row(label: &str, kind: Kind, filters: Vec<Filter>) -> Row {
    Row {
        label: label.into(),
        kind,
        gateway: GatewayBuilder::new().concurrency(mode().workers),
        filters,
        front: None,
        optional: false,
    }
}

/// Envoy with no filter.
pub fn bare() -> Row {
    row("bare Envoy (no filter)", Kind::Bare, vec![])
}

/// The groups named on the command line (empty: all).
fn wanted() -> Vec<String> {
    std::env::args().skip(1).collect()
}

/// The groups the memory pass measures: every group for `memory`, only the named ones for
/// `memory=<group>,<group>` (bare Envoy and the floor are always measured); `None` when the
/// command line asks for no memory pass.
fn memory_groups() -> Option<Vec<String>> {
    let mut pass: Option<Vec<String>> = None;
    for w in wanted() {
        if w == "memory" {
            return Some(Vec::new());
        }
        if let Some(list) = w.strip_prefix("memory=") {
            pass.get_or_insert_with(Vec::new)
                .extend(list.split(',').filter(|n| !n.is_empty()).map(str::to_owned));
        }
    }
    pass
}

/// Whether the memory pass measures group `name` (`memory_groups`: empty means every group).
fn memory_selects(name: &str) -> bool {
    memory_groups().is_some_and(|only| only.is_empty() || only.iter().any(|n| n == name))
}

/// Whether the command line selects group `name` (some groups are costly to build: a Node.js
/// key server, thousands of signed tokens; they are left empty when not selected), for its own
/// benchmark or for the memory pass.
pub fn selected(name: &str) -> bool {
    let wanted = wanted();
    wanted.is_empty() || wanted.iter().any(|w| w == name) || memory_selects(name)
}

mod basic_auth;
mod body;
mod chain;
mod client_certificate;
mod client_id_enforcement;
mod cors;
mod host_calls;
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
        client_id_enforcement::group(client_id_enforcement::SIZES[0]),
        client_id_enforcement::group(client_id_enforcement::SIZES[1]),
        jwt_validation::group(),
        jwt_validation::unique_group(),
        jwt_validation::es256_group(),
        jwt_validation::es256_unique_group(),
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
        chain::group(),
        chain::members_group(),
        host_calls::group(),
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

impl Sample {
    fn mean(a: Sample, b: Sample) -> Sample {
        let m = |x: f64, y: f64| (x + y) / 2.0;
        Sample {
            rps: m(a.rps, b.rps),
            p50_us: m(a.p50_us, b.p50_us),
            p90_us: m(a.p90_us, b.p90_us),
            p99_us: m(a.p99_us, b.p99_us),
            cpu_us_per_req: m(a.cpu_us_per_req, b.cpu_us_per_req),
        }
    }
}

/// The median run by requests/s (the mean of the middle two for an even count).
fn median(mut samples: Vec<Sample>) -> Sample {
    samples.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    let n = samples.len();
    match n {
        0 => Sample::default(),
        _ if n % 2 == 1 => samples[n / 2],
        _ => Sample::mean(samples[n / 2 - 1], samples[n / 2]),
    }
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

/// The process's resident set size, in MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Pins every thread of `pid` to `core`.
fn pin(pid: u32, core: &str) {
    let _ = Command::new("taskset")
        .args(["-a", "-cp", core, &pid.to_string()])
        .output();
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
    let mut cmd = if mode().pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", "1", "wrk"]);
        c
    } else {
        Command::new("wrk")
    };
    let out = cmd
        .arg(format!("-t{}", mode().threads))
        .args(["-c32", &format!("-d{seconds}s"), "--latency", "-s"])
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

/// The value of the pseudo-header `name` in the group's headers.
fn pseudo<'a>(headers: &'a [(&str, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

/// The request method: the `:method` entry of the headers, else `GET`.
fn method_of<'a>(headers: &'a [(&str, String)]) -> &'a str {
    pseudo(headers, ":method").unwrap_or("GET")
}

/// The request body's size: the file named by the `:body-file` entry, if any.
fn body_bytes(headers: &[(&str, String)]) -> Option<u64> {
    pseudo(headers, ":body-file")
        .and_then(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
}

fn lua_script(dir: &std::path::Path, headers: &[(&str, String)]) -> std::path::PathBuf {
    let mut lua = format!("wrk.method = {:?}\n", method_of(headers));
    for (n, v) in headers.iter().filter(|(n, _)| !n.starts_with(':')) {
        lua.push_str(&format!("wrk.headers[{n:?}] = {v:?}\n"));
    }
    if let Some(file) = pseudo(headers, ":body-file") {
        lua.push_str(&format!(
            "local f = io.open({file:?}, \"rb\")\nwrk.body = f:read(\"*a\")\nf:close()\n"
        ));
    }
    if let Some(file) = pseudo(headers, ":tokens-file") {
        // Each wrk thread walks the list from its own offset (set in the main state by
        // `setup`), so no two threads send the same token close together.
        lua.push_str(&format!(
            r#"local tokens = {{}}
for line in io.lines({file:?}) do tokens[#tokens + 1] = line end
local threads = 0
function setup(thread)
  thread:set("cursor", math.floor(#tokens * threads / {n}))
  threads = threads + 1
end
function request()
  cursor = (cursor or 0) % #tokens + 1
  wrk.headers["authorization"] = "Bearer " .. tokens[cursor]
  return wrk.format()
end
"#,
            n = mode().threads
        ));
    }
    let path = dir.join("request.lua");
    std::fs::write(&path, lua).expect("write wrk script");
    path
}

/// The benchmark request as the harness's client sends it (the first token of a token list).
fn probe_request(headers: &[(&str, String)]) -> palisade_tests::Request {
    let mut probe = palisade_tests::Request::new(method_of(headers), "/bench");
    for (n, v) in headers.iter().filter(|(n, _)| !n.starts_with(':')) {
        probe = probe.header(n, v);
    }
    if let Some(file) = pseudo(headers, ":body-file") {
        probe = probe.body(std::fs::read(file).expect("read the benchmark body"));
    }
    if let Some(file) = pseudo(headers, ":tokens-file") {
        let tokens = std::fs::read_to_string(file).expect("read the benchmark tokens");
        let first = tokens.lines().next().unwrap_or_default();
        probe = probe.header("authorization", &format!("Bearer {first}"));
    }
    probe
}

/// A configuration started, probed and warmed up, ready for measured runs.
struct Running {
    gateway: palisade_tests::Gateway,
    /// The client-side Envoy in front of a TLS gateway.
    _front: Option<palisade_tests::Gateway>,
    url: String,
    script: std::path::PathBuf,
}

/// Starts `row`; `None` for an optional row that cannot be measured.
fn start(row: &Row, group: &Group) -> Option<Running> {
    let gateway = match row.builder().try_start() {
        Ok(gateway) => gateway,
        Err(log) if row.optional => {
            let last = log.lines().rev().take(3).collect::<Vec<_>>().join(" / ");
            eprintln!("   {}: Envoy refused it, left out ({last})", row.label);
            return None;
        }
        Err(log) => panic!("{}: Envoy did not start:\n{log}", row.label),
    };
    if mode().pinned {
        pin(gateway.pid(), "0");
    }
    // A TLS gateway is loaded through a client-side Envoy on wrk's core.
    let front = row.front.as_ref().map(|client| {
        let front = GatewayBuilder::new()
            .concurrency(1)
            .upstream_port(gateway.addr().port())
            .upstream_tls(client)
            .start();
        if mode().pinned {
            pin(front.pid(), "1");
        }
        front
    });
    let target = front.as_ref().unwrap_or(&gateway);
    let url = format!("http://{}/bench", target.addr());
    let script = lua_script(&palisade_tests::scratch_dir("bench"), &group.headers);
    // Check the configuration really serves (a denied request would measure the wrong thing).
    let probe = probe_request(&group.headers);
    // Policies that load state in the background (a registry, keys) may need a moment, and on
    // a loaded machine the first requests into fresh VMs can be slow.
    let status_of = |req: &palisade_tests::Request| {
        palisade_tests::Connection::new(target.addr())
            .send(req)
            .map_or(0, |r| r.status)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut status = status_of(&probe);
    while status != 200 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
        status = status_of(&probe);
    }
    if status != 200 && row.optional {
        eprintln!(
            "   {}: the benchmark request got {status}, left out",
            row.label
        );
        return None;
    }
    assert_eq!(
        status, 200,
        "{}: the benchmark request is not allowed",
        row.label
    );
    if let (Some(body), Kind::Palisade) = (&group.refused_body, row.kind) {
        let refused = status_of(&probe.clone().body(body.clone()));
        assert!(
            refused != 200 && refused != 0,
            "{}: a body the policy must refuse got {refused}: the policy does not see the body",
            row.label
        );
    }
    wrk(&url, &script, 1);
    Some(Running {
        gateway,
        _front: front,
        url,
        script,
    })
}

/// One measured run.
fn run(running: &Running) -> Sample {
    let pid = running.gateway.pid();
    let before = cpu_ticks(pid);
    let (mut s, requests) = wrk(&running.url, &running.script, env_num("BENCH_SECONDS", 5));
    let ticks = cpu_ticks(pid) - before;
    // CLK_TCK is 100 on Linux: a tick is 10 ms.
    s.cpu_us_per_req = ticks as f64 * 10_000.0 / requests.max(1) as f64;
    s
}

/// Adds a floor row for each number of wasm filters among the policy rows (after the bare
/// rows), unless the group has its own.
fn with_floors(group: &mut Group) {
    if group.rows.iter().any(|r| r.kind == Kind::Floor) {
        return;
    }
    let mut floors: Vec<Row> = Vec::new();
    for r in group.rows.iter().filter(|r| r.kind == Kind::Palisade) {
        if !floors.iter().any(|f| f.wasm_filters() == r.wasm_filters()) {
            floors.push(r.floor());
        }
    }
    let at = group
        .rows
        .iter()
        .position(|r| r.kind != Kind::Bare)
        .unwrap_or(group.rows.len());
    group.rows.splice(at..at, floors);
}

fn ratio(x: f64, base: Option<f64>) -> String {
    base.map_or("–".into(), |b| format!("{:.2}×", x / b))
}

fn measure_group(mut group: Group, report: &mut String) {
    eprintln!("== {} ({})", group.name, group.about);
    let started: Vec<Option<Running>> = group.rows.iter().map(|r| start(r, &group)).collect();
    let mut rows = std::mem::take(&mut group.rows);
    let mut kept = started.iter().map(Option::is_some);
    rows.retain(|_| kept.next().unwrap_or(false));
    group.rows = rows;
    let running: Vec<Running> = started.into_iter().flatten().collect();
    let mut runs: Vec<Vec<Sample>> = vec![Vec::new(); running.len()];
    for round in 0..env_num("BENCH_RUNS", mode().default_runs) {
        for ((r, g), samples) in group.rows.iter().zip(&running).zip(&mut runs) {
            let s = run(g);
            eprintln!(
                "   round {round} {:<50} {:>9.0} rps  {:>7.1} µs/req",
                r.label, s.rps, s.cpu_us_per_req
            );
            samples.push(s);
        }
    }
    let rss: Vec<f64> = running.iter().map(|g| rss_mib(g.gateway.pid())).collect();
    drop(running);
    let results: Vec<(&Row, Sample, f64)> = group
        .rows
        .iter()
        .zip(runs)
        .zip(rss)
        .map(|((r, samples), rss)| (r, median(samples), rss))
        .collect();
    let find = |kind: Kind, wasm: Option<usize>| {
        results
            .iter()
            .find(|(r, _, _)| r.kind == kind && wasm.is_none_or(|n| r.wasm_filters() == n))
            .map(|(_, s, rss)| (*s, *rss))
    };
    let (bare, native) = (find(Kind::Bare, None), find(Kind::Native, None));
    // Throughput in MB/s where the body is what is measured (4 KB or more).
    let body = body_bytes(&group.headers).filter(|&bytes| bytes >= 4096);
    report.push_str(&format!("### {}: {}\n\n", group.name, group.about));
    report.push_str("| configuration | req/s |");
    if body.is_some() {
        report.push_str(" MB/s |");
    }
    report.push_str(" p50 | p90 | p99 | Envoy CPU µs/req | RSS MiB | req/s vs bare | req/s vs floor | CPU µs/req over floor | RSS MiB over floor | req/s vs native | CPU µs/req vs native |\n|---|---:|");
    if body.is_some() {
        report.push_str("---:|");
    }
    report.push_str("---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (r, s, rss) in &results {
        let floor = match r.kind {
            Kind::Palisade => find(Kind::Floor, Some(r.wasm_filters())),
            _ => None,
        };
        let native = native.filter(|_| r.kind == Kind::Palisade);
        let dash = || "–".to_string();
        report.push_str(&format!("| {} | {:.0} |", r.label, s.rps));
        if let Some(bytes) = body {
            report.push_str(&format!(" {:.1} |", s.rps * bytes as f64 / 1e6));
        }
        report.push_str(&format!(
            " {:.0} µs | {:.0} µs | {:.0} µs | {:.1} | {:.0} | {} | {} | {} | {} | {} | {} |\n",
            s.p50_us,
            s.p90_us,
            s.p99_us,
            s.cpu_us_per_req,
            rss,
            if r.kind == Kind::Bare {
                dash()
            } else {
                ratio(s.rps, bare.map(|b| b.0.rps))
            },
            ratio(s.rps, floor.map(|f| f.0.rps)),
            floor.map_or_else(dash, |f| format!(
                "{:+.1}",
                s.cpu_us_per_req - f.0.cpu_us_per_req
            )),
            floor.map_or_else(dash, |f| format!("{:+.0}", rss - f.1)),
            ratio(s.rps, native.map(|n| n.0.rps)),
            ratio(s.cpu_us_per_req, native.map(|n| n.0.cpu_us_per_req)),
        ));
    }
    report.push('\n');
}

/// Envoy's RSS with each policy (the first policy row of each group, and the bundle) and with
/// the floor, at 2 workers, after 2 s of the group's load.
fn measure_memory(groups: &[Group], report: &mut String) {
    eprintln!("== memory (2 workers)");
    let mut measured: Vec<(String, f64)> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    let mut rss_of = |row: &Row, group: &Group| {
        let mut row = row.clone();
        row.gateway = row.gateway.concurrency(2);
        if row.kind == Kind::Palisade {
            // Two groups may share a policy row's label (RS256 and ES256).
            row.label = format!("{}: {}", group.name, row.label);
        }
        let Some(running) = start(&row, group) else {
            return;
        };
        let _ = wrk(&running.url, &running.script, 2);
        let rss = rss_mib(running.gateway.pid());
        eprintln!("   {:<60} {:>6.0} MiB", row.label, rss);
        measured.push((row.label, rss));
    };
    let simple = Group {
        name: "memory",
        about: "",
        headers: vec![],
        rows: vec![],
        refused_body: None,
    };
    rss_of(&bare(), &simple);
    rss_of(
        &row(
            "floor: 1 noop (wasm)",
            Kind::Floor,
            vec![Filter::wasm("noop", "")],
        ),
        &simple,
    );
    for group in groups
        .iter()
        .filter(|g| !g.rows.is_empty() && memory_selects(g.name))
    {
        if seen.contains(&group.name) {
            continue;
        }
        seen.push(group.name);
        // The first policy row, and the bundle (the chain group's six policies in one filter):
        // issue 14 compares both forms of the chain with bare Envoy.
        let policy_rows = group.rows.iter().filter(|r| r.kind == Kind::Palisade);
        for (i, r) in policy_rows.enumerate() {
            if i == 0 || r.label.starts_with("bundle") {
                rss_of(r, group);
            }
        }
    }
    let floor = measured.get(1).map(|(_, rss)| *rss);
    report.push_str("### memory: Envoy RSS after 2 s of load, 2 workers\n\n");
    report.push_str("| configuration | RSS MiB | MiB over bare | MiB over the 1-filter floor |\n|---|---:|---:|---:|\n");
    let bare_rss = measured.first().map(|(_, rss)| *rss);
    for (label, rss) in &measured {
        let over = |base: Option<f64>| base.map_or("–".into(), |b| format!("{:+.0}", rss - b));
        report.push_str(&format!(
            "| {label} | {rss:.0} | {} | {} |\n",
            over(bare_rss),
            over(floor)
        ));
    }
    report.push('\n');
}

fn main() {
    let wanted = wanted();
    // Counted before pinning: afterwards this process sees one core.
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    if mode().pinned {
        // This runner (the upstreams it serves) shares wrk's core, away from Envoy's.
        pin(std::process::id(), "1");
    }
    let mut report = String::new();
    report.push_str(&format!(
        "Envoy {} · {} cores · `BENCH_MODE={}`: Envoy {} worker(s){}, `wrk -t{} -c32 -d{}s`{}, {} interleaved rounds, median\n\n",
        envoy_version(),
        cores,
        mode().name,
        mode().workers,
        if mode().pinned { " on core 0" } else { "" },
        mode().threads,
        env_num("BENCH_SECONDS", 5),
        if mode().pinned { " on core 1" } else { "" },
        env_num("BENCH_RUNS", mode().default_runs),
    ));
    let groups = groups();
    for mut group in groups
        .iter()
        .filter(|g| wanted.is_empty() || wanted.iter().any(|w| w == g.name))
        .filter(|g| !g.rows.is_empty())
        .cloned()
    {
        with_floors(&mut group);
        measure_group(group, &mut report);
    }
    if memory_groups().is_some() {
        measure_memory(&groups, &mut report);
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
