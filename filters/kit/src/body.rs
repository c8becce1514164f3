//! Request-body inspection policies (JSON and XML threat protection): which bodies are
//! inspected, the streaming drive of a scanner over body chunks, and the verdict.
//!
//! A policy provides a [`BodyScanner`] (a resumable state machine fed each body byte once) and
//! [`BodyRules`] (media types, size limit, denial, metrics). [`BodyStream`] is the per-request
//! logic over plain types and `impl Host`, and the policy's per-request state
//! ([`crate::Policy::State`]): every chunk is scanned as it arrives (only the bytes not scanned
//! yet), the body is kept buffered in Envoy until the verdict, and the verdict completes at end
//! of stream or in the trailers (HTTP/2 bodies followed by trailers never carry end-of-stream on
//! a data frame). A rejected body therefore never reaches the upstream, not even in part (its
//! headers may have: see [`BodyStream::on_headers`]). A request-body policy implements
//! [`BodyPolicy`] (its name, configuration, rules and scanner) and is then a
//! [`Policy`](crate::Policy) whose per-request state is a [`BodyStream`].

use crate::config::ConfigError;
use crate::denial::{Denial, DenialOverride};
use crate::host::{BodyBuffer, Host, LogLevel};
use crate::metrics::Counter;
use crate::runtime::{Policy, Request, Verdict};

/// Why a body was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// What was violated: a malformed document or a configured limit.
    pub kind: ViolationKind,
    /// Byte offset in the body where it was detected (0-based).
    pub offset: u64,
    /// For a human: names the violated limit (`maxContainerDepth (3) exceeded`) or the syntax
    /// error (`unexpected character 'x'`).
    pub message: String,
}

/// The class of a [`Violation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationKind {
    /// The body is not a well-formed document.
    Malformed,
    /// The body is well-formed so far but exceeds a configured limit.
    Limit,
}

impl Violation {
    /// A syntax error at `offset`.
    pub fn malformed(offset: u64, message: impl Into<String>) -> Self {
        Violation {
            kind: ViolationKind::Malformed,
            offset,
            message: message.into(),
        }
    }

    /// A limit exceeded at `offset`.
    pub fn limit(offset: u64, message: impl Into<String>) -> Self {
        Violation {
            kind: ViolationKind::Limit,
            offset,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.message, self.offset)
    }
}

/// A streaming validator. Fed the body in chunks of any size, each byte once; it must reach the
/// same verdict whatever the chunking, keep bounded state, and never panic.
pub trait BodyScanner {
    /// Scans the next chunk. After an error the scanner is not fed again.
    fn feed(&mut self, chunk: &[u8]) -> Result<(), Violation>;
    /// The body is complete: is it a whole document?
    fn finish(&mut self) -> Result<(), Violation>;
}

/// A scanner's first violation from [`BodyScanner::feed`], which every later call repeats (a
/// scanner is not fed again after an error, but must stay consistent if it is).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Latch(Option<Violation>);

impl Latch {
    /// The latched violation, if any.
    pub fn check(&self) -> Result<(), Violation> {
        match &self.0 {
            Some(v) => Err(v.clone()),
            None => Ok(()),
        }
    }

    /// Latches `result`'s violation, if any, and returns it.
    pub fn record(&mut self, result: Result<(), Violation>) -> Result<(), Violation> {
        if let Err(v) = &result {
            self.0 = Some(v.clone());
        }
        result
    }
}

/// Which bodies are inspected, by `content-type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaTypes {
    exact: Vec<&'static str>,
    suffix: &'static str,
    check_all: bool,
}

