//! `strait-sidecar init`: the pod's traffic capture, with the meaning of Istio's
//! istio-iptables. Run once in the pod's network namespace before the app starts (the
//! init container, with NET_ADMIN), it redirects the app's outbound TCP to the
//! sidecar's outbound port (15001) and inbound TCP to its inbound port (15006), leaving
//! the proxy's own traffic (its uid/gid) alone so nothing loops.
//!
//! The rules live in the nat table in Istio's chains (`ISTIO_INBOUND`,
//! `ISTIO_IN_REDIRECT`, `ISTIO_OUTPUT`, `ISTIO_REDIRECT`) and are applied with
//! `iptables-restore --noflush` in one transaction per family; IPv6 too when the pod
//! has an IPv6 address. Re-running is idempotent; `--cleanup` removes it all.
//!
//! - `options`: the command line's values, checked.
//! - `rules`: the rules those options give (pure).
//! - `script`: the iptables-restore inputs, and what an earlier run left (pure).
//! - `host`: the iptables tools and the namespace's IPv6 addresses.

mod host;
mod options;
mod rules;
mod script;

use clap::builder::BoolishValueParser;
use clap::Parser;
use thiserror::Error;

use self::host::{ToolError, Tools};
use self::options::{OptionError, Options, DEFAULT_EXCLUDE_INBOUND_PORTS};
use self::rules::Family;
use self::script::Installed;

/// Set up the pod's traffic capture (iptables), as Istio's istio-iptables does.
///
/// Lists are comma separated; `*` means all. Every option can also be set with its
/// `STRAIT_*` environment variable.
#[derive(Parser, Debug, Clone)]
#[command(version, about, long_about = None)]
pub struct InitArgs {
    /// Port the app's outbound TCP is redirected to (the sidecar's outbound listener).
    #[arg(long, env = "STRAIT_OUTBOUND_PORT", default_value_t = 15001, value_name = "PORT")]
    pub outbound_port: u16,
    /// Port inbound TCP is redirected to (the sidecar's inbound listener).
    #[arg(long, env = "STRAIT_INBOUND_PORT", default_value_t = 15006, value_name = "PORT")]
    pub inbound_port: u16,
    /// The proxy's user id: its traffic is never captured again.
    #[arg(long, env = "STRAIT_PROXY_UID", default_value_t = 1337, value_name = "UID")]
    pub proxy_uid: u32,
    /// The proxy's group id: its traffic is never captured again.
    #[arg(long, env = "STRAIT_PROXY_GID", default_value_t = 1337, value_name = "GID")]
    pub proxy_gid: u32,
    /// Destinations (CIDRs) whose outbound TCP is captured; `*` for all, empty for none.
    #[arg(
        long,
        env = "STRAIT_INCLUDE_OUTBOUND_CIDRS",
        default_value = "*",
        value_name = "CIDRS"
    )]
    pub include_outbound_cidrs: String,
    /// Destinations (CIDRs) never captured.
    #[arg(
        long,
        env = "STRAIT_EXCLUDE_OUTBOUND_CIDRS",
        default_value = "",
        value_name = "CIDRS"
    )]
    pub exclude_outbound_cidrs: String,
    /// Local ports whose inbound TCP is captured; `*` for all, empty for none.
    #[arg(
        long,
        env = "STRAIT_INCLUDE_INBOUND_PORTS",
        default_value = "*",
        value_name = "PORTS"
    )]
    pub include_inbound_ports: String,
    /// Inbound ports never captured; the proxy's own (15000, 15001, 15006, 15020, 15021)
    /// are never captured either way.
    #[arg(
        long,
        env = "STRAIT_EXCLUDE_INBOUND_PORTS",
        default_value = DEFAULT_EXCLUDE_INBOUND_PORTS,
        value_name = "PORTS"
    )]
    pub exclude_inbound_ports: String,
    /// Destination ports whose outbound TCP is captured whatever the address, even an
    /// excluded one. Port 53 (DNS) is captured only when listed here.
    #[arg(
        long,
        env = "STRAIT_INCLUDE_OUTBOUND_PORTS",
        default_value = "",
        value_name = "PORTS"
    )]
    pub include_outbound_ports: String,
    /// Destination ports never captured.
    #[arg(
        long,
        env = "STRAIT_EXCLUDE_OUTBOUND_PORTS",
        default_value = "",
        value_name = "PORTS"
    )]
    pub exclude_outbound_ports: String,
    /// Interfaces whose traffic is never captured, inbound or outbound.
    #[arg(long, env = "STRAIT_EXCLUDE_INTERFACES", default_value = "", value_name = "NAMES")]
    pub exclude_interfaces: String,
    /// Remove everything init added (idempotent: nothing there is no error).
    #[arg(long, env = "STRAIT_CLEANUP", value_parser = BoolishValueParser::new())]
    pub cleanup: bool,
    /// Print the iptables-restore input instead of applying it (the input for a
    /// fresh pod; when applied, the jumps an earlier run left are deleted first).
    #[arg(long, env = "STRAIT_DRY_RUN", value_parser = BoolishValueParser::new())]
    pub dry_run: bool,
}

