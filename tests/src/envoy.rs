//! Starting stock Envoy with the filters under test.

use crate::client::{http1, http2, Request, Response};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long Envoy may take to become ready. It compiles every wasm module on its main thread
/// before it serves: a six-filter Envoy took 49-67 s on a 2-core machine busy with builds.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// One HTTP filter of the chain.
#[derive(Debug, Clone)]
pub enum Filter {
    /// A Palisade policy: `dist/<policy>.wasm` with a JSON configuration.
    Wasm {
        /// Policy (artifact) name.
        policy: String,
        /// JSON configuration, passed as the plugin's StringValue.
        config: String,
    },
    /// Any Envoy HTTP filter, as its `HttpFilter` JSON (`name` + `typed_config`).
    Native(Value),
}

impl Filter {
    /// A Palisade policy with its JSON configuration.
    pub fn wasm(policy: &str, config: impl Into<String>) -> Filter {
        Filter::Wasm {
            policy: policy.into(),
            config: config.into(),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Filter::Native(v) => v.clone(),
            Filter::Wasm { policy, config } => json!({
                "name": format!("palisade.{policy}"),
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": {
                        "name": policy,
                        "root_id": policy,
                        "configuration": {
                            "@type": "type.googleapis.com/google.protobuf.StringValue",
                            "value": config,
                        },
                        "vm_config": {
                            "vm_id": "palisade",
                            "runtime": "envoy.wasm.runtime.v8",
                            "code": {"local": {"filename": crate::wasm(policy)}},
                        },
                    },
                },
            }),
        }
    }
}

/// Whether gateways run their policies in the bundle form (`PALISADE_BUNDLE=1`): every run of
/// consecutive Palisade policies becomes one `dist/palisade.wasm` filter listing them in order,
/// so a policy's integration tests can run against both forms.
pub fn bundle_form() -> bool {
    std::env::var_os("PALISADE_BUNDLE").is_some_and(|v| v == "1")
}