impl MediaTypes {
    /// Bodies whose media type is one of `exact` or ends with `suffix` (e.g. `+json`, for
    /// `application/*+json`), and bodies without a content type. With `check_all`, every body.
    pub fn new(exact: &[&'static str], suffix: &'static str, check_all: bool) -> Self {
        MediaTypes {
            exact: exact.to_vec(),
            suffix,
            check_all,
        }
    }

    /// Whether a body with this `content-type` header is inspected. Parameters (`; charset=`)
    /// and case are ignored. Envoy joins a repeated `content-type` with `,` (and an upstream
    /// may honour any of them): such a body is inspected if any of them is.
    pub fn inspects(&self, content_type: Option<&str>) -> bool {
        if self.check_all {
            return true;
        }
        let Some(value) = content_type else {
            return true;
        };
        value.split(',').any(|one| self.inspects_one(one))
    }

    fn inspects_one(&self, value: &str) -> bool {
        let media = value.split(';').next().unwrap_or_default().trim();
        if media.is_empty() {
            return true;
        }
        if self.exact.iter().any(|e| e.eq_ignore_ascii_case(media)) {
            return true;
        }
        // `type/subtype+suffix`: the structured-syntax suffix (RFC 6839) names the format.
        media.split_once('/').is_some_and(|(_, sub)| {
            sub.len() > self.suffix.len()
                && sub
                    .get(sub.len() - self.suffix.len()..)
                    .is_some_and(|end| end.eq_ignore_ascii_case(self.suffix))
        })
    }
}

/// -1 or absent: unlimited; otherwise a non-negative limit. `field` names it in the error.
pub fn limit(value: Option<i64>, field: &str) -> Result<Option<u64>, ConfigError> {
    match value {
        None | Some(-1) => Ok(None),
        Some(v) if v >= 0 => Ok(Some(v as u64)),
        Some(v) => Err(ConfigError::at(
            field,
            format!("must be -1 (unlimited) or a non-negative number, got {v}"),
        )),
    }
}

/// The configuration keys every body policy shares, compiled: `maxBodyBytes` (-1 or absent
/// for unlimited, otherwise at least 1), `checkAllBodies` and `denial`. A policy keeps the raw
/// fields in its own `deny_unknown_fields` type (serde's `flatten` does not combine with it)
/// and compiles them with [`BodySettings::compile`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodySettings {
    /// `maxBodyBytes`.
    pub max_body_bytes: Option<u64>,
    /// `checkAllBodies`.
    pub check_all_bodies: bool,
    /// `denial`.
    pub denial: Option<DenialOverride>,
}

impl BodySettings {
    /// Validates the shared raw fields.
    pub fn compile(
        max_body_bytes: Option<i64>,
        check_all_bodies: bool,
        denial: Option<DenialOverride>,
    ) -> Result<Self, ConfigError> {
        let max_body_bytes = limit(max_body_bytes, "maxBodyBytes")?;
        if max_body_bytes == Some(0) {
            return Err(ConfigError::at(
                "maxBodyBytes",
                "must be -1 (unlimited) or at least 1",
            ));
        }
        Ok(BodySettings {
            max_body_bytes,
            check_all_bodies,
            denial,
        })
    }
}

/// What a body policy needs besides its scanner, compiled at configure time.
#[derive(Debug, Clone)]
pub struct BodyRules {
    media: MediaTypes,
    max_body_bytes: Option<u64>,
    status: u16,
    code: &'static str,
    headers: Vec<(String, String)>,
    custom_body: Option<Vec<u8>>,
    allowed: Counter,
    denied_limit: Counter,
    denied_malformed: Counter,
    skipped: Counter,
}

impl BodyRules {
    /// Rules for `policy`: denials are 400 with error `code` (and the violation as message)
    /// unless overridden by `denial`; metrics `palisade.<policy>.{allowed, denied_limit,
    /// denied_malformed, skipped}`.
    pub fn new(
        policy: &str,
        code: &'static str,
        media: MediaTypes,
        max_body_bytes: Option<u64>,
        denial: Option<&DenialOverride>,
        host: &mut impl Host,
    ) -> Result<Self, ConfigError> {
        let base = Denial::new(400, code, "").overridden(denial, "denial")?;
        let mut counter = |outcome: &str| Counter::define(host, policy, outcome);
        Ok(BodyRules {
            media,
            max_body_bytes,
            status: base.status(),
            code,
            headers: base
                .headers()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
            custom_body: denial
                .and_then(|d| d.body.as_ref())
                .map(|b| b.as_bytes().to_vec()),
            allowed: counter("allowed")?,
            denied_limit: counter("denied_limit")?,
            denied_malformed: counter("denied_malformed")?,
            skipped: counter("skipped")?,
        })
    }

