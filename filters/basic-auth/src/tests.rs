//! The decision, natively, against the kit's in-memory Envoy.

use super::*;
use base64::Engine;
use palisade_kit::testing::{TestEnvoy, TestPolicy, TestRequest};
use serde_json::json;

// Generated with Apache htpasswd 2.4 (`-B -C 4`, `-5`, `-2`, `-s`).
const ALICE: &str = "$2y$04$W3MDKVY2zKiDKNpoh1Ty5uI6OdoDX0M.aSgxfQdYaFAqMQNBge8YS"; // open:se:same
const BOB: &str = "$6$jCiCFNd4eX.v3aMw$HDCOtfKmg8ZxGA4szzLD/4ChArk5x4/.8pMgZnXKP4MZF63yJfxIltxWEz.54kh7/HngNw9Lda0yH0BGRtlL/1"; // hunter2
const CAROL: &str = "$5$CkaK.UsOd4VhRS2V$IQZXwFHyRmh1Oh4jpS22h/s9176lbVMSUZRSGvCtLF1"; // c4rol
const DAVE: &str = "{SHA}V/TFCq1IFH0/cufiUW4dVJbMbqs="; // dave!
const JURGEN: &str = "$2y$04$ywA7T2ioj6opfU5tLslDiOuVRLjn3aru86.kAoznWJcyo0K5KspNm"; // pässwörd

fn config(extra: serde_json::Value) -> String {
    let mut c = json!({
        "realm": "orders-api",
        "users": [
            {"username": "alice", "passwordHash": ALICE},
            {"username": "jürgen", "passwordHash": JURGEN},
        ],
        "htpasswd": format!("bob:{BOB}\ncarol:{CAROL}\ndave:{DAVE}\n"),
    });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    c.to_string()
}

fn policy(envoy: &TestEnvoy, extra: serde_json::Value) -> TestPolicy<BasicAuth> {
    envoy.deploy::<BasicAuth>(&config(extra)).unwrap()
}

fn basic(user_pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
}

fn request(envoy: &TestEnvoy, authorization: Option<&str>) -> TestRequest {
    let mut req = envoy.request(0);
    req.add_header(":method", "GET").add_header(":path", "/");
    if let Some(a) = authorization {
        req.add_header("authorization", a);
    }
    req
}

fn run(p: &TestPolicy<BasicAuth>, req: &mut TestRequest) -> Verdict {
    p.send(req)
}

fn assert_denied(req: &TestRequest, code: &str) {
    let resp = req.response().expect("a denial");
    assert_eq!(resp.status, 401);
    assert_eq!(resp.json()["error"], code);
    assert_eq!(
        resp.header("www-authenticate"),
        Some("Basic realm=\"orders-api\", charset=\"UTF-8\"")
    );
    assert_eq!(resp.header("content-type"), Some("application/json"));
}

#[test]
fn admits_every_hash_format_and_hands_off_the_identity() {
    let envoy = TestEnvoy::new(1);
    let p = policy(&envoy, json!({}));
    for (user, pass) in [
        ("alice", "open:se:same"),
        ("bob", "hunter2"),
        ("carol", "c4rol"),
        ("dave", "dave!"),
        ("jürgen", "pässwörd"),
    ] {
        let mut req = request(&envoy, Some(&basic(&format!("{user}:{pass}"))));
        assert_eq!(run(&p, &mut req), Verdict::Continue, "{user}");
        assert!(req.response().is_none());
        let id = Identity::current(&req).expect("identity");
        assert_eq!(id.authenticated_by, "basic-auth");
        assert_eq!(id.principal.as_deref(), Some(user));
        // hideCredentials defaults to true.
        assert_eq!(req.request_header("authorization"), None, "{user}");
    }
    assert_eq!(envoy.counter("palisade.basic_auth.allowed"), 5);
    assert_eq!(envoy.counter("palisade.basic_auth.verified"), 5);
}

