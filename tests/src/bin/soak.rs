//! `make soak` (`scripts/soak.sh`): the six-policy chain (ip-filter, cors, jwt-validation,
//! client-id-enforcement, rate-limiting, json-threat-protection, then Envoy's `buffer` filter
//! and the router to the echo upstream) in one Envoy with 2 workers, under sustained mixed load
//! for `SOAK_SECONDS` (default 120): several HTTP/1.1 keep-alive connections (`SOAK_CLIENTS`,
//! default 6) and one HTTP/2 client, each cycling through valid and hostile requests whose
//! expected answers are known. Every ~10 s and at the end it prints requests and unexpected
//! answers per class, Envoy's RSS and heap, and its wasm VM count.
//!
//! Verdict (exit status 1 on failure): every answer was the expected one, every request the
//! upstream saw was one that should pass, and memory plateaued (see [`plateau`]).

use palisade_tests::client::curl;
use palisade_tests::jwt::{hs256, now};
use palisade_tests::{Connection, Filter, Gateway, GatewayBuilder, Request, Response, Upstream};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ISSUER: &str = "https://soak.palisade.test";
const SECRET: &str = "soak-hmac-secret-0123456789abcdef-0123456789";
const APP_ORIGIN: &str = "https://app.example";
const SUBJECT: &str = "soak-user";
/// Largest body the json-threat-protection limit admits.
const MAX_BODY: usize = 64 * 1024;

/// One kind of request and what the gateway must answer to it.
struct Class {
    name: &'static str,
    request: Request,
    /// Whether the answer is the expected one.
    expect: fn(&Response, &Request) -> bool,
    /// Whether an expected answer came from the upstream (so the upstream's request count can
    /// be checked against it).
    reaches_upstream: bool,
}

fn status(resp: &Response, allowed: &[u16]) -> bool {
    allowed.contains(&resp.status)
}

/// The identity the gateway handed upstream (`x-gateway-identity`, from Envoy filter state).
fn identity(resp: &Response) -> Option<Value> {
    serde_json::from_str(&resp.upstream_header("x-gateway-identity")?).ok()
}

fn echo(resp: &Response) -> Option<Value> {
    serde_json::from_slice(&resp.body).ok()
}

/// 200 from the upstream, which saw the gateway's subject and client, not a client's copy.
fn passed_as_shop(resp: &Response, _: &Request) -> bool {
    resp.status == 200
        && echo(resp).is_some_and(|e| e["headers"]["x-user"] == SUBJECT)
        && identity(resp).is_some_and(|i| i["clientId"] == "shop")
}