    /// Rules for `policy` inspecting the media types `exact` and `*/*<suffix>` (see
    /// [`MediaTypes::new`]) with the shared `settings`; otherwise as [`BodyRules::new`].
    pub fn configure(
        policy: &str,
        code: &'static str,
        exact: &[&'static str],
        suffix: &'static str,
        settings: &BodySettings,
        host: &mut impl Host,
    ) -> Result<Self, ConfigError> {
        let media = MediaTypes::new(exact, suffix, settings.check_all_bodies);
        Self::new(
            policy,
            code,
            media,
            settings.max_body_bytes,
            settings.denial.as_ref(),
            host,
        )
    }

    /// Which bodies are inspected.
    pub fn media(&self) -> &MediaTypes {
        &self.media
    }

    fn deny(&self, host: &mut impl Host, violation: &Violation) {
        match violation.kind {
            ViolationKind::Limit => self.denied_limit.inc(host),
            ViolationKind::Malformed => self.denied_malformed.inc(host),
        }
        host.log(
            LogLevel::Debug,
            &format!("{}: rejected body: {violation}", self.code),
        );
        let body = match &self.custom_body {
            Some(b) => b.clone(),
            None => crate::denial::error_body(self.code, &violation.to_string()),
        };
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        // If even the local reply fails, the request stays paused and never reaches upstream.
        let _ = host.send_response(self.status, &headers, &body);
    }
}

/// A request-body policy: its rules and a scanner per body. Every `BodyPolicy` is a
/// [`Policy`] (the kit's blanket implementation hands the request headers, body and trailers
/// to the request's [`BodyStream`]), so its glue is the one `wasm::start` line.
pub trait BodyPolicy: Sized + 'static {
    /// The policy's name (kebab-case; also its artifact and metric name).
    const NAME: &'static str;
    /// The streaming validator.
    type Scanner: BodyScanner + 'static;
    /// Compiles the JSON configuration; `host` is available to define metrics.
    fn configure(config: &[u8], host: &mut impl Host) -> Result<Self, ConfigError>;
    /// The inspection rules.
    fn rules(&self) -> &BodyRules;
    /// A fresh scanner for one body.
    fn scanner(&self) -> Self::Scanner;
    /// A fresh scanner for one body sent with this `content-type` (the value the kit already
    /// read to decide whether to inspect it), for scanners that depend on a media-type
    /// parameter (`charset`). Defaults to [`BodyPolicy::scanner`].
    fn scanner_for(&self, content_type: Option<&str>) -> Self::Scanner {
        let _ = content_type;
        self.scanner()
    }
}

impl<P: BodyPolicy> Policy for P {
    const NAME: &'static str = P::NAME;
    type State = BodyStream<P::Scanner>;

    fn configure(config: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
        <P as BodyPolicy>::configure(config, host)
    }

    fn on_request_headers(
        &self,
        request: &mut Request<'_, Self::State>,
        host: &mut impl Host,
        end_of_stream: bool,
    ) -> Verdict {
        let scanner = |content_type: Option<&str>| self.scanner_for(content_type);
        request
            .state
            .on_headers(self.rules(), host, end_of_stream, scanner)
    }

    fn on_request_body(
        &self,
        request: &mut Request<'_, Self::State>,
        host: &mut impl Host,
        buffered: usize,
        end_of_stream: bool,
    ) -> Verdict {
        request
            .state
            .on_body(self.rules(), host, buffered, end_of_stream)
    }

    fn on_request_trailers(
        &self,
        request: &mut Request<'_, Self::State>,
        host: &mut impl Host,
    ) -> Verdict {
        request.state.on_trailers(self.rules(), host)
    }
}

/// The inspection of one request body.
#[derive(Debug)]
pub struct BodyStream<S> {
    state: State<S>,
    scanned: u64,
}

#[derive(Debug)]
enum State<S> {
    /// Not inspected (no body, another media type) or already allowed.
    Pass,
    /// Inspecting; the request is held.
    Scanning(S),
    /// Answered with a denial.
    Denied,
}