/// Why init failed.
#[derive(Debug, Error)]
pub enum Error {
    /// An option's value is unusable.
    #[error(transparent)]
    Option(#[from] OptionError),
    /// An iptables tool failed.
    #[error("{family}: {source}")]
    Tool {
        /// The address family being set up.
        family: &'static str,
        /// The tool's failure.
        #[source]
        source: ToolError,
    },
}

/// Runs `strait-sidecar init` with its arguments: checks them, then applies the
/// capture (or removes it with `--cleanup`, or prints it with `--dry-run`).
pub fn init(args: &InitArgs) -> Result<(), Error> {
    let options = Options::from_args(args)?;
    for family in families(args.cleanup) {
        let tools = Tools::of(family);
        let done = if args.cleanup {
            cleanup(family, tools, args.dry_run)
        } else {
            apply(&options, family, tools, args.dry_run)
        };
        match done {
            Err(source) if family == Family::V6 && source.is_missing() => {
                eprintln!("strait-sidecar init: IPv6: {source}; IPv6 traffic is not captured");
            }
            Err(source) => {
                return Err(Error::Tool {
                    family: family.name(),
                    source,
                })
            }
            Ok(()) => {}
        }
    }
    Ok(())
}

/// IPv4 always; IPv6 when the pod has an IPv6 address (for cleanup: when the
/// namespace has IPv6 at all, since the address may be gone by then).
fn families(cleanup: bool) -> Vec<Family> {
    let v6 = if cleanup {
        host::ipv6_enabled()
    } else {
        host::has_ipv6_address()
    };
    if v6 {
        vec![Family::V4, Family::V6]
    } else {
        vec![Family::V4]
    }
}

fn apply(options: &Options, family: Family, tools: Tools, dry_run: bool) -> Result<(), ToolError> {
    let rules = rules::rules(options, family);
    let restore = tools.restore_name();
    if dry_run {
        say(&format!(
            "# {}: {restore} --noflush\n{}",
            family.name(),
            script::apply(&rules, &Installed::default())
        ));
        return Ok(());
    }
    let installed = Installed::from_save(&tools.save_nat()?);
    let input = script::apply(&rules, &installed);
    tools.restore(&input)?;
    say(&format!(
        "strait-sidecar init: {}: applied with {restore} --noflush:\n{input}",
        family.name()
    ));
    Ok(())
}

fn cleanup(family: Family, tools: Tools, dry_run: bool) -> Result<(), ToolError> {
    let installed = Installed::from_save(&tools.save_nat()?);
    let restore = tools.restore_name();
    match script::cleanup(&installed) {
        None if dry_run => say(&format!("# {}: nothing to clean up\n", family.name())),
        None => say(&format!(
            "strait-sidecar init: {}: nothing to clean up\n",
            family.name()
        )),
        Some(input) if dry_run => say(&format!("# {}: {restore} --noflush\n{input}", family.name())),
        Some(input) => {
            tools.restore(&input)?;
            say(&format!(
                "strait-sidecar init: {}: removed with {restore} --noflush:\n{input}",
                family.name()
            ));
        }
    }
    Ok(())
}

/// Writes to stdout; a reader that went away (`| head`) is not init's failure.
fn say(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
