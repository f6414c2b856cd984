//! Network namespaces and the processes started in them, for benchmarks that build
//! pods out of namespaces. Each namespace is deleted and each process killed when its
//! guard is dropped, so an error or an interrupted run leaves nothing behind; names
//! carry the creating process's id, so what a killed run left can be found and
//! removed by the next one.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub use strait_netns::{run, Bridge, Netns};

/// Every namespace made here is named `PREFIX<pid>-<name>`.
pub const PREFIX: &str = "sbench-";

/// Errors running the namespace tools, entering a namespace or starting a process
/// in one.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace tools failed.
    #[error(transparent)]
    Netns(#[from] strait_netns::Error),
    /// A program could not be started at all.
    #[error("cannot run {program} (is it installed?): {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// A log file could not be created.
    #[error("cannot create {path}: {source}")]
    Log {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The full name of this run's namespace `name`: `PREFIX<pid>-<name>`.
pub fn name(name: &str) -> String {
    format!("{PREFIX}{}-{name}", std::process::id())
}

/// Starts `program args` inside `ns`, pinned to `core`, with `env` added, its output
/// in `log`. It runs in a process group of its own, so a Ctrl-C at the terminal
/// reaches only the harness, which then stops it in order.
pub fn spawn(
    ns: &Netns,
    name: &str,
    core: usize,
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    log: &Path,
) -> Result<Process, NetnsError> {
    let out = File::create(log).map_err(|source| NetnsError::Log {
        path: log.into(),
        source,
    })?;
    let err = out.try_clone().map_err(|source| NetnsError::Log {
        path: log.into(),
        source,
    })?;
    // taskset and `ip netns exec` both exec in place: the child's pid is the program's.
    let child = Command::new("taskset")
        .arg("-c")
        .arg(core.to_string())
        .args(["ip", "netns", "exec", &ns.name])
        .arg(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|source| NetnsError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
    Ok(Process {
        name: name.into(),
        child,
        log: log.into(),
    })
}

/// A process started in a namespace, killed (with its descendants) on drop.
#[derive(Debug)]
pub struct Process {
    /// Its name in the report and errors.
    pub name: String,
    child: Child,
    /// Where its output goes.
    pub log: PathBuf,
}

impl Process {
    /// Its pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// It and its descendants (what its CPU and memory are read from).
    pub fn pids(&self) -> Vec<u32> {
        crate::procstat::tree(self.child.id())
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Its output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        for pid in self.pids().into_iter().rev() {
            kill(pid);
        }
        let _ = self.child.wait();
    }
}

/// Deletes the namespaces earlier runs of this harness left behind (their process
/// is gone: killed with SIGKILL, say); returns their names.
pub fn remove_stale() -> Vec<String> {
    let Ok(out) = run("ip", &["netns", "list"]) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if runs_this_harness(pid) {
            continue;
        }
        // What that run started in the namespace outlives it (own process groups).
        if let Ok(pids) = run("ip", &["netns", "pids", name]) {
            for pid in String::from_utf8_lossy(&pids.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
            {
                kill(pid);
            }
        }
        if run("ip", &["netns", "del", name]).is_ok() {
            removed.push(name.to_string());
        }
    }
    removed
}

/// SIGKILL to `pid` (one this harness started); a process already gone is no error.
fn kill(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Whether `pid` is a live process of this same program (not a zombie, not another
/// program that got the pid since).
fn runs_this_harness(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].trim_start().chars().next());
    if matches!(state, Some('Z' | 'X') | None) {
        return false;
    }
    let (Ok(ours), Ok(theirs)) = (std::env::current_exe(), std::fs::read_link(format!("/proc/{pid}/exe"))) else {
        return false;
    };
    // A rebuilt binary shows as "... (deleted)" in a process started before.
    ours.to_string_lossy() == theirs.to_string_lossy().trim_end_matches(" (deleted)")
}