impl<S> Default for BodyStream<S> {
    fn default() -> Self {
        BodyStream {
            state: State::Pass,
            scanned: 0,
        }
    }
}

impl<S: BodyScanner> BodyStream<S> {
    /// Request headers arrived: decide whether the body is inspected. The headers themselves
    /// continue (Envoy turns a paused request-headers callback into StopAllIteration, after
    /// which the filter sees no body until it resumes), so the upstream may see the headers
    /// of a request whose body is then rejected (and the upstream request reset), but no byte
    /// of that body. `scanner` builds the body's scanner from the request's `content-type`.
    pub fn on_headers(
        &mut self,
        rules: &BodyRules,
        host: &mut impl Host,
        end_of_stream: bool,
        scanner: impl FnOnce(Option<&str>) -> S,
    ) -> Verdict {
        if end_of_stream {
            // No body: nothing to inspect.
            return Verdict::Continue;
        }
        let content_type = host.request_header("content-type");
        if !rules.media.inspects(content_type.as_deref()) {
            rules.skipped.inc(host);
            return Verdict::Continue;
        }
        if let (Some(max), Some(length)) = (
            rules.max_body_bytes,
            host.request_header("content-length")
                .and_then(|v| v.trim().parse::<u64>().ok()),
        ) {
            if length > max {
                let violation = Violation::limit(
                    max,
                    format!("maxBodyBytes ({max}) exceeded: content-length is {length}"),
                );
                return self.reject(rules, host, &violation);
            }
        }
        self.state = State::Scanning(scanner(content_type.as_deref()));
        Verdict::Continue
    }

    /// A body callback: `buffered` bytes are held in Envoy in total (the body so far, since
    /// this stream pauses until the verdict). Only bytes not scanned yet are read.
    pub fn on_body(
        &mut self,
        rules: &BodyRules,
        host: &mut impl Host,
        buffered: usize,
        end_of_stream: bool,
    ) -> Verdict {
        let scanner = match &mut self.state {
            State::Pass => return Verdict::Continue,
            State::Denied => return Verdict::Respond,
            State::Scanning(scanner) => scanner,
        };
        let buffered = buffered as u64;
        if buffered > self.scanned {
            let start = self.scanned;
            if let Some(max) = rules.max_body_bytes {
                if buffered > max {
                    let v = Violation::limit(max, format!("maxBodyBytes ({max}) exceeded"));
                    return self.reject(rules, host, &v);
                }
            }
            let want = (buffered - start) as usize;
            let chunk = host.body(BodyBuffer::Request, start as usize, want);
            if chunk.len() != want {
                // The host did not hand over the bytes it reported: fail closed rather than let
                // unscanned bytes through.
                let v = Violation::limit(start, "the body could not be read for inspection");
                return self.reject(rules, host, &v);
            }
            self.scanned += chunk.len() as u64;
            if let Err(violation) = scanner.feed(&chunk) {
                return self.reject(rules, host, &violation);
            }
        }
        if end_of_stream {
            self.on_trailers(rules, host)
        } else {
            Verdict::Pause
        }
    }

    /// Request trailers arrived (or the last chunk): the body is complete.
    pub fn on_trailers(&mut self, rules: &BodyRules, host: &mut impl Host) -> Verdict {
        let scanner = match &mut self.state {
            State::Pass => return Verdict::Continue,
            State::Denied => return Verdict::Respond,
            State::Scanning(scanner) => scanner,
        };
        match scanner.finish() {
            Ok(()) => {
                self.state = State::Pass;
                rules.allowed.inc(host);
                Verdict::Continue
            }
            Err(violation) => self.reject(rules, host, &violation),
        }
    }

    fn reject(
        &mut self,
        rules: &BodyRules,
        host: &mut impl Host,
        violation: &Violation,
    ) -> Verdict {
        self.state = State::Denied;
        rules.deny(host, violation);
        Verdict::Respond
    }

    /// Bytes scanned so far.
    pub fn scanned(&self) -> u64 {
        self.scanned
    }
}

