//! `/config_dump` per part: listeners, routes, clusters and secrets as JSON, none of
//! them (nor the whole dump) showing a private key, and an unknown part refused.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_part_shows_its_resources() {
    let s = Setup::start().await;
    let gw = &s.gw;

    let (listeners_text, listeners) = section(gw.admin, "listeners");
    let ls = listeners["listeners"].as_array().expect("listeners");
    let ports: Vec<u64> = ls.iter().filter_map(|l| l["port"].as_u64()).collect();
    assert_eq!(ports, [80, 443], "{listeners_text}");
    let https = &ls[1];
    assert_eq!(https["protocol"], "HTTPS");
    assert_eq!(https["tls_servers"][0]["hosts"][0], "app.example.com");
    assert_eq!(https["tls_servers"][0]["certificate_name"], "secret default/app-tls");
    assert_eq!(https["virtual_hosts"][0]["domain"], "app.example.com");
    assert_eq!(https["virtual_hosts"][0]["routes"], 2);
    assert_eq!(listeners["version"], 1);

    let (routes_text, routes) = section(gw.admin, "routes");
    let tables = routes["routes"].as_array().expect("route tables");
    let names: Vec<&str> = tables.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["http.80", "https.443"], "{routes_text}");
    let first = &tables[0]["virtual_hosts"][0]["routes"][0];
    assert_eq!(first["matches"][0]["uri"]["prefix"], "/api");
    assert_eq!(first["action"]["forward"]["destinations"][0]["cluster_name"], CLUSTER);

    let (clusters_text, clusters) = section(gw.admin, "clusters");
    let c = &clusters["clusters"][0];
    assert_eq!(c["name"], CLUSTER, "{clusters_text}");
    assert_eq!(
        c["endpoints"][0]["address"],
        format!("127.0.0.1:{}", s.backend.addr.port())
    );

    let (secrets_text, secrets) = section(gw.admin, "secrets");
    let secret = &secrets["secrets"][0];
    assert_eq!(secret["name"], "secret default/app-tls", "{secrets_text}");
    assert_eq!(secret["dns_names"], serde_json::json!(["app.example.com"]));
    assert_eq!(secret["sha256_fingerprint"], fingerprint(&s.cert).as_str());
    assert!(secret["not_before"]
        .as_str()
        .is_some_and(|t| t < secret["not_after"].as_str().unwrap_or("")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_part_nor_the_whole_dump_shows_the_private_key() {
    let s = Setup::start().await;
    let admin = s.gw.admin;
    let key_body: String = s.cert.key_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let (_, whole) = request(admin, "GET", "/config_dump");
    for (name, text) in [
        ("listeners", section(admin, "listeners").0),
        ("routes", section(admin, "routes").0),
        ("clusters", section(admin, "clusters").0),
        ("secrets", section(admin, "secrets").0),
        ("whole", whole),
    ] {
        assert!(!text.contains("PRIVATE KEY"), "{name} shows a private key");
        assert!(!text.contains(&key_body[..40]), "{name} shows key material");
        assert!(
            !text.replace("\\n", "").contains(&key_body[..40]),
            "{name} shows key material"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_part_is_refused_with_the_known_ones() {
    let s = Setup::start().await;
    let (status, body) = request(s.gw.admin, "GET", "/config_dump?resource=endpoints");
    assert_eq!(status, 400);
    assert!(body.contains("listeners, routes, clusters, secrets"), "{body}");
}
