//! Network namespaces (`ip netns`) for the tests and benchmarks that build pods out of
//! them: a namespace deleted when its guard is dropped (so a failing test or an
//! interrupted run leaves nothing behind), programs run inside it, threads that enter
//! it, and a bridge in a namespace of its own that pods plug into, so nothing of the
//! host's network changes. Needs root and the `ip` tool.

mod bridge;

use std::fs::File;
use std::process::{Command, Output, Stdio};

pub use bridge::Bridge;

/// Errors running the namespace tools or entering a namespace.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A program could not be started at all.
    #[error("cannot run {program} (is it installed?): {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// A program ran and failed.
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// The thread could not join the namespace.
    #[error("cannot enter network namespace {name}: {source}")]
    Enter {
        /// The namespace.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// The thread in the namespace panicked.
    #[error("the thread in network namespace {0} panicked")]
    Panicked(String),
    /// The bridge has no addresses left.
    #[error("no addresses left on the bridge")]
    Full,
}

/// Runs `program args` to completion; a failure carries its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<Output, Error> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            program: program.into(),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::Failed {
            command: format!("{program} {}", args.join(" ")),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(output)
}

/// A named network namespace, deleted on drop (with its veth ends and rules).
#[derive(Debug)]
pub struct Netns {
    /// Its name (`ip netns` lists it).
    pub name: String,
}

impl Netns {
    /// Creates the namespace `name` with its loopback up.
    pub fn add(name: impl Into<String>) -> Result<Netns, Error> {
        let name = name.into();
        run("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n <ns> args`.
    pub fn ip(&self, args: &[&str]) -> Result<Output, Error> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend(args);
        run("ip", &all)
    }

    /// `program` inside the namespace (`ip netns exec`), to be given its arguments and
    /// run or spawned.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Runs `program args` inside the namespace to completion; a failure is an error.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output, Error> {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend(args);
        run("ip", &all)
    }

    /// Runs `program args` inside the namespace to completion, whatever its outcome.
    pub fn output(&self, program: &str, args: &[&str]) -> Result<Output, Error> {
        self.command(program)
            .args(args)
            .output()
            .map_err(|source| Error::Spawn {
                program: format!("ip netns exec {} {program}", self.name),
                source,
            })
    }

    /// Runs `f` on a new thread that has joined the namespace (setns affects only the
    /// calling thread): sockets it opens live there, and it keeps this process's uid,
    /// so a pod's capture rules apply to it.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
        let path = format!("/var/run/netns/{}", self.name);
        let name = self.name.clone();
        let thread = std::thread::spawn(move || -> Result<T, Error> {
            let enter_error = |source| Error::Enter {
                name: name.clone(),
                source,
            };
            let file = File::open(&path).map_err(enter_error)?;
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| enter_error(std::io::Error::from(e)))?;
            Ok(f())
        });
        thread.join().map_err(|_| Error::Panicked(self.name.clone()))?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}
