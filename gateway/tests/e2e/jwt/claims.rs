//! What verified claims drive: routing on `@request.auth.claims`, a DENY policy on
//! a claim, and rate limits keyed by the subject.

use serde_json::json;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_routes_the_request() {
    let s = Setup::start().await;
    let rsa = &s.keys.rsa;
    let mut admin_claims = claims(INLINE, "alice");
    admin_claims["groups"] = json!(["dev", "admin"]);
    let admin = rsa.sign(&admin_claims);
    let routed = s.call("GET", "/whoami", &[("authorization", &bearer(&admin))]).await;
    assert_eq!(routed.body, "admins", "@request.auth.claims route");
    let plain = s
        .call(
            "GET",
            "/whoami",
            &[("authorization", &bearer(&rsa.sign(&claims(INLINE, "alice"))))],
        )
        .await;
    assert_eq!(plain.echo()["path"], "/whoami", "no admin claim: the next route");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_claim_gets_403() {
    let s = Setup::start().await;
    let mut banned_claims = claims(INLINE, "alice");
    banned_claims["groups"] = json!(["banned"]);
    let banned = s.keys.rsa.sign(&banned_claims);
    assert_eq!(
        s.call("GET", "/public", &[("authorization", &bearer(&banned))])
            .await
            .status,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_counts_per_subject() {
    let s = Setup::start().await;
    let rsa = &s.keys.rsa;
    let alice = bearer(&rsa.sign(&claims(INLINE, "alice")));
    let bob = bearer(&rsa.sign(&claims(INLINE, "bob")));
    let mut statuses = Vec::new();
    for auth in [&alice, &alice, &alice, &bob] {
        statuses.push(s.call("GET", "/limited", &[("authorization", auth)]).await.status);
    }
    assert_eq!(statuses, [200, 200, 429, 200], "2 per minute per sub");
}
