//! Ctrl-C and termination for benchmarks that set things up as root: a signal only
//! raises a flag, which the benchmark checks between steps, so it returns through its
//! guards (processes killed, namespaces deleted) instead of dying with them in place.
//! A parent that waits on a re-executed child passes the signal on to it.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use tokio::signal::unix::{signal, SignalKind};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static CHILD: AtomicI32 = AtomicI32::new(0);

/// Routes SIGINT, SIGTERM and SIGHUP to the flag (and to the child, once `forward_to`
/// named one), from a thread of its own; returns once the handlers are in place.
pub fn install() -> std::io::Result<()> {
    let (ready, installed) = std::sync::mpsc::channel::<std::io::Result<()>>();
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        rt.block_on(async move {
            let streams = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            );
            let (mut int, mut term, mut hup) = match streams {
                (Ok(a), Ok(b), Ok(c)) => (a, b, c),
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            let _ = ready.send(Ok(()));
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                }
                INTERRUPTED.store(true, Ordering::SeqCst);
                let child = CHILD.load(Ordering::SeqCst);
                if child > 0 {
                    let _ =
                        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), nix::sys::signal::Signal::SIGTERM);
                }
            }
        });
    });
    installed
        .recv()
        .unwrap_or_else(|_| Err(std::io::Error::other("the signal thread ended")))
}

/// Passes the signals on to `pid` (a child that cleans up after itself).
pub fn forward_to(pid: u32) {
    CHILD.store(i32::try_from(pid).unwrap_or(0), Ordering::SeqCst);
}

/// Whether a signal asked this process to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
