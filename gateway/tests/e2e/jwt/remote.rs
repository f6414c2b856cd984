//! Issuers whose keys are fetched: a JWKS URI with the token in a header, a query
//! parameter or a cookie (forwardOriginalToken keeps it), keys found through OpenID
//! discovery, a JWKS that fails (the keys already fetched stay), and key rotation.

use std::sync::atomic::Ordering;
use std::time::Duration;

use strait_config::testing::jwt::{jwks, TestKey};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_issuers_token_is_read_from_a_header_a_parameter_or_a_cookie() {
    let s = Setup::start().await;
    let remote = s.keys.remote.sign(&claims(REMOTE, "carol"));
    let via_header = s.call("GET", "/secure/h", &[("x-token", &remote)]).await;
    assert_eq!(via_header.status, 200, "{}", via_header.body);
    assert_eq!(via_header.upstream_header("x-token"), Some(remote.clone()));
    let via_param = s.call("GET", &format!("/secure/p?a=1&token={remote}"), &[]).await;
    assert_eq!(via_param.status, 200);
    assert_eq!(via_param.echo()["path"], format!("/secure/p?a=1&token={remote}"));
    let cookie = format!("theme=dark; session={remote}");
    assert_eq!(s.call("GET", "/secure/c", &[("cookie", &cookie)]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_found_through_openid_discovery() {
    let s = Setup::start().await;
    let discovered = s
        .keys
        .remote
        .sign(&claims(&format!("http://127.0.0.1:{}", s.jwks.port), "erin"));
    let via_discovery = s.call("GET", "/secure/d", &[("x-oidc-token", &discovered)]).await;
    assert_eq!(
        via_discovery.status, 200,
        "keys through OpenID discovery: {}",
        via_discovery.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_jwks_leaves_the_keys_already_fetched_in_use() {
    let s = Setup::start().await;
    let remote = s.keys.remote.sign(&claims(REMOTE, "carol"));
    assert_eq!(s.call("GET", "/secure", &[("x-token", &remote)]).await.status, 200);

    s.jwks.failing.store(true, Ordering::SeqCst);
    let before = s.jwks.fetches.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(s.jwks.fetches.load(Ordering::SeqCst) > before, "refreshed periodically");
    assert_eq!(s.call("GET", "/secure", &[("x-token", &remote)]).await.status, 200);
    assert!(
        s.gw.log().contains("keeping the previous keys"),
        "the failure is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_picked_up_and_the_retired_one_refused() {
    let s = Setup::start().await;
    let remote = s.keys.remote.sign(&claims(REMOTE, "carol"));
    assert_eq!(s.call("GET", "/secure", &[("x-token", &remote)]).await.status, 200);

    // Once the JWKS answers with a new key, its tokens pass.
    let rotated = TestKey::ed25519("remote-2");
    *s.jwks.body.lock().expect("lock") = jwks(&[&rotated]);
    let token = rotated.sign(&claims(REMOTE, "dave"));
    let mut status = 0;
    for _ in 0..40 {
        status = s.call("GET", "/secure", &[("x-token", &token)]).await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(status, 200, "rotated key picked up");
    assert_eq!(
        s.call("GET", "/secure", &[("x-token", &remote)]).await.status,
        401,
        "the retired key no longer verifies"
    );
}
