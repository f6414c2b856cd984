//! What init reads from and does to the pod's network namespace: whether it has IPv6,
//! and the iptables tools (`iptables-save`/`-restore` and their ip6tables twins) that
//! read and change its nat table.

use std::io::{self, Write};
use std::net::Ipv6Addr;
use std::process::{Command, ExitStatus, Stdio};

use thiserror::Error;

use super::rules::Family;

/// The kernel's list of this network namespace's IPv6 addresses; absent when IPv6 is off.
const IF_INET6: &str = "/proc/net/if_inet6";

/// A failure of one of the iptables tools.
#[derive(Debug, Error)]
pub enum ToolError {
    /// The tool is not installed (not on PATH).
    #[error("{tool} is not installed (Debian package `iptables`)")]
    Missing {
        /// The tool's name.
        tool: &'static str,
    },
    /// The tool could not be run, or fed its input.
    #[error("{tool} could not be run: {source}")]
    Io {
        /// The tool's name.
        tool: &'static str,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The tool ran and failed; its own words say why.
    #[error("{tool} failed ({status}): {stderr}")]
    Failed {
        /// The tool's command line.
        tool: String,
        /// How it exited.
        status: ExitStatus,
        /// What it printed on stderr, trimmed.
        stderr: String,
    },
}

impl ToolError {
    /// Whether the tool is simply not installed.
    pub fn is_missing(&self) -> bool {
        matches!(self, ToolError::Missing { .. })
    }
}

/// The save and restore tools of one family.
#[derive(Debug, Clone, Copy)]
pub struct Tools {
    save: &'static str,
    restore: &'static str,
}

impl Tools {
    /// The tools of a family.
    pub fn of(family: Family) -> Tools {
        match family {
            Family::V4 => Tools {
                save: "iptables-save",
                restore: "iptables-restore",
            },
            Family::V6 => Tools {
                save: "ip6tables-save",
                restore: "ip6tables-restore",
            },
        }
    }

    /// The restore tool's name, for messages.
    pub fn restore_name(&self) -> &'static str {
        self.restore
    }

    /// The nat table as `iptables-save -t nat` prints it.
    pub fn save_nat(&self) -> Result<String, ToolError> {
        run(self.save, &["-t", "nat"], None)
    }

    /// Applies one iptables-restore transaction without flushing the rest of the
    /// tables (other rules of the namespace, a CNI's, stay).
    pub fn restore(&self, input: &str) -> Result<(), ToolError> {
        run(self.restore, &["--noflush"], Some(input)).map(drop)
    }
}

/// Runs a tool, feeding it `input`, and returns its stdout.
fn run(tool: &'static str, args: &[&str], input: Option<&str>) -> Result<String, ToolError> {
    let io_error = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => ToolError::Missing { tool },
        _ => ToolError::Io { tool, source },
    };
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_error)?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // A write error here (the tool quit early) shows as its failure below.
        let _ = stdin.write_all(input.as_bytes());
    }
    let output = child.wait_with_output().map_err(io_error)?;
    if !output.status.success() {
        return Err(ToolError::Failed {
            tool: std::iter::once(tool)
                .chain(args.iter().copied())
                .collect::<Vec<_>>()
                .join(" "),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether this network namespace has IPv6 at all (the kernel lists its addresses).
pub fn ipv6_enabled() -> bool {
    std::path::Path::new(IF_INET6).exists()
}

/// Whether the pod has an IPv6 address of its own (not loopback, not link-local):
/// then its IPv6 traffic is captured too.
pub fn has_ipv6_address() -> bool {
    std::fs::read_to_string(IF_INET6).is_ok_and(|list| pod_ipv6(&list))
}

/// Reads `/proc/net/if_inet6` (one address a line, 32 hex digits first) for an
/// address a peer could reach the pod at.
fn pod_ipv6(if_inet6: &str) -> bool {
    if_inet6
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|hex| u128::from_str_radix(hex, 16).ok())
        .map(Ipv6Addr::from)
        .any(|addr| !addr.is_loopback() && !addr.is_unicast_link_local() && !addr.is_multicast())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_routable_address_counts_as_the_pod_s_ipv6() {
        let lo = "00000000000000000000000000000001 01 80 10 80       lo\n";
        let link_local = "fe800000000000000c8a4ffffe1b2c3d 02 40 20 80    eth0\n";
        let ula = "fd200000000000000000000000000001 02 40 00 80    eth0\n";
        assert!(!pod_ipv6(""));
        assert!(!pod_ipv6(lo));
        assert!(!pod_ipv6(&format!("{lo}{link_local}")));
        assert!(pod_ipv6(&format!("{lo}{link_local}{ula}")));
        assert!(!pod_ipv6("not an address\n"));
    }

    #[test]
    fn a_missing_tool_says_so() {
        let err = run("strait-no-such-iptables", &[], None).expect_err("not installed");
        assert!(err.is_missing(), "{err}");
        assert!(err.to_string().contains("strait-no-such-iptables is not installed"));
    }

    #[test]
    fn a_failing_tool_reports_its_stderr() {
        let err = run(
            "sh",
            &["-c", "echo 'Chain ISTIO_OUTPUT does not exist' >&2; exit 2"],
            Some("input"),
        )
        .expect_err("fails");
        let text = err.to_string();
        assert!(text.starts_with("sh -c "), "{text}");
        assert!(
            text.contains("exit status: 2") && text.ends_with("Chain ISTIO_OUTPUT does not exist"),
            "{text}"
        );
    }
}
