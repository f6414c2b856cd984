//! `strait-sidecar`: the per-pod sidecar (iptables capture, mTLS, the engine in
//! sidecar mode). Not built yet: this binary only says so.

use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--version" || a == "-V") {
        println!("strait-sidecar {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    eprintln!("strait-sidecar: the sidecar is not built yet; see the project's open issues");
    ExitCode::from(2)
}