/// Drives body policies and scanners natively, for tests, fuzz targets and benchmarks.
#[cfg(not(target_arch = "wasm32"))]
pub mod testing {
    use super::{BodyScanner, Violation};
    use crate::runtime::{Policy, Verdict};
    use crate::testing::{LocalResponse, TestPolicy};

    /// Sends a request with `content_type` and `body` through a deployed body policy in
    /// `chunk`-byte pieces, the last with end of stream (or, with `trailers`, followed by
    /// trailers). Returns the last verdict and the local response, if any.
    pub fn send<P: Policy>(
        policy: &TestPolicy<P>,
        content_type: &str,
        body: &str,
        chunk: usize,
        trailers: bool,
    ) -> (Verdict, Option<LocalResponse>) {
        let mut req = policy.request(0);
        req.add_header("content-type", content_type);
        let mut verdict = policy.request_headers(&mut req, body.is_empty());
        let pieces: Vec<&[u8]> = body.as_bytes().chunks(chunk.max(1)).collect();
        for (i, piece) in pieces.iter().enumerate() {
            if verdict == Verdict::Respond {
                break;
            }
            let end = !trailers && i + 1 == pieces.len();
            verdict = policy.request_body(&mut req, piece, end);
        }
        if trailers && verdict == Verdict::Pause {
            verdict = policy.request_trailers(&mut req);
        }
        let response = req.response();
        policy.done(&mut req);
        (verdict, response)
    }

