//! `scripts/demo.sh`, the README's first command, run as a user runs it (with the
//! binaries this test build made, on free ports): it serves app.example.com through
//! its demo backends, and when the gateway cannot start it says so with the
//! gateway's own last lines and exits 1, rather than announce a demo that is not
//! there.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The demo script with this build's binaries, `config` as its folder, free ports
/// (the backends' are written into the folder's ServiceEntry, where the example
/// has 9001-9003).
fn demo(config: &Path, state: &Path) -> (Command, u16) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = Path::new(env!("CARGO_BIN_EXE_strait-gateway"))
        .parent()
        .expect("the binaries' folder")
        .to_path_buf();
    let http = free_port();
    let mut cmd = Command::new(root.join("scripts/demo.sh"));
    let echo: Vec<String> = (0..3).map(|_| free_port().to_string()).collect();
    let entry = config.join("serviceentry.yaml");
    if let Ok(text) = std::fs::read_to_string(&entry) {
        let mut text = text;
        for (default, port) in ["9001", "9002", "9003"].iter().zip(&echo) {
            text = text.replace(&format!("http: {default}"), &format!("http: {port}"));
        }
        std::fs::write(&entry, text).expect("write");
    }
    cmd.env("STRAIT_DEMO_BIN", bin)
        .env("STRAIT_DEMO_CONFIG", config)
        .env("STRAIT_DEMO_STATE", state)
        .env("HTTP_PORT", http.to_string())
        .env("HTTPS_PORT", free_port().to_string())
        .env("ADMIN_PORT", free_port().to_string())
        .env("HEALTH_PORT", free_port().to_string())
        .env("METRICS_PORT", free_port().to_string())
        .env("ECHO_PORTS", echo.join(" "))
        // Its own process group: the test stops the script and everything it started.
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    (cmd, http)
}

/// A copy of `from` (the demo writes its certificate's Secret into the folder).
fn copy_dir(from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(from).expect("read").flatten() {
        if entry.path().is_file() && !entry.file_name().to_string_lossy().contains(".generated.") {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
        }
    }
    dir
}

struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.0.id())])
            .output();
        let _ = self.0.wait();
    }
}

#[test]
fn the_demo_fails_loudly_when_the_gateway_cannot_start() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    let config = copy_dir(&fixtures);
    let state = tempfile::tempdir().expect("state");
    let (mut cmd, _) = demo(config.path(), state.path());
    let mut child = Group(cmd.spawn().expect("demo.sh"));
    // Before the fix the script announced the demo and waited forever: bounded here.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            break status;
        }
        assert!(Instant::now() < deadline, "demo.sh neither failed nor stopped");
        std::thread::sleep(Duration::from_millis(100));
    };
    let read = |pipe: Option<&mut dyn std::io::Read>| {
        let mut text = String::new();
        if let Some(p) = pipe {
            let _ = p.read_to_string(&mut text);
        }
        text
    };
    let stdout = read(child.0.stdout.as_mut().map(|p| p as &mut dyn std::io::Read));
    let stderr = read(child.0.stderr.as_mut().map(|p| p as &mut dyn std::io::Read));
    assert_eq!(status.code(), Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(!stdout.contains("Strait is serving"), "{stdout}");
    assert!(stderr.contains("strait-gateway did not start"), "{stderr}");
    assert!(
        stderr.contains("invalid regex \"/users/(unclosed\""),
        "the gateway's own reason is shown: {stderr}"
    );
}

#[test]
fn the_demo_serves_app_example_com() {
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/app-example-com");
    let config = copy_dir(&example);
    let state = tempfile::tempdir().expect("state");
    let (mut cmd, http) = demo(config.path(), state.path());
    let mut child = Group(cmd.spawn().expect("demo.sh"));
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.contains("Strait is serving") => break,
            Ok(line) => seen.push(line),
            Err(_) => {}
        }
        assert!(Instant::now() < deadline, "no announcement: {seen:#?}");
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("demo.sh exited {status}: {seen:#?}");
        }
    }
    // `/` splits 90/10 between stable and canary: among 20 requests (one curl,
    // one connection), the stable backend answers; a single one missed it 1 in 10.
    let url = format!("http://app.example.com:{http}/");
    let out = Command::new("curl")
        .args(["-s", "--resolve", &format!("app.example.com:{http}:127.0.0.1")])
        .args(std::iter::repeat_n(url.as_str(), 20))
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains("stable"),
        "the stable backend answered through the gateway: {body}"
    );
}
