//! The capture rules: from the checked options, the nat-table rules of one address
//! family, in the order Istio's istio-iptables gives them. Pure, so every option can
//! be checked against the rules it yields.
//!
//! Chains (Istio's names, so `iptables-save` reads as it does in an Istio pod):
//! - `ISTIO_INBOUND` (from PREROUTING): skips excluded interfaces and ports, sends
//!   the included ports to `ISTIO_IN_REDIRECT`, which redirects to the inbound port.
//! - `ISTIO_OUTPUT` (from OUTPUT): skips the proxy's own traffic, loopback and the
//!   exclusions, sends the rest to `ISTIO_REDIRECT`, which redirects to the outbound
//!   port.
//!
//! Where Strait differs from istio-iptables: excluded interfaces are skipped at the top
//! of its own chains rather than with RETURN rules in PREROUTING/OUTPUT (so every rule
//! init adds to a built-in chain is a jump into its own chains, which is how a re-run
//! and `--cleanup` find them); included outbound ports come before the excluded CIDRs
//! (captured whatever their address); TCP to port 53 is left alone unless
//! `--include-outbound-ports` names it (no DNS proxy, so DNS never depends on the
//! sidecar); an inbound port both included and excluded is excluded; no 15008 tunnel
//! port and no TPROXY mode.

use std::fmt;

use super::options::{Cidr, Options, Selection};

/// Chain of inbound capture, jumped to from PREROUTING.
pub const INBOUND: &str = "ISTIO_INBOUND";
/// Chain that redirects to the inbound port.
pub const IN_REDIRECT: &str = "ISTIO_IN_REDIRECT";
/// Chain of outbound capture, jumped to from OUTPUT.
pub const OUTPUT: &str = "ISTIO_OUTPUT";
/// Chain that redirects to the outbound port.
pub const REDIRECT: &str = "ISTIO_REDIRECT";
/// Every chain init owns in the nat table: created (or flushed) by init, removed by
/// `--cleanup`.
pub const OWN_CHAINS: [&str; 4] = [INBOUND, IN_REDIRECT, OUTPUT, REDIRECT];

/// DNS's port: not captured unless asked for.
const DNS_PORT: u16 = 53;

/// The address family a rule set is for (iptables or ip6tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4, applied with iptables-restore.
    V4,
    /// IPv6, applied with ip6tables-restore.
    V6,
}

impl Family {
    /// The family's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// The source the proxy binds when it passes inbound traffic on to the app, so
    /// that connection is recognised and never captured again (Istio's 127.0.0.6).
    fn passthrough_source(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.6/32",
            Family::V6 => "::6/128",
        }
    }

    /// The loopback address apps use to reach each other (and the proxy) directly.
    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1/32",
            Family::V6 => "::1/128",
        }
    }
}

/// One rule appended to a chain of the nat table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The chain it is appended to (one of init's, or PREROUTING/OUTPUT for the jumps).
    pub chain: &'static str,
    /// Matches and target, as iptables takes them after `-A CHAIN`.
    pub spec: String,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-A {} {}", self.chain, self.spec)
    }
}

/// The rules of one family, in order; the jumps from the built-in chains come last,
/// so init's chains are complete before traffic enters them.
pub fn rules(options: &Options, family: Family) -> Vec<Rule> {
    let mut rules = Rules(Vec::new());
    inbound(&mut rules, options);
    rules.add(
        IN_REDIRECT,
        format!("-p tcp -j REDIRECT --to-ports {}", options.inbound_port),
    );
    rules.add(
        REDIRECT,
        format!("-p tcp -j REDIRECT --to-ports {}", options.outbound_port),
    );
    outbound(&mut rules, options, family);
    if !options.include_inbound_ports.is_none() {
        rules.add("PREROUTING", format!("-p tcp -j {INBOUND}"));
    }
    rules.add("OUTPUT", format!("-p tcp -j {OUTPUT}"));
    rules.0
}

struct Rules(Vec<Rule>);

impl Rules {
    fn add(&mut self, chain: &'static str, spec: String) {
        self.0.push(Rule { chain, spec });
    }
}