fn classes() -> Vec<Class> {
    let claims = json!({"iss": ISSUER, "sub": SUBJECT, "aud": "orders", "exp": now() + 86_400});
    let valid = hs256(SECRET.as_bytes(), &claims);
    let forged_signature = hs256(b"another-secret-of-the-same-length-0123456789", &claims);
    let expired = hs256(
        SECRET.as_bytes(),
        &json!({"iss": ISSUER, "sub": SUBJECT, "aud": "orders", "exp": now() - 3_600}),
    );
    let get = |token: &str, client: &str, secret: &str| {
        Request::get("/orders")
            .header("authorization", &format!("Bearer {token}"))
            .header("client_id", client)
            .header("client_secret", secret)
    };
    let ok = || get(&valid, "shop", "shop-secret");
    let post_json = |body: Vec<u8>| {
        let mut req = ok().header("content-type", "application/json").body(body);
        req.method = "POST".into();
        req
    };
    let big = json_array(MAX_BODY - 1024);
    let over = json_array(MAX_BODY * 2);
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100)).into_bytes();
    let preflight = |origin: &str| {
        Request::new("OPTIONS", "/orders")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
    };
    let class = |name, request, expect, reaches_upstream| Class {
        name,
        request,
        expect,
        reaches_upstream,
    };
    vec![
        class("valid", ok(), passed_as_shop, true),
        class(
            "valid_big_json",
            post_json(big),
            |resp, req| {
                passed_as_shop(resp, req)
                    && echo(resp)
                        .is_some_and(|e| e["body"].as_str().map(str::len) == Some(req.body.len()))
            },
            true,
        ),
        class(
            "forged_identity_headers",
            ok().header("x-user", "admin")
                .header("x-gateway-identity", r#"{"clientId":"vip","tier":"gold"}"#),
            passed_as_shop,
            true,
        ),
        class(
            "no_token",
            Request::get("/orders")
                .header("client_id", "shop")
                .header("client_secret", "shop-secret"),
            |r, _| status(r, &[401]),
            false,
        ),
        class(
            "bad_signature",
            get(&forged_signature, "shop", "shop-secret"),
            |r, _| status(r, &[401]),
            false,
        ),
        class(
            "expired_token",
            get(&expired, "shop", "shop-secret"),
            |r, _| status(r, &[401]),
            false,
        ),
        class(
            "unknown_client",
            get(&valid, "nobody", "shop-secret"),
            |r, _| status(r, &[401]),
            false,
        ),
        class(
            "wrong_secret",
            get(&valid, "shop", "shop-secret-x"),
            |r, _| status(r, &[401]),
            false,
        ),
        // A repeated client_id: refused, or (if a policy takes one value) never anyone but the
        // client whose secret was proven.
        class(
            "duplicate_client_id",
            ok().header("client_id", "hog"),
            |r, req| status(r, &[400, 401]) || passed_as_shop(r, req),
            false,
        ),
        class(
            "duplicate_client_id_forged_first",
            Request::get("/orders")
                .header("authorization", &format!("Bearer {valid}"))
                .header("client_id", "hog")
                .header("client_id", "shop")
                .header("client_secret", "shop-secret"),
            |r, req| status(r, &[400, 401]) || passed_as_shop(r, req),
            false,
        ),
        class(
            "blocked_ip_via_trusted_xff",
            ok().header("x-forwarded-for", "203.0.113.9"),
            |r, _| status(r, &[403]),
            false,
        ),
        class(
            "preflight_allowed",
            preflight(APP_ORIGIN),
            |r, _| r.status == 200 && r.header("access-control-allow-origin") == Some(APP_ORIGIN),
            false,
        ),
        class(
            "preflight_disallowed_origin",
            preflight("https://evil.example"),
            |r, _| r.status == 403 && r.header("access-control-allow-origin").is_none(),
            false,
        ),
        class(
            "rate_limited_client",
            get(&valid, "hog", "hog-secret"),
            |r, _| status(r, &[429]),
            false,
        ),
        class(
            "json_over_size_limit",
            post_json(over),
            |r, _| status(r, &[400]),
            false,
        ),
        class(
            "json_over_depth_limit",
            post_json(deep),
            |r, _| status(r, &[400]),
            false,
        ),
        class(
            "json_malformed",
            post_json(br#"{"order": [1, 2,}"#.to_vec()),
            |r, _| status(r, &[400]),
            false,
        ),
    ]
}

/// A JSON array of about `bytes` bytes.
fn json_array(bytes: usize) -> Vec<u8> {
    let item = r#"{"sku":"A-1","qty":1},"#;
    format!("[{}{{}}]", item.repeat(bytes / item.len())).into_bytes()
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn gateway(upstream: &Upstream) -> Gateway {
    let client = |id: &str, secret: &str, tier: &str| json!({"clientId": id, "secretSha256": sha256_hex(secret), "contracts": {"orders": tier}});
    GatewayBuilder::new()
        .upstream(upstream)
        // One trusted proxy in front appends the client's address to X-Forwarded-For.
        .hcm("xff_num_trusted_hops", json!(1))
        .route_header(
            "x-gateway-identity",
            "%FILTER_STATE(wasm.palisade.identity:PLAIN)%",
        )
        .wasm(
            "ip-filter",
            json!({"mode": "blocklist", "ips": ["203.0.113.0/24"]}).to_string(),
        )
        .wasm(
            "cors",
            json!({"originGroups": [{"origins": [APP_ORIGIN],
                   "allowedMethods": ["GET", "POST"],
                   "headers": ["authorization", "content-type", "client_id", "client_secret"]}]})
            .to_string(),
        )
        .wasm(
            "jwt-validation",
            json!({"issuer": ISSUER, "audiences": ["orders"], "hmacSecret": SECRET,
                   "algorithms": ["HS256"], "claimsToHeaders": {"sub": "x-user"}})
            .to_string(),
        )
        .wasm(
            "client-id-enforcement",
            json!({"api": "orders", "clients": [
                client("shop", "shop-secret", "gold"),
                client("hog", "hog-secret", "bronze"),
            ]})
            .to_string(),
        )
        .wasm(
            "rate-limiting",
            // Keyed by client id: `shop` never runs out, `hog` has one request an hour.
            json!({"tiers": {
                "gold": [{"maximumRequests": 1_000_000_000u64, "timePeriodInMilliseconds": 1000}],
                "bronze": [{"maximumRequests": 1, "timePeriodInMilliseconds": 3_600_000}],
            }})
            .to_string(),
        )
        .wasm(
            "json-threat-protection",
            json!({"maxBodyBytes": MAX_BODY, "maxContainerDepth": 32}).to_string(),
        )
        .filter(Filter::Native(json!({
            "name": "envoy.filters.http.buffer",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                "max_request_bytes": 1 << 20,
            },
        })))
        .start()
}

/// Counts per class, shared by the load threads.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    unexpected: AtomicU64,
    /// Expected answers that came from the upstream.
    upstream: AtomicU64,
    /// Statuses answered (0: a transport error).
    statuses: Mutex<BTreeMap<u16, u64>>,
}

