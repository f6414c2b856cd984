//! `straitctl proxy-config` and `proxy-status` run as users run them: the built
//! binary against an admin port. The admin port here serves JSON captured from a
//! real `strait-gateway` (tests/fixtures/admin/, a canary route, a redirect and a
//! TLS Secret); the gateway crate's e2e tests run the same code against live
//! gateways.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};

/// Serves the fixtures as a gateway's admin port would, on a free loopback port.
/// The thread ends with the test process.
fn fake_admin() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            serve(stream);
        }
    });
    port
}

fn serve(mut stream: TcpStream) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // Drain the headers so the client sees a clean close.
    let mut header = String::new();
    while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
        header.clear();
    }
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let fixture = match path {
        "/server_info" => Some("server_info"),
        p => p
            .strip_prefix("/config_dump?resource=")
            .filter(|r| ["listeners", "routes", "clusters", "secrets"].contains(r)),
    };
    let (status, body) = match fixture {
        Some(name) => {
            let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/admin/{name}.json"));
            ("200 OK", std::fs::read_to_string(file).expect("fixture"))
        }
        None => ("400 Bad Request", "unknown resource\n".to_string()),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
}

fn straitctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_straitctl"))
        .args(args)
        .output()
        .expect("run straitctl")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const V1: &str = "outbound|80|v1|backend.default.svc.cluster.local";
const V2: &str = "outbound|80|v2|backend.default.svc.cluster.local";

#[test]
fn tables_read_like_istioctl() {
    let target = format!("127.0.0.1:{}", fake_admin());
    let table = |section: &str| {
        let out = straitctl(&["proxy-config", section, &target]);
        assert!(out.status.success(), "{section}: {out:?}");
        stdout(&out)
    };
    assert_eq!(
        table("listeners"),
        "\
PORT   PROTOCOL   SNI                               CERTIFICATE              DESTINATION
80     HTTP       -                                 -                        Route: http.80 (app.example.com)
443    HTTPS      app.example.com,www.example.com   secret default/app-tls   Route: https.443 (app.example.com, www.example.com)
"
    );
    let routes = table("routes");
    let lines: Vec<&str> = routes.lines().collect();
    assert_eq!(lines.len(), 10, "{routes}");
    assert!(lines[0].starts_with("ROUTE       VIRTUAL HOST      MATCH"), "{routes}");
    let canary = format!("http.80     app.example.com   /api* header:x-user=bob   {V1} 90%, {V2} 10%");
    assert!(lines[1].starts_with(&canary), "{routes}");
    assert!(lines[1].ends_with("VirtualService default/app http[0]"), "{routes}");
    assert!(
        lines[2].contains("/old                      redirect 301 uri=/new"),
        "{routes}"
    );
    assert!(lines[9].starts_with("https.443   www.example.com   /*"), "{routes}");
    assert_eq!(
        table("clusters"),
        format!(
            "\
NAME                                               ENDPOINTS         LB            TLS
{V1}   127.0.0.1:18081   ROUND_ROBIN   -
{V2}   127.0.0.1:18082   ROUND_ROBIN   -
"
        )
    );
    assert_eq!(
        table("secrets"),
        "\
NAME                     DNS NAMES                         NOT AFTER              SHA-256 FINGERPRINT
secret default/app-tls   app.example.com,www.example.com   2036-11-21T00:55:24Z   4616c6ef2bb201a984b753870a7986bcbaec39cc3ece3caee47077e475834041
"
    );
}

#[test]
fn json_and_yaml_show_the_admin_data() {
    let target = format!("127.0.0.1:{}", fake_admin());
    let out = straitctl(&["proxy-config", "clusters", &target, "-o", "json"]);
    assert!(out.status.success(), "{out:?}");
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admin/clusters.json");
    let served: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).expect("fixture")).expect("fixture JSON");
    assert_eq!(shown, served);

    let out = straitctl(&["pc", "secrets", &target, "-o", "yaml"]);
    assert!(out.status.success(), "{out:?}");
    let yaml = stdout(&out);
    assert!(
        yaml.starts_with("secrets:\n  - chain_length: 1\n    dns_names:\n      - app.example.com\n"),
        "{yaml}"
    );
    // Dates and serials start with digits: quoted, so YAML 1.1 readers keep them strings.
    assert!(yaml.contains("    not_after: \"2036-11-21T00:55:24Z\"\n"), "{yaml}");
    assert!(yaml.contains("    name: secret default/app-tls\n"), "{yaml}");
    assert!(yaml.ends_with("version: 1\n"), "{yaml}");
}

#[test]
fn proxy_status_marks_unreachable_targets_and_exits_1() {
    let up = format!("127.0.0.1:{}", fake_admin());
    // A port that was free a moment ago: nothing answers there.
    let down = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("127.0.0.1:{}", l.local_addr().expect("addr").port())
    };
    let out = straitctl(&["proxy-status", &up, &down]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "TARGET            STATUS        VERSION   LAST UPDATE   DIGEST         CONFIG"
    );
    assert_eq!(
        lines[1],
        format!("{up}   SYNCED        1         ACCEPTED      9bf06b32abcf   /etc/strait/config (2 files)")
    );
    assert!(lines[2].starts_with(&format!("{down}   UNREACHABLE   -")), "{text}");

    let out = straitctl(&["proxy-status", &up, "-o", "json"]);
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json[0]["sync"], "SYNCED");
    assert_eq!(json[0]["config_version"], 1);
    assert_eq!(json[0]["sources"], serde_json::json!(["gw.yaml", "secret.yaml"]));
}

#[test]
fn bad_targets_and_errors_exit_2_with_a_message() {
    let out = straitctl(&["proxy-config", "routes", "gw:notaport"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad target \"gw:notaport\""),
        "{out:?}"
    );
    // The port is taken by nothing: connection refused, said plainly.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    let out = straitctl(&["proxy-config", "routes", &format!("127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("straitctl: 127.0.0.1:"),
        "{out:?}"
    );
    let out = straitctl(&["proxy-config", "endpoints", "127.0.0.1"]);
    assert_eq!(out.status.code(), Some(2), "clap rejects an unknown section");
}