#[test]
fn denies_missing_malformed_and_invalid_credentials_distinctly() {
    let envoy = TestEnvoy::new(1);
    let p = policy(&envoy, json!({}));
    let latin1 = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(b"j\xfcrgen:x")
    );
    for (authorization, code) in [
        (None, "missing_credentials"),
        (
            Some("Bearer abc.def.ghi".to_owned()),
            "malformed_credentials",
        ),
        (Some("".to_owned()), "malformed_credentials"),
        (Some("Basic".to_owned()), "malformed_credentials"),
        (
            Some("Basic !!!not-base64".to_owned()),
            "malformed_credentials",
        ),
        (Some(basic("alice")), "malformed_credentials"),
        (Some(latin1), "malformed_credentials"),
        (Some(basic("alice:wrong")), "invalid_credentials"),
        (Some(basic("alice:open")), "invalid_credentials"),
        (Some(basic("alice:open:se:same:")), "invalid_credentials"),
        (Some(basic("Alice:open:se:same")), "invalid_credentials"),
        (Some(basic("mallory:open:se:same")), "invalid_credentials"),
        (Some(basic(":")), "invalid_credentials"),
    ] {
        let mut req = request(&envoy, authorization.as_deref());
        assert_eq!(run(&p, &mut req), Verdict::Respond, "{authorization:?}");
        assert_denied(&req, code);
        assert_eq!(Identity::current(&req), None);
    }
    let wrong_scheme = {
        let mut req = request(&envoy, Some("Bearer x"));
        run(&p, &mut req);
        req.response().map(|r| r.json()["message"].clone())
    };
    let no_credentials = {
        let mut req = request(&envoy, Some("Basic"));
        run(&p, &mut req);
        req.response().map(|r| r.json()["message"].clone())
    };
    assert_ne!(wrong_scheme, no_credentials);
    assert_eq!(envoy.counter("palisade.basic_auth.denied_missing"), 1);
    assert_eq!(envoy.counter("palisade.basic_auth.denied_malformed"), 8);
    assert_eq!(envoy.counter("palisade.basic_auth.denied_invalid"), 6);
    assert_eq!(envoy.counter("palisade.basic_auth.allowed"), 0);
}

#[test]
fn scheme_is_case_insensitive() {
    let envoy = TestEnvoy::new(1);
    let p = policy(&envoy, json!({}));
    let header = basic("bob:hunter2").replacen("Basic", "bAsIc", 1);
    let mut req = request(&envoy, Some(&header));
    assert_eq!(run(&p, &mut req), Verdict::Continue);
}

#[test]
fn forwards_the_username_replacing_a_client_value_and_can_keep_credentials() {
    let envoy = TestEnvoy::new(1);
    let p = policy(
        &envoy,
        json!({"forwardUsernameHeader": "X-User", "hideCredentials": false}),
    );
    let header = basic("jürgen:pässwörd");
    let mut req = request(&envoy, Some(&header));
    req.add_header("x-user", "admin");
    assert_eq!(run(&p, &mut req), Verdict::Continue);
    let forwarded: Vec<_> = req
        .headers()
        .into_iter()
        .filter(|(n, _)| n == "x-user")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(forwarded, ["jürgen"]);
    assert_eq!(req.request_header("authorization"), Some(header));
}

#[test]
fn repeated_credentials_are_served_from_the_cache_until_the_ttl() {
    let envoy = TestEnvoy::new(1);
    let p = policy(&envoy, json!({"cacheTtlSeconds": 60}));
    let ok = basic("alice:open:se:same");
    for _ in 0..5 {
        let mut req = request(&envoy, Some(&ok));
        assert_eq!(run(&p, &mut req), Verdict::Continue);
        assert_eq!(Identity::current(&req).unwrap().principal.unwrap(), "alice");
    }
    assert_eq!(envoy.counter("palisade.basic_auth.verified"), 1);
    assert_eq!(envoy.counter("palisade.basic_auth.cache_hit"), 4);

    // A failure is remembered as a failure, and never admits anyone.
    for _ in 0..3 {
        let mut req = request(&envoy, Some(&basic("alice:guess")));
        assert_eq!(run(&p, &mut req), Verdict::Respond);
        assert_denied(&req, "invalid_credentials");
    }
    assert_eq!(envoy.counter("palisade.basic_auth.verified"), 2);
    assert_eq!(envoy.counter("palisade.basic_auth.cache_hit"), 6);
    // The right password is still admitted after failures for the same user.
    let mut req = request(&envoy, Some(&ok));
    assert_eq!(run(&p, &mut req), Verdict::Continue);

    // After the TTL the password is verified again.
    envoy.advance_ms(60_001);
    let mut req = request(&envoy, Some(&ok));
    assert_eq!(run(&p, &mut req), Verdict::Continue);
    assert_eq!(envoy.counter("palisade.basic_auth.verified"), 3);

    // A new configuration (a new policy instance) starts with an empty cache.
    let fresh = policy(&envoy, json!({}));
    let mut req = request(&envoy, Some(&ok));
    assert_eq!(run(&fresh, &mut req), Verdict::Continue);
    assert_eq!(envoy.counter("palisade.basic_auth.verified"), 4);
}