    /// Feeds `doc` to `scanner` in pieces of `sizes[0]`, `sizes[1]`, `sizes[0]`, ... bytes (each
    /// at least 1), stopping at the first violation, then finishes it.
    pub fn scan_alternating(
        mut scanner: impl BodyScanner,
        doc: &[u8],
        sizes: [usize; 2],
    ) -> Result<(), Violation> {
        let mut rest = doc;
        let mut k = 0;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(sizes[k % 2].max(1).min(rest.len()));
            k += 1;
            rest = tail;
            scanner.feed(chunk)?;
        }
        scanner.finish()
    }

    /// Feeds `doc` to `scanner` in `step`-byte pieces (at least 1), stopping at the first
    /// violation, then finishes it.
    pub fn scan_chunked(
        scanner: impl BodyScanner,
        doc: &[u8],
        step: usize,
    ) -> Result<(), Violation> {
        scan_alternating(scanner, doc, [step, step])
    }

    /// Feeds `doc` to `scanner` in pieces of 1 to `max` bytes chosen by `rng`, then finishes it.
    pub fn scan_random_chunks(
        mut scanner: impl BodyScanner,
        doc: &[u8],
        max: usize,
        rng: &mut Rng,
    ) -> Result<(), Violation> {
        let mut rest = doc;
        while !rest.is_empty() {
            let n = 1 + rng.below(rest.len().min(max));
            let (chunk, tail) = rest.split_at(n);
            scanner.feed(chunk)?;
            rest = tail;
        }
        scanner.finish()
    }

    /// MB/s of `f` over `bytes`-sized inputs, best of 5 runs of at least 300 ms (for the
    /// scanners' native micro-benchmarks).
    pub fn mb_per_s(bytes: usize, mut f: impl FnMut()) -> f64 {
        let mut best = 0.0f64;
        for _ in 0..5 {
            let start = std::time::Instant::now();
            let mut n = 0u64;
            while start.elapsed() < std::time::Duration::from_millis(300) {
                f();
                n += 1;
            }
            best = best.max(bytes as f64 * n as f64 / start.elapsed().as_secs_f64() / 1e6);
        }
        best
    }

    /// A small deterministic PRNG (xorshift64*), so failures reproduce.
    #[derive(Debug, Clone)]
    pub struct Rng(pub u64);

    impl Rng {
        /// The next 64 random bits.
        pub fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        /// A number in `0..n` (0 when `n` is 0).
        pub fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n.max(1) as u64) as usize
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestEnvoy;

    /// Rejects any body containing `!`, and bodies that end with `(`.
    struct Bang {
        at: u64,
        last: u8,
    }

    impl BodyScanner for Bang {
        fn feed(&mut self, chunk: &[u8]) -> Result<(), Violation> {
            for &b in chunk {
                if b == b'!' {
                    return Err(Violation::limit(self.at, "no bangs"));
                }
                self.at += 1;
                self.last = b;
            }
            Ok(())
        }
        fn finish(&mut self) -> Result<(), Violation> {
            if self.last == b'(' {
                Err(Violation::malformed(self.at, "unclosed"))
            } else {
                Ok(())
            }
        }
    }

    struct BangPolicy(BodyRules);

    impl BodyPolicy for BangPolicy {
        const NAME: &'static str = "bang";
        type Scanner = Bang;
        fn configure(config: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
            let denial: Option<DenialOverride> = crate::config::parse(config)?;
            let media = MediaTypes::new(&["application/json"], "+json", false);
            BodyRules::new("bang", "bang", media, Some(10), denial.as_ref(), host).map(BangPolicy)
        }
        fn rules(&self) -> &BodyRules {
            &self.0
        }
        fn scanner(&self) -> Bang {
            Bang { at: 0, last: 0 }
        }
    }

    fn deploy(envoy: &TestEnvoy, config: &str) -> crate::testing::TestPolicy<BangPolicy> {
        envoy.deploy::<BangPolicy>(config).unwrap()
    }

    fn run(
        policy: &crate::testing::TestPolicy<BangPolicy>,
        content_type: Option<&str>,
        chunks: &[&str],
        trailers: bool,
    ) -> (Vec<Verdict>, Option<crate::testing::LocalResponse>, Vec<u8>) {
        let mut req = policy.request(0);
        if let Some(ct) = content_type {
            req.add_header("content-type", ct);
        }
        let mut verdicts = vec![policy.request_headers(&mut req, chunks.is_empty())];
        for (i, chunk) in chunks.iter().enumerate() {
            let end = !trailers && i + 1 == chunks.len();
            verdicts.push(policy.request_body(&mut req, chunk.as_bytes(), end));
        }
        if trailers {
            verdicts.push(policy.request_trailers(&mut req));
        }
        let upstream = req.forwarded_body(crate::Direction::Request);
        (verdicts, req.response(), upstream)
    }

    #[test]
    fn media_types_match_exact_suffix_and_missing() {
        let m = MediaTypes::new(&["application/json"], "+json", false);
        assert!(m.inspects(None));
        assert!(m.inspects(Some("")));
        assert!(m.inspects(Some("Application/JSON; charset=utf-8")));
        assert!(m.inspects(Some("application/problem+json")));
        assert!(!m.inspects(Some("application/+json")));
        assert!(!m.inspects(Some("text/plain")));
        assert!(!m.inspects(Some("application/jsonx")));
        // A repeated content-type, as Envoy joins it.
        assert!(m.inspects(Some("text/plain,application/json; charset=utf-7")));
        assert!(m.inspects(Some("Application/Problem+JSON,text/plain")));
        assert!(!m.inspects(Some("text/plain,text/html")));
        assert!(MediaTypes::new(&[], "+json", true).inspects(Some("text/plain")));
    }

    #[test]
    fn scans_only_new_bytes_and_completes_at_end_or_trailers() {
        let envoy = TestEnvoy::new(1);
        let p = deploy(&envoy, "");
        let (verdicts, resp, upstream) = run(&p, None, &["ab", "cd", "e"], false);
        use Verdict::{Continue, Pause, Respond};
        assert_eq!(verdicts, [Continue, Pause, Pause, Continue]);
        assert!(resp.is_none());
        assert_eq!(
            upstream, b"abcde",
            "the whole body goes on after the verdict"
        );
        let (verdicts, resp, upstream) = run(&p, Some("application/json"), &["ab", "c("], true);
        assert_eq!(verdicts, [Continue, Pause, Pause, Respond]);
        assert!(
            upstream.is_empty(),
            "no byte of a rejected body goes upstream"
        );
        let resp = resp.unwrap();
        assert_eq!(resp.status, 400);
        assert_eq!(resp.json()["error"], "bang");
        assert_eq!(resp.json()["message"], "unclosed at byte 4");
        assert_eq!(envoy.counter("palisade.bang.allowed"), 1);
        assert_eq!(envoy.counter("palisade.bang.denied_malformed"), 1);
    }

    #[test]
    fn a_body_accepted_at_its_trailers_goes_on_whole() {
        let envoy = TestEnvoy::new(1);
        let p = deploy(&envoy, "");
        let (verdicts, resp, upstream) = run(&p, None, &["ab", "cd"], true);
        assert_eq!(verdicts.last(), Some(&Verdict::Continue));
        assert!(resp.is_none());
        assert_eq!(upstream, b"abcd");
    }

    #[test]
    fn rejects_as_soon_as_the_offending_chunk_arrives() {
        let envoy = TestEnvoy::new(1);
        let p = deploy(&envoy, "");
        use Verdict::{Continue, Pause, Respond};
        let (verdicts, resp, _) = run(&p, None, &["ab", "c!", "zz"], false);
        assert_eq!(verdicts, [Continue, Pause, Respond, Respond]);
        assert_eq!(resp.unwrap().json()["message"], "no bangs at byte 3");
        let (verdicts, resp, _) = run(&p, None, &["0123456", "789ab"], false);
        assert_eq!(verdicts[2], Respond);
        assert_eq!(
            resp.unwrap().json()["message"],
            "maxBodyBytes (10) exceeded at byte 10"
        );
        assert_eq!(envoy.counter("palisade.bang.denied_limit"), 2);
    }

    #[test]
    fn skips_other_media_types_and_bodiless_requests() {
        let envoy = TestEnvoy::new(1);
        let p = deploy(&envoy, "");
        let (verdicts, resp, upstream) = run(&p, Some("text/plain"), &["!!"], false);
        assert_eq!(verdicts, [Verdict::Continue, Verdict::Continue]);
        assert!(resp.is_none());
        assert_eq!(upstream, b"!!");
        assert_eq!(envoy.counter("palisade.bang.skipped"), 1);
        let (verdicts, _, _) = run(&p, Some("application/json"), &[], false);
        assert_eq!(verdicts, [Verdict::Continue]);
    }

    #[test]
    fn a_body_the_host_cannot_hand_over_is_rejected() {
        let envoy = TestEnvoy::new(1);
        let p = <BangPolicy as BodyPolicy>::configure(b"", &mut envoy.request(0)).unwrap();
        let mut req = envoy.request(0);
        let mut stream = BodyStream::default();
        let scanner = |_: Option<&str>| Bang { at: 0, last: 0 };
        assert_eq!(
            stream.on_headers(&p.0, &mut req, false, scanner),
            Verdict::Continue
        );
        // Envoy reports 4 bytes, none of which are readable.
        let verdict = stream.on_body(&p.0, &mut req, 4, true);
        assert_eq!(verdict, Verdict::Respond);
        assert_eq!(
            req.response().unwrap().json()["message"],
            "the body could not be read for inspection at byte 0"
        );
    }

    #[test]
    fn content_length_over_the_limit_is_rejected_before_the_body() {
        let envoy = TestEnvoy::new(1);
        let p = deploy(&envoy, "");
        let mut req = p.request(0);
        req.add_header("content-length", "11");
        assert_eq!(p.request_headers(&mut req, false), Verdict::Respond);
        assert_eq!(req.response().unwrap().status, 400);
    }

    #[test]
    fn denial_override_replaces_status_and_body() {
        let envoy = TestEnvoy::new(1);
        let p = deploy(
            &envoy,
            r#"{"status": 422, "body": "bad", "contentType": "text/plain"}"#,
        );
        let (_, resp, _) = run(&p, None, &["!"], false);
        let resp = resp.unwrap();
        assert_eq!((resp.status, resp.body.as_slice()), (422, &b"bad"[..]));
        assert_eq!(resp.header("content-type"), Some("text/plain"));
        let refused = envoy.deploy::<BangPolicy>(r#"{"status": 200}"#);
        assert!(refused.unwrap_err().contains("status"));
    }
}
