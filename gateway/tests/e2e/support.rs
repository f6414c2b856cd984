//! The real `strait-gateway` binary as a process on loopback, started on a config
//! folder and stopped (SIGKILL) when dropped; with the helpers the test binaries
//! share (`tests/common`), re-exported.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use crate::common::*;

/// Writes `files` (name, content) to a fresh folder and starts a gateway on it.
pub fn start_with(files: &[(&str, &str)]) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).expect("write config");
    }
    (Gateway::start(dir.path(), &[]), dir)
}

/// A running gateway process.
pub struct Gateway {
    child: Option<Child>,
    pub http: u16,
    pub https: u16,
    pub admin: u16,
    pub metrics: u16,
    log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl Gateway {
    /// Starts `strait-gateway` on `dir` and waits until it is ready.
    pub fn start(dir: &Path, extra: &[&str]) -> Gateway {
        match Gateway::try_start(dir, extra) {
            Ok(g) => g,
            Err(log) => panic!("gateway did not become ready:\n{log}"),
        }
    }

    /// Like `start`, returning the log when it does not become ready.
    pub fn try_start(dir: &Path, extra: &[&str]) -> Result<Gateway, String> {
        let [http, https] = free_ports::<2>();
        Gateway::try_start_on(dir, extra, http, https)
    }

    /// Like `start`, with Gateway ports 80 and 443 on `http` and `https`.
    pub fn start_on(dir: &Path, extra: &[&str], http: u16, https: u16) -> Gateway {
        match Gateway::try_start_on(dir, extra, http, https) {
            Ok(g) => g,
            Err(log) => panic!("gateway did not become ready:\n{log}"),
        }
    }

    fn try_start_on(dir: &Path, extra: &[&str], http: u16, https: u16) -> Result<Gateway, String> {
        Gateway::launch(
            &[std::ffi::OsStr::new("--config-dir"), dir.as_os_str()],
            extra,
            http,
            https,
        )
    }

    /// Starts `strait-gateway --controller controller --proxy-id name` and waits until
    /// it serves (it needs its first configuration for that).
    pub fn follow(controller: &str, name: &str, extra: &[&str]) -> Gateway {
        let [http, https] = free_ports::<2>();
        Gateway::follow_on(controller, name, extra, http, https)
    }

    /// As `follow`, with the Gateways' ports 80 and 443 on `http` and `https`.
    pub fn follow_on(controller: &str, name: &str, extra: &[&str], http: u16, https: u16) -> Gateway {
        let args = ["--controller", controller, "--proxy-id", name].map(std::ffi::OsStr::new);
        match Gateway::launch(&args, extra, http, https) {
            Ok(g) => g,
            Err(log) => panic!("gateway {name} did not become ready:\n{log}"),
        }
    }

    /// Starts the binary with `source` (where its configuration comes from), the
    /// test's ports and `extra`, and waits until it is ready.
    fn launch(source: &[&std::ffi::OsStr], extra: &[&str], http: u16, https: u16) -> Result<Gateway, String> {
        let [admin, health, metrics] = free_ports::<3>();
        let logdir = tempfile::tempdir().expect("tempdir");
        let log = logdir.path().join("gateway.log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_strait-gateway"))
            .args(source)
            .args([
                "--bind-address",
                "127.0.0.1",
                "--namespace",
                "default",
                "--threads",
                "2",
            ])
            .arg(format!("--port-map=80={http},443={https}"))
            .arg(format!("--admin-port={admin}"))
            .arg(format!("--health-port={health}"))
            .arg(format!("--metrics-port={metrics}"))
            .args(extra)
            .env("RUST_LOG", std::env::var("GW_LOG").unwrap_or("info".into()))
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn strait-gateway");
        let mut gw = Gateway {
            child: Some(child),
            http,
            https,
            admin,
            metrics,
            log,
            _logdir: logdir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = gw.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(format!("exited with {status}\n{}", gw.log()));
            }
            if raw_get(health, "/healthz/ready").is_some_and(|(s, _)| s == 200) {
                return Ok(gw);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(gw.log())
    }

    /// What the gateway logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/config_dump` as JSON.
    pub fn config_dump(&self) -> serde_json::Value {
        config_dump(self.admin)
    }

    /// The running config version.
    pub fn version(&self) -> u64 {
        self.config_dump()["version"].as_u64().expect("version")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(s) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Polls until `/config_dump` shows a version above `above` (a reload happened).
    pub fn wait_version_above(&self, above: u64, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.version() > above {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // Pingora sets SO_REUSEPORT: a leftover process would keep taking traffic.
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