/// `filters` with each run of consecutive Palisade policies as one bundle filter. A policy
/// whose configuration is not JSON stays on its own (there is nothing to embed), and so does a
/// bundle.
pub fn bundled(filters: &[Filter]) -> Vec<Filter> {
    let mut out: Vec<Filter> = Vec::new();
    let mut run: Vec<Value> = Vec::new();
    let flush = |run: &mut Vec<Value>, out: &mut Vec<Filter>| {
        if !run.is_empty() {
            let config = json!({"policies": std::mem::take(run)}).to_string();
            out.push(Filter::wasm("palisade", config));
        }
    };
    for filter in filters {
        let member = match filter {
            Filter::Wasm { policy, .. } if policy == "palisade" => None,
            Filter::Wasm { policy, config } if config.trim().is_empty() => {
                Some(json!({"policy": policy}))
            }
            Filter::Wasm { policy, config } => serde_json::from_str::<Value>(config)
                .ok()
                .map(|config| json!({"policy": policy, "config": config})),
            Filter::Native(_) => None,
        };
        match member {
            Some(member) => run.push(member),
            None => {
                flush(&mut run, &mut out);
                out.push(filter.clone());
            }
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Where the gateway sends requests that pass the filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To the `upstream` cluster (an echo server).
    Upstream(u16),
    /// Answered by Envoy itself: 200 `ok` (benchmarks measure filters alone with it).
    Direct,
}

/// Builds an Envoy configuration and starts it.
#[derive(Debug, Clone)]
pub struct GatewayBuilder {
    filters: Vec<Filter>,
    ipv6: bool,
    route: Route,
    hcm: serde_json::Map<String, Value>,
    clusters: Vec<(String, u16)>,
    concurrency: u32,
    route_fields: serde_json::Map<String, Value>,
    tls: Option<Value>,
    upstream_tls: Option<Value>,
    dynamic_listener: bool,
    listen_port: u16,
}

impl GatewayBuilder {
    /// A gateway on 127.0.0.1 with a direct-response route, no filters and 2 workers, set up as
    /// an edge proxy (`use_remote_address: true`: the client address is the TCP peer, never a
    /// client-written `X-Forwarded-For`).
    pub fn new() -> Self {
        let mut hcm = serde_json::Map::new();
        hcm.insert("use_remote_address".into(), Value::Bool(true));
        GatewayBuilder {
            filters: Vec::new(),
            ipv6: false,
            route: Route::Direct,
            hcm,
            clusters: Vec::new(),
            concurrency: 2,
            route_fields: serde_json::Map::new(),
            tls: None,
            upstream_tls: None,
            dynamic_listener: false,
            listen_port: 0,
        }
    }

    /// Appends a filter (before the router).
    pub fn filter(mut self, f: Filter) -> Self {
        self.filters.push(f);
        self
    }

    /// Appends a Palisade policy with its JSON configuration.
    pub fn wasm(self, policy: &str, config: impl Into<String>) -> Self {
        self.filter(Filter::wasm(policy, config))
    }

    /// Routes to an upstream on 127.0.0.1:`port` (cluster `upstream`).
    pub fn upstream(mut self, upstream: &crate::Upstream) -> Self {
        self.route = Route::Upstream(upstream.port());
        self
    }

    /// Routes to 127.0.0.1:`port` (cluster `upstream`), e.g. another gateway.
    pub fn upstream_port(mut self, port: u16) -> Self {
        self.route = Route::Upstream(port);
        self
    }

    /// Connects to the `upstream` cluster over TLS as `client` (its CA, its certificate if any).
    pub fn upstream_tls(mut self, client: &crate::tls::ClientTls) -> Self {
        self.upstream_tls = Some(client.upstream_transport_socket());
        self
    }

    /// Serves HTTPS (HTTP/1.1 and HTTP/2 by ALPN) with `tls` instead of cleartext HTTP.
    pub fn tls(mut self, tls: crate::tls::ServerTls) -> Self {
        self.tls = Some(tls.transport_socket());
        self
    }

    /// Adds a cluster named `name` pointing at 127.0.0.1:`port` (for policies' outbound calls).
    pub fn cluster(mut self, name: &str, port: u16) -> Self {
        self.clusters.push((name.into(), port));
        self
    }

    /// Adds (overwrites) a request header on the route to the upstream; the value may use
    /// Envoy's formatters, e.g. `%FILTER_STATE(wasm.palisade.identity:PLAIN)%`.
    pub fn route_header(mut self, name: &str, value: &str) -> Self {
        let entry = json!({"header": {"key": name, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"});
        let list = self
            .route_fields
            .entry("request_headers_to_add")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(items) = list {
            items.push(entry);
        }
        self
    }

    /// Listens on [::1] instead of 127.0.0.1.
    pub fn ipv6(mut self) -> Self {
        self.ipv6 = true;
        self
    }

    /// Sets a field of the HTTP connection manager (e.g. `xff_num_trusted_hops`).
    pub fn hcm(mut self, key: &str, value: Value) -> Self {
        self.hcm.insert(key.into(), value);
        self
    }

    /// Sets a field of the one route (e.g. `typed_per_filter_config` for a native filter's
    /// per-route policy, or `response_headers_to_add`).
    pub fn route_field(mut self, key: &str, value: Value) -> Self {
        self.route_fields.insert(key.into(), value);
        self
    }

    /// Serves the listener from a file Envoy watches (LDS, `path_config_source`) instead of
    /// the bootstrap, on a fixed free port, so [`Gateway::reload_listener`] can replace it
    /// while Envoy runs.
    pub fn dynamic_listener(mut self) -> Self {
        self.dynamic_listener = true;
        self
    }

    /// Number of worker threads (default 2).
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = n;
        self
    }

    /// The Envoy bootstrap configuration this builder renders.
    pub fn bootstrap(&self) -> Value {
        self.render(None)
    }

    /// The listener as an LDS resource, on `port`.
    fn listener_resource(&self, port: u16) -> Value {
        let mut listener = self.render(None)["static_resources"]["listeners"][0].clone();
        listener["address"]["socket_address"]["port_value"] = json!(port);
        listener["@type"] = json!("type.googleapis.com/envoy.config.listener.v3.Listener");
        listener
    }

    /// The bootstrap; with `lds`, the listener is left to that LDS file.
    fn render(&self, lds: Option<&std::path::Path>) -> Value {
        let filters = if bundle_form() {
            bundled(&self.filters)
        } else {
            self.filters.clone()
        };
        let mut http_filters: Vec<Value> = filters.iter().map(Filter::to_json).collect();
        http_filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }));
        let mut route = match self.route {
            Route::Upstream(_) => {
                json!({"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "30s"}})
            }
            Route::Direct => {
                json!({"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}})
            }
        };
        for (k, v) in &self.route_fields {
            route[k] = v.clone();
        }
        let mut hcm = json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "gateway",
            "codec_type": "AUTO",
            "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]},
            "http_filters": http_filters,
        });
        for (k, v) in &self.hcm {
            hcm[k] = v.clone();
        }
        let mut clusters: Vec<Value> = self
            .clusters
            .iter()
            .map(|(name, port)| static_cluster(name, *port))
            .collect();
        if let Route::Upstream(port) = self.route {
            let mut upstream = static_cluster("upstream", port);
            if let Some(tls) = &self.upstream_tls {
                upstream["transport_socket"] = tls.clone();
            }
            clusters.push(upstream);
        }
        let mut filter_chain = json!({"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": hcm,
        }]});
        if let Some(tls) = &self.tls {
            filter_chain["transport_socket"] = tls.clone();
        }
        let listen = if self.ipv6 { "::1" } else { "127.0.0.1" };
        let listener = json!({
            "name": "gateway",
            "address": {"socket_address": {"address": listen, "port_value": self.listen_port}},
            "filter_chains": [filter_chain],
        });
        let mut bootstrap = json!({
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "static_resources": {"listeners": [listener], "clusters": clusters},
        });
        if let Some(path) = lds {
            bootstrap["static_resources"]["listeners"] = json!([]);
            // LDS needs a node identity, even from a file.
            bootstrap["node"] = json!({"id": "palisade-test", "cluster": "palisade-test"});
            bootstrap["dynamic_resources"] = json!({"lds_config": {
                "resource_api_version": "V3",
                "path_config_source": {
                    "path": path,
                    "watched_directory": {"path": path.parent().expect("LDS file in a directory")},
                },
            }});
        }
        bootstrap
    }

    /// Starts Envoy and waits until it serves; panics with Envoy's log if it does not.
    pub fn start(self) -> Gateway {
        match self.try_start() {
            Ok(gw) => gw,
            Err(log) => panic!("Envoy did not start:\n{log}"),
        }
    }

    /// Starts Envoy expecting it to refuse the configuration; returns its log.
    pub fn start_err(self) -> String {
        match self.try_start() {
            Ok(gw) => panic!("Envoy accepted the configuration:\n{}", gw.log()),
            Err(log) => log,
        }
    }

    /// Starts Envoy; on failure returns its log.
    pub fn try_start(mut self) -> Result<Gateway, String> {
        let dir = crate::scratch_dir("envoy");
        let config = dir.join("envoy.json");
        let lds_path = self.dynamic_listener.then(|| dir.join("lds.json"));
        if let Some(lds) = &lds_path {
            self.listen_port = free_port(self.ipv6);
            write_lds(lds, &self.listener_resource(self.listen_port), 1);
        }
        let bootstrap = self.render(lds_path.as_deref());
        std::fs::write(&config, bootstrap.to_string()).expect("write Envoy config");
        let log_path = dir.join("envoy.log");
        let admin_file = dir.join("admin.txt");
        let log = std::fs::File::create(&log_path).expect("create Envoy log");
        let mut cmd = Command::new(crate::envoy_bin());
        cmd.arg("-c")
            .arg(&config)
            .args(["--concurrency", &self.concurrency.to_string()])
            .arg("--disable-hot-restart")
            .arg("--admin-address-path")
            .arg(&admin_file)
            .args(["-l", "info"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe. Envoy dies with the test process, so no stray
        // Envoy survives an aborted test run.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start Envoy");
        let mut gw = Gateway {
            child,
            admin: None,
            listener: None,
            log_path,
            lds: lds_path.map(|path| (path, std::sync::atomic::AtomicU32::new(1))),
        };
        let members = self.bundle_members();
        gw.wait_ready(&admin_file)
            .map_err(|log| in_member_terms(log, &members))?;
        Ok(gw)
    }

    /// The policies of the bundle this gateway runs in bundle form, in order (empty otherwise).
    fn bundle_members(&self) -> Vec<String> {
        if !bundle_form() {
            return Vec::new();
        }
        self.filters
            .iter()
            .filter_map(|filter| match filter {
                Filter::Wasm { policy, .. } if policy != "palisade" => Some(policy.clone()),
                _ => None,
            })
            .collect()
    }
}

/// A refused bundle names the field under its member (`palisade: invalid configuration at
/// `policies[1].config.ips[0]`: ...`). After each such line this adds the line the member's own
/// filter would have logged (`ip-filter: invalid configuration at `ips[0]`: ...`), so a test's
/// assertion on the refusal holds in both forms; the bundle's own line stays in the log.
fn in_member_terms(log: String, members: &[String]) -> String {
    const MARK: &str = "palisade: invalid configuration at `policies[";
    if members.is_empty() || !log.contains(MARK) {
        return log;
    }
    let mut out = String::with_capacity(log.len() * 2);
    for line in log.lines() {
        out.push_str(line);
        out.push('\n');
        let Some((_, rest)) = line.split_once(MARK) else {
            continue;
        };
        let Some((index, rest)) = rest.split_once("].config") else {
            continue;
        };
        let (Ok(index), Some((path, message))) = (index.parse::<usize>(), rest.split_once('`'))
        else {
            continue;
        };
        let Some(policy) = members.get(index) else {
            continue;
        };
        let path = match path.strip_prefix('.') {
            Some(field) => field,
            None if path.is_empty() => ".",
            None => path, // an index into a top-level array: `[0]...`
        };
        out.push_str(&format!(
            "{policy}: invalid configuration at `{path}`{message}\n"
        ));
    }
    out
}

impl Default for GatewayBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// A port that was free a moment ago (bound, then released).
fn free_port(ipv6: bool) -> u16 {
    let ip = if ipv6 { "[::1]:0" } else { "127.0.0.1:0" };
    std::net::TcpListener::bind(ip)
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port()
}

/// Writes an LDS file the way Envoy notices it: a new file moved into place (Envoy's watch
/// reacts to moves, not to in-place edits).
fn write_lds(path: &std::path::Path, listener: &Value, version: u32) {
    let doc = json!({"version_info": version.to_string(), "resources": [listener]});
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, doc.to_string()).expect("write LDS file");
    std::fs::rename(&tmp, path).expect("move LDS file into place");
}

fn static_cluster(name: &str, port: u16) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}
        }}]}]},
    })
}