/// One memory sample.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    rss_kib: u64,
    heap_bytes: u64,
    wasm_vms: u64,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn stat(stats: &str, name: &str) -> u64 {
    let prefix = format!("{name}: ");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

fn sample(gw: &Gateway, at: Duration) -> Sample {
    Sample {
        at,
        rss_kib: rss_kib(gw.pid()),
        heap_bytes: stat(
            &gw.admin_get("/stats?filter=server.memory_allocated"),
            "server.memory_allocated",
        ),
        wasm_vms: stat(
            &gw.admin_get("/stats?filter=wasm.envoy.wasm.runtime.v8.active"),
            "wasm.envoy.wasm.runtime.v8.active",
        ),
    }
}

/// Memory plateaued: Envoy's RSS grew by less than `max(6 MiB, 3 %)` between the middle and
/// the end of the run (medians of 5 samples each, to ride out allocator and V8 GC jitter).
/// The first half is warm-up (wasm VMs compiling and tiering up, caches and shared-data slots
/// filling, connection pools growing); after it, a steady mix of requests must not need more
/// memory. The margin is above the run-to-run jitter measured here (a few MB on a ~200 MB
/// process) and far below what a leak costs: 100 bytes per request at 1,000 requests/s for
/// the 60 s second half of the default run is 6 MB.
fn plateau(samples: &[Sample]) -> (bool, i64) {
    let median = |window: &[Sample]| -> i64 {
        let mut v: Vec<i64> = window.iter().map(|s| s.rss_kib as i64).collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    if samples.len() < 10 {
        return (false, 0);
    }
    let mid = samples.len() / 2;
    let middle = median(&samples[mid - 2..mid + 3]);
    let end = median(&samples[samples.len() - 5..]);
    let growth = end - middle;
    let allowed = (6 * 1024).max(middle * 3 / 100);
    (growth < allowed, growth)
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let seconds = env_number("SOAK_SECONDS", 120).max(10);
    let clients = env_number("SOAK_CLIENTS", 6).max(1);
    let upstream = Upstream::start();
    let gw = gateway(&upstream);
    let classes = Arc::new(classes());
    let tallies: Arc<Vec<Tally>> = Arc::new(classes.iter().map(|_| Tally::default()).collect());
    let examples: Arc<Mutex<BTreeMap<&'static str, String>>> = Arc::default();

    // `hog` spends its one request of the hour, so from now on it is always limited.
    let warmup = gw.send(&classes[index(&classes, "rate_limited_client")].request);
    assert_eq!(warmup.status, 200, "hog's first request: {}", warmup.text());
    let upstream_before = upstream.hits() as u64;

    println!(
        "soak: {seconds} s, {clients} HTTP/1.1 keep-alive clients + 1 HTTP/2 client, {} classes, Envoy pid {}",
        classes.len(),
        gw.pid()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let record = {
        let (classes, tallies, examples) = (classes.clone(), tallies.clone(), examples.clone());
        move |i: usize, result: Result<Response, String>| {
            let class = &classes[i];
            let tally = &tallies[i];
            tally.sent.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut statuses) = tally.statuses.lock() {
                *statuses
                    .entry(result.as_ref().map_or(0, |r| r.status))
                    .or_default() += 1;
            }
            match result {
                Ok(resp) if (class.expect)(&resp, &class.request) => {
                    if class.reaches_upstream || resp.header("x-upstream").is_some() {
                        tally.upstream.fetch_add(1, Ordering::Relaxed);
                    }
                }
                other => {
                    tally.unexpected.fetch_add(1, Ordering::Relaxed);
                    let what = match other {
                        Ok(resp) => format!(
                            "status {}: {}",
                            resp.status,
                            resp.text().chars().take(300).collect::<String>()
                        ),
                        Err(e) => format!("transport error: {e}"),
                    };
                    if let Ok(mut ex) = examples.lock() {
                        ex.entry(class.name).or_insert(what);
                    }
                }
            }
        }
    };
    let record = Arc::new(record);
    let mut threads = Vec::new();
    for t in 0..clients as usize {
        let (classes, stop, record, addr) =
            (classes.clone(), stop.clone(), record.clone(), gw.addr());
        threads.push(std::thread::spawn(move || {
            let mut conn = Connection::new(addr);
            let schedule = schedule(&classes);
            let mut n = t; // threads start at different places of the schedule
            while !stop.load(Ordering::Relaxed) {
                let i = schedule[n % schedule.len()];
                n += 1;
                let result = conn.send(&classes[i].request).map_err(|e| {
                    conn = Connection::new(addr);
                    e.to_string()
                });
                record(i, result);
            }
        }));
    }
    {
        let (classes, stop, record, addr) =
            (classes.clone(), stop.clone(), record.clone(), gw.addr());
        threads.push(std::thread::spawn(move || {
            let url = format!("http://{addr}/orders");
            // Over HTTP/2 Envoy answers an oversized body's 400 at its content-length and resets
            // the stream the client is still uploading on (RFC 9113 section 8.1 allows it);
            // curl reports that as error 92 instead of the answer, so that class is left to
            // the HTTP/1.1 clients.
            let over_size = index(&classes, "json_over_size_limit");
            let schedule: Vec<usize> = schedule(&classes)
                .into_iter()
                .filter(|&i| i != over_size)
                .collect();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let i = schedule[n % schedule.len()];
                n += 1;
                let req = &classes[i].request;
                let result = curl(&url, req, &["--http2-prior-knowledge".as_ref()]).and_then(
                    |(version, resp)| {
                        if version == "HTTP/2" {
                            Ok(resp)
                        } else {
                            Err(format!("answered over {version}"))
                        }
                    },
                );
                record(i, result);
            }
        }));
    }

    let started = Instant::now();
    let mut samples = Vec::new();
    let mut last_report = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(1));
        samples.push(sample(&gw, started.elapsed()));
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            report(&classes, &tallies, &samples, started.elapsed(), false);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let elapsed = started.elapsed();
    report(&classes, &tallies, &samples, elapsed, true);

    let unexpected: u64 = tallies
        .iter()
        .map(|t| t.unexpected.load(Ordering::Relaxed))
        .sum();
    let sent: u64 = tallies.iter().map(|t| t.sent.load(Ordering::Relaxed)).sum();
    let expected_upstream: u64 = tallies
        .iter()
        .map(|t| t.upstream.load(Ordering::Relaxed))
        .sum();
    let upstream_seen = upstream.hits() as u64 - upstream_before;
    let (flat, growth_kib) = plateau(&samples);
    let alive = gw.admin_get("/ready").trim() == "LIVE";
    if let Ok(ex) = examples.lock() {
        for (class, what) in ex.iter() {
            println!("  first unexpected answer to {class}: {what}");
        }
    }
    println!(
        "verdict: {sent} requests ({:.0}/s), {unexpected} unexpected; upstream saw {upstream_seen}, \
         expected {expected_upstream}; RSS growth over the second half {:+.1} MiB ({}); Envoy {}",
        sent as f64 / elapsed.as_secs_f64(),
        growth_kib as f64 / 1024.0,
        if flat { "plateau" } else { "NO plateau" },
        if alive { "live" } else { "NOT live" },
    );
    let ok = unexpected == 0 && upstream_seen == expected_upstream && flat && alive && sent > 0;
    println!("soak {}", if ok { "PASSED" } else { "FAILED" });
    drop(gw);
    std::process::exit(if ok { 0 } else { 1 });
}