#[test]
fn a_changed_password_hash_takes_effect_with_the_new_configuration() {
    let envoy = TestEnvoy::new(1);
    let old = policy(&envoy, json!({}));
    let mut req = request(&envoy, Some(&basic("dave:dave!")));
    assert_eq!(run(&old, &mut req), Verdict::Continue);
    // dave's password changes to hunter2 (bob's hash reused for brevity).
    let new = envoy
        .deploy::<BasicAuth>(
            &json!({"realm": "orders-api", "users": [{"username": "dave", "passwordHash": BOB}]})
                .to_string(),
        )
        .unwrap();
    let mut req = request(&envoy, Some(&basic("dave:dave!")));
    assert_eq!(run(&new, &mut req), Verdict::Respond);
    let mut req = request(&envoy, Some(&basic("dave:hunter2")));
    assert_eq!(run(&new, &mut req), Verdict::Continue);
}

#[test]
fn without_a_cache_every_request_is_verified() {
    let envoy = TestEnvoy::new(1);
    let p = policy(&envoy, json!({"cacheTtlSeconds": 0}));
    for _ in 0..3 {
        let mut req = request(&envoy, Some(&basic("carol:c4rol")));
        assert_eq!(run(&p, &mut req), Verdict::Continue);
    }
    assert_eq!(envoy.counter("palisade.basic_auth.verified"), 3);
    assert_eq!(envoy.counter("palisade.basic_auth.cache_hit"), 0);
}

#[test]
fn unknown_users_cost_a_verification_too() {
    let envoy = TestEnvoy::new(1);
    let p = policy(&envoy, json!({}));
    let mut req = request(&envoy, Some(&basic("mallory:x")));
    assert_eq!(run(&p, &mut req), Verdict::Respond);
    assert_denied(&req, "invalid_credentials");
    assert_eq!(envoy.counter("palisade.basic_auth.verified"), 1);

    // The decoy is the configured hash of median cost: here SHA-256-crypt (about 2 ms), not
    // the {SHA} one (1 µs) nor the bcrypt cost 10 one (90 ms).
    let bcrypt10 = "$2y$10$DZuF.YbB7aQtN29MploS7e5arToM7GaDQ08a.MCj3rvSet0Mq5nlu";
    let mixed = json!({"htpasswd": format!("a:{DAVE}\nb:{bcrypt10}\nc:{CAROL}\n")}).to_string();
    let p = BasicAuth::configure(mixed.as_bytes(), &mut envoy.request(0)).unwrap();
    assert_eq!(p.users[p.decoy].username, "c");
}

#[test]
fn preflights_pass_unauthenticated_unless_disabled() {
    let envoy = TestEnvoy::new(1);
    let preflight = |envoy: &TestEnvoy| {
        let mut req = envoy.request(0);
        req.add_header(":method", "OPTIONS")
            .add_header("origin", "https://app.example")
            .add_header("access-control-request-method", "POST")
            .add_header("x-user", "admin");
        req
    };
    let p = policy(&envoy, json!({"forwardUsernameHeader": "x-user"}));
    let mut req = preflight(&envoy);
    assert_eq!(run(&p, &mut req), Verdict::Continue);
    assert_eq!(
        req.request_header("x-user"),
        None,
        "a client value must not pass"
    );
    assert_eq!(Identity::current(&req), None);
    assert_eq!(envoy.counter("palisade.basic_auth.preflight"), 1);

    let strict = policy(&envoy, json!({"allowCorsPreflight": false}));
    let mut req = preflight(&envoy);
    assert_eq!(run(&strict, &mut req), Verdict::Respond);
    assert_denied(&req, "missing_credentials");

    // An OPTIONS that is not a preflight is authenticated.
    let mut req = envoy.request(0);
    req.add_header(":method", "OPTIONS");
    assert_eq!(run(&p, &mut req), Verdict::Respond);

    // Nor is one with a body, whatever its headers say.
    let mut req = preflight(&envoy);
    req.add_header("content-length", "2");
    assert_eq!(p.request_headers(&mut req, false), Verdict::Respond);
    assert_denied(&req, "missing_credentials");
    assert_eq!(envoy.counter("palisade.basic_auth.preflight"), 1);
}

#[test]
fn several_credentials_are_refused() {
    let envoy = TestEnvoy::new(1);
    let p = policy(&envoy, json!({}));
    let (alice, bob) = (basic("alice:open:se:same"), basic("bob:hunter2"));
    let cases: [Vec<String>; 4] = [
        vec![alice.clone(), bob.clone()],
        vec![alice.clone(), alice.clone()],
        // Envoy joins repeated `Authorization` lines into one value.
        vec![format!("{alice},{bob}")],
        vec![format!("{alice}, Bearer abc")],
    ];
    for lines in &cases {
        let mut req = request(&envoy, None);
        for line in lines {
            req.add_header("authorization", line);
        }
        assert_eq!(run(&p, &mut req), Verdict::Respond, "{lines:?}");
        assert_denied(&req, "ambiguous_credentials");
    }
    assert_eq!(envoy.counter("palisade.basic_auth.denied_ambiguous"), 4);
    assert_eq!(envoy.counter("palisade.basic_auth.allowed"), 0);
    assert_eq!(
        envoy.counter("palisade.basic_auth.verified"),
        0,
        "refused before any hashing"
    );
}