/// A running Envoy. Killed when dropped; its log is printed if the test is failing.
pub struct Gateway {
    child: Child,
    admin: Option<SocketAddr>,
    listener: Option<SocketAddr>,
    log_path: PathBuf,
    /// With a dynamic listener: its LDS file and the version last written.
    lds: Option<(PathBuf, std::sync::atomic::AtomicU32)>,
}

impl Gateway {
    /// A gateway builder.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::new()
    }

    fn wait_ready(&mut self, admin_file: &std::path::Path) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("Envoy exited with {status}\n{}", self.log()));
            }
            if self.admin.is_none() {
                self.admin = std::fs::read_to_string(admin_file)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
            }
            if let Some(admin) = self.admin {
                if let Ok(r) = std::panic::catch_unwind(|| http1(admin, &Request::get("/ready"))) {
                    if r.status == 200 {
                        let listeners = self.admin_get("/listeners?format=json");
                        let v: Value =
                            serde_json::from_str(&listeners).map_err(|e| e.to_string())?;
                        let sa = &v["listener_statuses"][0]["local_address"]["socket_address"];
                        let ip = sa["address"].as_str().unwrap_or_default();
                        let port = sa["port_value"].as_u64().unwrap_or_default();
                        self.listener = format!("{}:{port}", bracket(ip)).parse().ok();
                        return self
                            .listener
                            .map(|_| ())
                            .ok_or_else(|| format!("no listener in {listeners}"));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "Envoy was not ready after {} s\n{}",
            READY_TIMEOUT.as_secs(),
            self.log()
        ))
    }

    /// The listener address.
    pub fn addr(&self) -> SocketAddr {
        self.listener.expect("listener address")
    }

    /// Envoy's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The admin address.
    pub fn admin(&self) -> SocketAddr {
        self.admin.expect("admin address")
    }

    /// Sends a request over HTTP/1.1.
    pub fn send(&self, req: &Request) -> Response {
        http1(self.addr(), req)
    }

    /// Sends a request over HTTP/2.
    pub fn send_h2(&self, req: &Request) -> Response {
        http2(self.addr(), req)
    }

    /// Sends `req` (with a body) over HTTP/2 with nghttp, as DATA frames without a
    /// `content-length`, so only the stream's framing tells that a body follows; returns the
    /// status. (curl may fail with "Stream error" when Envoy answers before the upload ends;
    /// nghttp reports the answer.)
    pub fn send_h2_without_length(&self, req: &Request) -> u16 {
        let dir = crate::scratch_dir("nghttp");
        let input = dir.join("body");
        std::fs::write(&input, &req.body).expect("write body");
        let mut cmd = Command::new("nghttp");
        cmd.args(["-v", "-t", "15", "--no-content-length", "-H"])
            .arg(format!(":method: {}", req.method));
        for (n, v) in &req.headers {
            cmd.arg("-H").arg(format!("{n}: {v}"));
        }
        let out = cmd
            .arg("-d")
            .arg(&input)
            .arg(format!("http://{}{}", self.addr(), req.path))
            .output()
            .expect("run nghttp (Debian nghttp2-client, installed by scripts/install.d)");
        let verbose = String::from_utf8_lossy(&out.stdout);
        verbose
            .lines()
            .find_map(|l| l.split_once(":status: ").map(|(_, s)| s.trim().to_owned()))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no :status in nghttp output:\n{verbose}"))
    }

    /// Sends a request over HTTPS, HTTP/1.1 (a gateway built with [`GatewayBuilder::tls`]);
    /// `Err` when the TLS handshake (or the request) fails.
    pub fn https(&self, req: &Request, tls: &crate::tls::ClientTls) -> Result<Response, String> {
        crate::tls::https(self.addr(), req, tls, false)
    }

    /// Sends a request over HTTPS, HTTP/2 negotiated by ALPN.
    pub fn https_h2(&self, req: &Request, tls: &crate::tls::ClientTls) -> Result<Response, String> {
        crate::tls::https(self.addr(), req, tls, true)
    }

    /// GETs an admin endpoint and returns its body.
    pub fn admin_get(&self, path: &str) -> String {
        http1(self.admin(), &Request::get(path)).text()
    }

    /// The value of a metric in `/stats/prometheus` (e.g. `palisade_ip_filter_denied`) once
    /// every count of the requests made so far has reached Envoy. A policy VM keeps its counts
    /// and adds them to Envoy's counters on its timer (the kit's `metrics::FLUSH_PERIOD_MS`,
    /// 1 s), so this polls until the value has not moved for longer than that period.
    pub fn metric(&self, name: &str) -> Option<f64> {
        const FLUSH_WINDOW: Duration = Duration::from_millis(1_300);
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut value = self.metric_now(name);
        let mut unchanged_since = Instant::now();
        while unchanged_since.elapsed() < FLUSH_WINDOW && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.metric_now(name);
            if now != value {
                value = now;
                unchanged_since = Instant::now();
            }
        }
        value
    }

    /// The value of a metric in `/stats/prometheus` right now (counts a policy VM keeps until
    /// its next flush are not in it yet).
    pub fn metric_now(&self, name: &str) -> Option<f64> {
        self.admin_get("/stats/prometheus")
            .lines()
            .find_map(|line| {
                let (key, value) = line.rsplit_once(' ')?;
                let key = key.split('{').next()?;
                (key == name).then(|| value.parse().ok()).flatten()
            })
    }

    /// Replaces the listener (filters, route, connection manager settings) with the one
    /// `builder` renders, on the same port, and waits until Envoy has applied it. Only for a
    /// gateway started with [`GatewayBuilder::dynamic_listener`]; clusters stay those Envoy
    /// started with. Requests in flight finish on the old listener configuration.
    pub fn reload_listener(&self, builder: &GatewayBuilder) {
        let (path, version) = self
            .lds
            .as_ref()
            .expect("a gateway started with GatewayBuilder::dynamic_listener");
        let stat = |name: &str| -> u64 {
            let prefix = format!("listener_manager.{name}: ");
            self.admin_get("/stats?filter=listener_manager")
                .lines()
                .find_map(|l| l.strip_prefix(&prefix).and_then(|v| v.trim().parse().ok()))
                .unwrap_or(0)
        };
        let before = stat("lds.update_success");
        let version = version.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        write_lds(
            path,
            &builder.listener_resource(self.addr().port()),
            version,
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while stat("lds.update_success") <= before || stat("total_listeners_warming") > 0 {
            assert!(
                Instant::now() < deadline,
                "Envoy did not apply the new listener:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything Envoy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- Envoy log ({}) -----\n{}",
                self.log_path.display(),
                self.log()
            );
        }
    }
}

fn bracket(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::in_member_terms;

    #[test]
    fn bundle_refusals_are_restated_in_the_member_terms() {
        let members = ["ip-filter".to_owned(), "cors".to_owned()];
        let line = |path: &str| {
            format!("[error] wasm log palisade palisade: palisade: invalid configuration at `{path}`: bad\n")
        };
        let log = in_member_terms(line("policies[1].config.originGroups[0]"), &members);
        assert!(
            log.contains("cors: invalid configuration at `originGroups[0]`: bad"),
            "{log}"
        );
        assert!(log.contains("policies[1].config.originGroups[0]"), "{log}");
        let log = in_member_terms(line("policies[0].config"), &members);
        assert!(
            log.contains("ip-filter: invalid configuration at `.`: bad"),
            "{log}"
        );
        // Not a bundle refusal, an unknown member, or not in bundle form: unchanged.
        for (log, members) in [
            (line("ips[0]"), &members[..]),
            (line("policies[7].config.x"), &members[..]),
            (line("policies[0].config.x"), &[][..]),
        ] {
            assert_eq!(in_member_terms(log.clone(), members), log);
        }
    }
}