/// Inbound TCP to the included ports goes to the inbound port, except the excluded
/// ports (the proxy's own among them) and excluded interfaces.
fn inbound(rules: &mut Rules, options: &Options) {
    if options.include_inbound_ports.is_none() {
        return;
    }
    for interface in &options.exclude_interfaces {
        rules.add(INBOUND, format!("-i {interface} -j RETURN"));
    }
    for port in &options.exclude_inbound_ports {
        rules.add(INBOUND, format!("-p tcp --dport {port} -j RETURN"));
    }
    match &options.include_inbound_ports {
        Selection::All => rules.add(INBOUND, format!("-p tcp -j {IN_REDIRECT}")),
        Selection::Only(ports) => {
            for port in ports {
                rules.add(INBOUND, format!("-p tcp --dport {port} -j {IN_REDIRECT}"));
            }
        }
    }
}

/// Outbound TCP from the app goes to the outbound port; the proxy's own traffic,
/// loopback and the exclusions do not.
fn outbound(rules: &mut Rules, options: &Options, family: Family) {
    for interface in &options.exclude_interfaces {
        rules.add(OUTPUT, format!("-o {interface} -j RETURN"));
    }
    // Before the loopback rules, so an excluded port is never captured, not even when
    // the proxy calls its own pod.
    for port in &options.exclude_outbound_ports {
        rules.add(OUTPUT, format!("-p tcp --dport {port} -j RETURN"));
    }
    // The proxy passing inbound traffic on to the app: done.
    rules.add(OUTPUT, format!("-o lo -s {} -j RETURN", family.passthrough_source()));
    // A loopback destination in the included CIDRs asks for the app's calls over lo to
    // be captured; otherwise the app calling itself (or its pod IP) stays direct.
    let include_loopback = match &options.include_outbound_cidrs {
        Selection::All => false,
        Selection::Only(cidrs) => cidrs.iter().any(|cidr| cidr.is_loopback()),
    };
    let loopback = family.loopback();
    for owner in [
        format!("--uid-owner {}", options.proxy_uid),
        format!("--gid-owner {}", options.proxy_gid),
    ] {
        // The proxy calling its own pod's IP (an app's call to a service that lands on
        // this pod) goes through inbound capture, so inbound policy applies to it.
        rules.add(
            OUTPUT,
            format!("-o lo ! -d {loopback} -p tcp -m owner {owner} -j {IN_REDIRECT}"),
        );
        if !include_loopback {
            rules.add(OUTPUT, format!("-o lo -m owner ! {owner} -j RETURN"));
        }
        // Anything else the proxy sends is never captured again (no loop).
        rules.add(OUTPUT, format!("-m owner {owner} -j RETURN"));
    }
    rules.add(OUTPUT, format!("-d {loopback} -j RETURN"));
    // Included ports first: captured whatever their address, even an excluded one.
    for port in &options.include_outbound_ports {
        rules.add(OUTPUT, format!("-p tcp --dport {port} -j {REDIRECT}"));
    }
    if !options.include_outbound_ports.contains(&DNS_PORT) {
        rules.add(OUTPUT, format!("-p tcp --dport {DNS_PORT} -j RETURN"));
    }
    let of_family = |cidr: &&Cidr| cidr.is_ipv4() == (family == Family::V4);
    for cidr in options.exclude_outbound_cidrs.iter().filter(of_family) {
        rules.add(OUTPUT, format!("-d {cidr} -j RETURN"));
    }
    match &options.include_outbound_cidrs {
        Selection::All => rules.add(OUTPUT, format!("-j {REDIRECT}")),
        Selection::Only(cidrs) => {
            for cidr in cidrs.iter().filter(of_family) {
                rules.add(OUTPUT, format!("-d {cidr} -j {REDIRECT}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::InitArgs;
    use super::*;

    fn options(args: &[&str]) -> Options {
        let mut argv = vec!["init"];
        argv.extend(args);
        let args = InitArgs::try_parse_from(argv).expect("the command line parses");
        Options::from_args(&args).expect("valid options")
    }

    fn lines(args: &[&str], family: Family) -> Vec<String> {
        rules(&options(args), family).iter().map(Rule::to_string).collect()
    }

    /// The rule set for the defaults, in full: the table every other case differs from.
    const DEFAULT_V4: &[&str] = &[
        "-A ISTIO_INBOUND -p tcp --dport 15000 -j RETURN",
        "-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN",
        "-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN",
        "-A ISTIO_INBOUND -p tcp --dport 15001 -j RETURN",
        "-A ISTIO_INBOUND -p tcp --dport 15006 -j RETURN",
        "-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN",
        "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
        "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        "-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN",
        "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
        "-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT",
        "-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
        "-A ISTIO_OUTPUT -p tcp --dport 53 -j RETURN",
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
        "-A PREROUTING -p tcp -j ISTIO_INBOUND",
        "-A OUTPUT -p tcp -j ISTIO_OUTPUT",
    ];

    #[test]
    fn defaults() {
        assert_eq!(lines(&[], Family::V4), DEFAULT_V4);
    }

    #[test]
    fn ipv6_uses_its_own_loopback_and_passthrough_addresses() {
        let v6 = lines(&[], Family::V6);
        let expected: Vec<String> = DEFAULT_V4
            .iter()
            .map(|line| {
                line.replace("127.0.0.6/32", "::6/128")
                    .replace("127.0.0.1/32", "::1/128")
            })
            .collect();
        assert_eq!(v6, expected);
    }

    /// The rules a case adds to and removes from the defaults.
    fn delta(args: &[&str], family: Family) -> (Vec<String>, Vec<String>) {
        let got = lines(args, family);
        let base = lines(&[], family);
        let added = got.iter().filter(|l| !base.contains(l)).cloned().collect();
        let removed = base.iter().filter(|l| !got.contains(l)).cloned().collect();
        (added, removed)
    }

    #[test]
    fn each_option_changes_what_it_names() {
        type Case = (
            &'static [&'static str],
            &'static [&'static str],
            &'static [&'static str],
        );
        let cases: &[Case] = &[
            (
                &["--outbound-port", "16001"],
                &[
                    "-A ISTIO_INBOUND -p tcp --dport 16001 -j RETURN",
                    "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 16001",
                ],
                &[
                    "-A ISTIO_INBOUND -p tcp --dport 15001 -j RETURN",
                    "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
                ],
            ),
            (
                &["--inbound-port", "16006"],
                &[
                    "-A ISTIO_INBOUND -p tcp --dport 16006 -j RETURN",
                    "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 16006",
                ],
                &[
                    "-A ISTIO_INBOUND -p tcp --dport 15006 -j RETURN",
                    "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
                ],
            ),
            (
                &["--proxy-uid", "2000"],
                &[
                    "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp -m owner --uid-owner 2000 -j ISTIO_IN_REDIRECT",
                    "-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 2000 -j RETURN",
                    "-A ISTIO_OUTPUT -m owner --uid-owner 2000 -j RETURN",
                ],
                &[
                    "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
                    "-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
                    "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
                ],
            ),
            (
                &["--proxy-gid", "3000"],
                &[
                    "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp -m owner --gid-owner 3000 -j ISTIO_IN_REDIRECT",
                    "-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 3000 -j RETURN",
                    "-A ISTIO_OUTPUT -m owner --gid-owner 3000 -j RETURN",
                ],
                &[
                    "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT",
                    "-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN",
                    "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
                ],
            ),
            (
                &["--include-outbound-cidrs", "10.0.0.0/8,fd00::/8"],
                &["-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT"],
                &["-A ISTIO_OUTPUT -j ISTIO_REDIRECT"],
            ),
            (
                &["--include-outbound-cidrs", ""],
                &[],
                &["-A ISTIO_OUTPUT -j ISTIO_REDIRECT"],
            ),
            (
                &["--exclude-outbound-cidrs", "10.96.0.0/12,fd00::/8"],
                &["-A ISTIO_OUTPUT -d 10.96.0.0/12 -j RETURN"],
                &[],
            ),
            (
                &["--include-inbound-ports", "8080,9090"],
                &[
                    "-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_IN_REDIRECT",
                    "-A ISTIO_INBOUND -p tcp --dport 9090 -j ISTIO_IN_REDIRECT",
                ],
                &["-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT"],
            ),
            (
                &["--exclude-inbound-ports", "22,15021"],
                &["-A ISTIO_INBOUND -p tcp --dport 22 -j RETURN"],
                &["-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN"],
            ),
            (
                &["--include-outbound-ports", "7070,53"],
                &[
                    "-A ISTIO_OUTPUT -p tcp --dport 7070 -j ISTIO_REDIRECT",
                    "-A ISTIO_OUTPUT -p tcp --dport 53 -j ISTIO_REDIRECT",
                ],
                &["-A ISTIO_OUTPUT -p tcp --dport 53 -j RETURN"],
            ),
            (
                &["--exclude-outbound-ports", "9090"],
                &["-A ISTIO_OUTPUT -p tcp --dport 9090 -j RETURN"],
                &[],
            ),
            (
                &["--exclude-interfaces", "eth1"],
                &[
                    "-A ISTIO_INBOUND -i eth1 -j RETURN",
                    "-A ISTIO_OUTPUT -o eth1 -j RETURN",
                ],
                &[],
            ),
        ];
        for (args, added, removed) in cases {
            assert_eq!(delta(args, Family::V4), (to_vec(added), to_vec(removed)), "{args:?}");
        }
    }

    fn to_vec(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn no_inbound_capture_without_included_ports() {
        let got = lines(&["--include-inbound-ports", ""], Family::V4);
        assert!(
            got.iter()
                .all(|l| !l.starts_with("-A ISTIO_INBOUND") && !l.starts_with("-A PREROUTING")),
            "{got:#?}"
        );
        // The proxy calling its own pod still goes through the inbound port, as in Istio.
        assert!(got.iter().any(|l| l.contains("--uid-owner 1337 -j ISTIO_IN_REDIRECT")));
    }

    #[test]
    fn cidrs_go_to_their_own_family() {
        let args = [
            "--include-outbound-cidrs",
            "10.0.0.0/8,fd00::/8",
            "--exclude-outbound-cidrs",
            "10.1.0.0/16,fd00:1::/32",
        ];
        let v6 = lines(&args, Family::V6);
        assert!(v6.contains(&"-A ISTIO_OUTPUT -d fd00::/8 -j ISTIO_REDIRECT".to_string()));
        assert!(v6.contains(&"-A ISTIO_OUTPUT -d fd00:1::/32 -j RETURN".to_string()));
        assert!(!v6.iter().any(|l| l.contains("10.")), "{v6:#?}");
        let v4 = lines(&args, Family::V4);
        assert!(!v4.iter().any(|l| l.contains("fd00")), "{v4:#?}");
    }

    #[test]
    fn included_ports_come_before_excluded_cidrs_and_exclusions_before_inclusions() {
        let got = lines(
            &[
                "--include-outbound-ports",
                "7070",
                "--exclude-outbound-cidrs",
                "10.1.0.0/16",
                "--include-outbound-cidrs",
                "10.0.0.0/8",
            ],
            Family::V4,
        );
        let at = |rule: &str| {
            got.iter()
                .position(|l| l == rule)
                .unwrap_or_else(|| panic!("{rule} in {got:#?}"))
        };
        let port = at("-A ISTIO_OUTPUT -p tcp --dport 7070 -j ISTIO_REDIRECT");
        let excluded = at("-A ISTIO_OUTPUT -d 10.1.0.0/16 -j RETURN");
        let included = at("-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT");
        let proxy = at("-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN");
        assert!(proxy < port && port < excluded && excluded < included);
    }

    #[test]
    fn a_loopback_cidr_captures_the_app_s_own_loopback_calls() {
        let (added, removed) = delta(&["--include-outbound-cidrs", "127.0.0.0/8"], Family::V4);
        assert_eq!(added, ["-A ISTIO_OUTPUT -d 127.0.0.0/8 -j ISTIO_REDIRECT"]);
        assert_eq!(
            removed,
            [
                "-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
                "-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN",
                "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
            ]
        );
    }
}