#[test]
fn warns_about_sha1_and_never_logs_secrets() {
    let envoy = TestEnvoy::new(1);
    let p = policy(&envoy, json!({}));
    for creds in ["dave:dave!", "alice:wrong", "bob:hunter2"] {
        let mut req = request(&envoy, Some(&basic(creds)));
        run(&p, &mut req);
    }
    let logs = envoy.logs();
    assert!(logs.iter().any(|(level, line)| *level == LogLevel::Warn
        && line.contains("user `dave`")
        && line.contains("{SHA}")));
    for (_, line) in &logs {
        for secret in [ALICE, BOB, CAROL, DAVE, JURGEN, "dave!", "hunter2", "wrong"] {
            assert!(!line.contains(secret), "log line leaks a secret: {line}");
        }
    }
}

#[test]
fn a_broken_configuration_fails_and_names_the_user() {
    let envoy = TestEnvoy::new(1);
    let bad = json!({"users": [{"username": "eve", "passwordHash": "$apr1$x$y"}]}).to_string();
    let err = match BasicAuth::configure(bad.as_bytes(), &mut envoy.request(0)) {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    };
    assert_eq!(err.path, "users[0]");
    assert!(err.message.contains("eve"));
}

#[test]
fn overlong_passwords_are_refused_without_hashing() {
    let envoy = TestEnvoy::new(1);
    let p = policy(&envoy, json!({}));
    let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
    for user in ["bob", "mallory"] {
        let mut req = request(&envoy, Some(&basic(&format!("{user}:{long}"))));
        assert_eq!(run(&p, &mut req), Verdict::Respond);
        assert_denied(&req, "invalid_credentials");
    }
    assert_eq!(envoy.counter("palisade.basic_auth.verified"), 0);
    // The limit itself is allowed (and hashed).
    let limit = "x".repeat(MAX_PASSWORD_BYTES);
    let mut req = request(&envoy, Some(&basic(&format!("bob:{limit}"))));
    assert_eq!(run(&p, &mut req), Verdict::Respond);
    assert_eq!(envoy.counter("palisade.basic_auth.verified"), 1);
}

#[test]
fn each_worker_has_its_own_cache_and_a_refused_configuration_names_the_field() {
    let envoy = TestEnvoy::new(2);
    let p = policy(&envoy, json!({"cacheTtlSeconds": 60}));
    let ok = basic("carol:c4rol");
    for worker in [0, 1, 0, 1] {
        let mut req = p.request(worker);
        req.add_header("authorization", &ok);
        assert_eq!(p.send(&mut req), Verdict::Continue);
        p.done(&mut req);
    }
    assert_eq!(envoy.counter("palisade.basic_auth.verified"), 2);
    assert_eq!(envoy.counter("palisade.basic_auth.cache_hit"), 2);

    let bad = json!({"users": [{"username": "eve", "passwordHash": "$apr1$x$y"}]}).to_string();
    let err = envoy.deploy::<BasicAuth>(&bad).unwrap_err();
    assert!(
        err.starts_with("basic-auth: invalid configuration at `users[0]`"),
        "{err}"
    );
}

/// Host calls per request, pinned so a regression shows; prints the rows of `BENCHMARKS.md`
/// ("Host calls per request") with `-- --nocapture`.
#[test]
fn host_calls_per_request() {
    let envoy = TestEnvoy::new(1);
    let p = policy(&envoy, json!({}));
    let send = |authorization: &str| {
        let mut r = request(&envoy, Some(authorization));
        run(&p, &mut r);
        r
    };
    let first = send(&basic("carol:c4rol"));
    assert!(first.response().is_none());
    let cached = send(&basic("carol:c4rol"));
    assert!(cached.response().is_none());
    let denied = send(&basic("carol:wrong"));
    assert_denied(&denied, "invalid_credentials");
    let (first, cached, denied) = (first.host_calls(), cached.host_calls(), denied.host_calls());
    println!(
        "{}",
        first.markdown_row("basic-auth", "allowed (first: verified)")
    );
    println!("{}", cached.markdown_row("basic-auth", "allowed (cached)"));
    println!(
        "{}",
        denied.markdown_row("basic-auth", "denied (wrong password)")
    );
    assert!(cached.total() <= 4, "{cached:?}");
}