fn index(classes: &[Class], name: &str) -> usize {
    classes
        .iter()
        .position(|c| c.name == name)
        .unwrap_or_else(|| panic!("no class {name}"))
}

/// The order a client sends classes in: valid traffic four times as often as each hostile
/// class.
fn schedule(classes: &[Class]) -> Vec<usize> {
    let mut order = Vec::new();
    for (i, class) in classes.iter().enumerate() {
        let weight = if class.name == "valid" { 4 } else { 1 };
        order.extend(std::iter::repeat_n(i, weight));
        if class.name != "valid" {
            order.push(index(classes, "valid"));
        }
    }
    order
}

fn report(classes: &[Class], tallies: &[Tally], samples: &[Sample], elapsed: Duration, last: bool) {
    let sent: u64 = tallies.iter().map(|t| t.sent.load(Ordering::Relaxed)).sum();
    let unexpected: u64 = tallies
        .iter()
        .map(|t| t.unexpected.load(Ordering::Relaxed))
        .sum();
    let latest = samples.last();
    println!(
        "[{:>4} s] {sent} requests ({:.0}/s), {unexpected} unexpected; Envoy RSS {:.1} MiB, heap {:.1} MiB, wasm VMs {}",
        elapsed.as_secs(),
        sent as f64 / elapsed.as_secs_f64().max(0.001),
        latest.map_or(0.0, |s| s.rss_kib as f64 / 1024.0),
        latest.map_or(0.0, |s| s.heap_bytes as f64 / 1_048_576.0),
        latest.map_or(0, |s| s.wasm_vms),
    );
    if !last {
        return;
    }
    println!(
        "  {:<34} {:>9} {:>11}  statuses",
        "class", "requests", "unexpected"
    );
    for (class, tally) in classes.iter().zip(tallies) {
        let statuses = tally
            .statuses
            .lock()
            .map(|s| {
                s.iter()
                    .map(|(status, n)| format!("{status}:{n}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        println!(
            "  {:<34} {:>9} {:>11}  {statuses}",
            class.name,
            tally.sent.load(Ordering::Relaxed),
            tally.unexpected.load(Ordering::Relaxed)
        );
    }
    let every = (samples.len() / 12).max(1);
    let series: Vec<String> = samples
        .iter()
        .step_by(every)
        .chain(samples.last())
        .map(|s| format!("{}s:{:.1}", s.at.as_secs(), s.rss_kib as f64 / 1024.0))
        .collect();
    println!("  RSS MiB over time: {}", series.join(" "));
    let heap: Vec<String> = samples
        .iter()
        .step_by(every)
        .chain(samples.last())
        .map(|s| format!("{:.1}", s.heap_bytes as f64 / 1_048_576.0))
        .collect();
    println!("  heap (server.memory_allocated) MiB: {}", heap.join(" "));
}
