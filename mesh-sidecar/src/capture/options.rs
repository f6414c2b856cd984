//! The options of `strait-sidecar init`, checked: the command line's strings (comma
//! separated lists, `*` for all) become typed values, and an unusable value is an error
//! that names the option and the value.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use thiserror::Error;

use super::InitArgs;

/// Inbound ports excluded from capture when `--exclude-inbound-ports` is not given:
/// the proxy's metrics and health ports and Envoy's stats port (Istio's defaults).
pub const DEFAULT_EXCLUDE_INBOUND_PORTS: &str = "15020,15021,15090";

/// Proxy ports never captured inbound, whatever the options say (admin, metrics,
/// health); the two capture ports are added from the options.
const PROXY_PORTS: [u16; 3] = [15000, 15020, 15021];

/// An option's value that init cannot use.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid value {value:?} for --{option}: {reason}")]
pub struct OptionError {
    /// The option, without its dashes (`exclude-outbound-cidrs`).
    pub option: &'static str,
    /// The offending entry of the list, as given.
    pub value: String,
    /// Why it is refused.
    pub reason: String,
}

/// All of something (`*`), or only the listed ones (none for an empty list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection<T> {
    /// `*`: everything.
    All,
    /// The listed values; empty means nothing.
    Only(Vec<T>),
}

impl<T> Selection<T> {
    /// Whether this selects nothing at all.
    pub fn is_none(&self) -> bool {
        matches!(self, Selection::Only(values) if values.is_empty())
    }
}

/// An IPv4 or IPv6 network (`10.0.0.0/8`, `fd00::/8`; a bare address is a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address, host bits cleared (as iptables shows it).
    addr: IpAddr,
    /// The prefix length.
    len: u8,
}

impl Cidr {
    /// Parses `ADDR/LEN` or a bare address; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr_text, len_text) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| format!("{addr_text:?} is not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len_text {
            None => max,
            Some(len_text) => match len_text.parse::<u8>() {
                Ok(len) if len <= max => len,
                _ => return Err(format!("prefix length {len_text:?} is not a number from 0 to {max}")),
            },
        };
        Ok(Cidr {
            addr: mask(addr, len),
            len,
        })
    }

    /// Whether this is an IPv4 network.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether the network is in the loopback range (127.0.0.0/8, ::1).
    pub fn is_loopback(&self) -> bool {
        self.addr.is_loopback()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Clears the host bits, so the rule reads as iptables-save will print it back.
fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = if len == 0 {
                0
            } else {
                bits & (u32::MAX << (32 - u32::from(len)))
            };
            IpAddr::V4(Ipv4Addr::from(kept))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = if len == 0 {
                0
            } else {
                bits & (u128::MAX << (128 - u32::from(len)))
            };
            IpAddr::V6(Ipv6Addr::from(kept))
        }
    }
}

/// What init captures and what it leaves alone, checked and typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Where outbound TCP is redirected (the sidecar's outbound listener).
    pub outbound_port: u16,
    /// Where inbound TCP is redirected (the sidecar's inbound listener).
    pub inbound_port: u16,
    /// The proxy's user: its traffic is never captured again.
    pub proxy_uid: u32,
    /// The proxy's group: its traffic is never captured again.
    pub proxy_gid: u32,
    /// Destinations whose outbound TCP is captured.
    pub include_outbound_cidrs: Selection<Cidr>,
    /// Destinations never captured (applied before the inclusions).
    pub exclude_outbound_cidrs: Vec<Cidr>,
    /// Local ports whose inbound TCP is captured.
    pub include_inbound_ports: Selection<u16>,
    /// Inbound ports never captured: the proxy's own ports, then the option's.
    pub exclude_inbound_ports: Vec<u16>,
    /// Destination ports captured whatever their address (even an excluded one).
    pub include_outbound_ports: Vec<u16>,
    /// Destination ports never captured.
    pub exclude_outbound_ports: Vec<u16>,
    /// Interfaces whose traffic is never captured, in or out.
    pub exclude_interfaces: Vec<String>,
}

impl Options {
    /// Checks the command line's values; the first unusable one is the error.
    pub fn from_args(args: &InitArgs) -> Result<Options, OptionError> {
        let outbound_port = nonzero("outbound-port", args.outbound_port)?;
        let inbound_port = nonzero("inbound-port", args.inbound_port)?;
        let mut exclude_inbound_ports = PROXY_PORTS.to_vec();
        exclude_inbound_ports.extend([outbound_port, inbound_port]);
        exclude_inbound_ports.extend(ports("exclude-inbound-ports", &args.exclude_inbound_ports)?);
        dedup(&mut exclude_inbound_ports);
        Ok(Options {
            outbound_port,
            inbound_port,
            proxy_uid: args.proxy_uid,
            proxy_gid: args.proxy_gid,
            include_outbound_cidrs: selection("include-outbound-cidrs", &args.include_outbound_cidrs, cidr)?,
            exclude_outbound_cidrs: none_of_all("exclude-outbound-cidrs", &args.exclude_outbound_cidrs, cidr)?,
            include_inbound_ports: selection("include-inbound-ports", &args.include_inbound_ports, port)?,
            exclude_inbound_ports,
            include_outbound_ports: ports("include-outbound-ports", &args.include_outbound_ports)?,
            exclude_outbound_ports: ports("exclude-outbound-ports", &args.exclude_outbound_ports)?,
            exclude_interfaces: none_of_all("exclude-interfaces", &args.exclude_interfaces, interface)?,
        })
    }
}

/// The entries of a comma separated list, trimmed, empty ones skipped.
fn entries(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|entry| !entry.is_empty())
}

fn error(option: &'static str, value: &str, reason: impl Into<String>) -> OptionError {
    OptionError {
        option,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// `*` alone, or a list of entries.
fn selection<T>(
    option: &'static str,
    value: &str,
    parse: fn(&'static str, &str) -> Result<T, OptionError>,
) -> Result<Selection<T>, OptionError> {
    if value.trim() == "*" {
        return Ok(Selection::All);
    }
    none_of_all(option, value, parse).map(Selection::Only)
}

/// A list of entries where `*` has no meaning.
fn none_of_all<T>(
    option: &'static str,
    value: &str,
    parse: fn(&'static str, &str) -> Result<T, OptionError>,
) -> Result<Vec<T>, OptionError> {
    entries(value)
        .map(|entry| match entry {
            "*" if value.trim() == "*" => Err(error(option, entry, "`*` (all) is not accepted by this option")),
            "*" => Err(error(option, value, "`*` stands alone, not in a list")),
            _ => parse(option, entry),
        })
        .collect()
}

fn ports(option: &'static str, value: &str) -> Result<Vec<u16>, OptionError> {
    let mut list = none_of_all(option, value, port)?;
    dedup(&mut list);
    Ok(list)
}

fn port(option: &'static str, entry: &str) -> Result<u16, OptionError> {
    match entry.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(error(option, entry, "not a port (1-65535)")),
    }
}

/// A port flag clap already read as a number: 0 is no port.
fn nonzero(option: &'static str, port: u16) -> Result<u16, OptionError> {
    match port {
        0 => Err(error(option, "0", "not a port (1-65535)")),
        port => Ok(port),
    }
}

fn cidr(option: &'static str, entry: &str) -> Result<Cidr, OptionError> {
    Cidr::parse(entry).map_err(|reason| error(option, entry, format!("not a CIDR: {reason}")))
}

/// An interface name as iptables takes it: Linux's 15 bytes, and only characters
/// that cannot be read as another token of the iptables-restore line (`+` at the end
/// is iptables' wildcard).
fn interface(option: &'static str, entry: &str) -> Result<String, OptionError> {
    let body = entry.strip_suffix('+').unwrap_or(entry);
    if entry.len() > 15 {
        return Err(error(option, entry, "an interface name has at most 15 characters"));
    }
    if body.is_empty() || body.starts_with('-') {
        return Err(error(option, entry, "not an interface name"));
    }
    if !body
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(error(
            option,
            entry,
            "an interface name here has only letters, digits, `-`, `_`, `.` (and `+` at the end)",
        ));
    }
    Ok(entry.to_string())
}

/// Drops repeats, keeping the first place of each.
fn dedup(ports: &mut Vec<u16>) {
    let mut seen = Vec::with_capacity(ports.len());
    ports.retain(|port| {
        let new = !seen.contains(port);
        seen.push(*port);
        new
    });
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> Result<Options, OptionError> {
        let mut argv = vec!["init"];
        argv.extend(args);
        let args = match InitArgs::try_parse_from(argv) {
            Ok(args) => args,
            Err(e) => panic!("the command line does not parse: {e}"),
        };
        Options::from_args(&args)
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| Cidr::parse(c).expect("a CIDR")).collect()
    }

    #[test]
    fn defaults_are_istio_s() {
        let options = parse(&[]).expect("defaults are valid");
        assert_eq!(options.outbound_port, 15001);
        assert_eq!(options.inbound_port, 15006);
        assert_eq!((options.proxy_uid, options.proxy_gid), (1337, 1337));
        assert_eq!(options.include_outbound_cidrs, Selection::All);
        assert!(options.exclude_outbound_cidrs.is_empty());
        assert_eq!(options.include_inbound_ports, Selection::All);
        assert_eq!(
            options.exclude_inbound_ports,
            vec![15000, 15020, 15021, 15001, 15006, 15090]
        );
        assert!(options.include_outbound_ports.is_empty());
        assert!(options.exclude_outbound_ports.is_empty());
        assert!(options.exclude_interfaces.is_empty());
    }

    #[test]
    fn lists_are_comma_separated_trimmed_and_deduplicated() {
        let options = parse(&[
            "--include-outbound-cidrs",
            "10.0.0.0/8, 192.168.1.7 ,fd00::/8",
            "--exclude-outbound-ports",
            "9090,9090,,9091",
            "--include-inbound-ports",
            "8080",
            "--exclude-interfaces",
            "eth1,cni+",
        ])
        .expect("valid");
        assert_eq!(
            options.include_outbound_cidrs,
            Selection::Only(cidrs(&["10.0.0.0/8", "192.168.1.7/32", "fd00::/8"]))
        );
        assert_eq!(options.exclude_outbound_ports, vec![9090, 9091]);
        assert_eq!(options.include_inbound_ports, Selection::Only(vec![8080]));
        assert_eq!(options.exclude_interfaces, vec!["eth1".to_string(), "cni+".to_string()]);
    }

    #[test]
    fn empty_lists_select_nothing() {
        let options = parse(&["--include-outbound-cidrs", "", "--include-inbound-ports", ""]).expect("valid");
        assert!(options.include_outbound_cidrs.is_none());
        assert!(options.include_inbound_ports.is_none());
    }

    #[test]
    fn cidrs_are_masked_and_bare_addresses_are_hosts() {
        for (given, shown) in [
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("10.1.2.3", "10.1.2.3/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("fd00::1/8", "fd00::/8"),
            ("::1", "::1/128"),
            ("2001:db8::5/127", "2001:db8::4/127"),
        ] {
            assert_eq!(
                Cidr::parse(given).map(|c| c.to_string()),
                Ok(shown.to_string()),
                "{given}"
            );
        }
        assert!(Cidr::parse("127.0.0.0/8").is_ok_and(|c| c.is_loopback()));
        assert!(Cidr::parse("10.0.0.0/8").is_ok_and(|c| !c.is_loopback() && c.is_ipv4()));
    }

    #[test]
    fn unusable_values_name_the_option_and_the_value() {
        let cases: &[(&[&str], &str, &str, &str)] = &[
            (
                &["--exclude-outbound-cidrs", "10.0.0.0/33"],
                "exclude-outbound-cidrs",
                "10.0.0.0/33",
                "prefix length",
            ),
            (
                &["--include-outbound-cidrs", "10.0.0.0/8,nope"],
                "include-outbound-cidrs",
                "nope",
                "not a CIDR",
            ),
            (
                &["--include-outbound-cidrs", "fd00::/129"],
                "include-outbound-cidrs",
                "fd00::/129",
                "0 to 128",
            ),
            (
                &["--exclude-outbound-cidrs", "*"],
                "exclude-outbound-cidrs",
                "*",
                "not accepted",
            ),
            (
                &["--include-outbound-cidrs", "*,10.0.0.0/8"],
                "include-outbound-cidrs",
                "*,10.0.0.0/8",
                "stands alone",
            ),
            (
                &["--include-inbound-ports", "8080,http"],
                "include-inbound-ports",
                "http",
                "not a port",
            ),
            (
                &["--exclude-inbound-ports", "0"],
                "exclude-inbound-ports",
                "0",
                "not a port",
            ),
            (
                &["--include-outbound-ports", "65536"],
                "include-outbound-ports",
                "65536",
                "not a port",
            ),
            (
                &["--exclude-outbound-ports", "*"],
                "exclude-outbound-ports",
                "*",
                "not accepted",
            ),
            (
                &["--exclude-interfaces", "eth0 -j ACCEPT"],
                "exclude-interfaces",
                "eth0 -j ACCEPT",
                "interface",
            ),
            (
                &["--exclude-interfaces=-j"],
                "exclude-interfaces",
                "-j",
                "not an interface",
            ),
            (
                &["--exclude-interfaces", "a-very-long-name0"],
                "exclude-interfaces",
                "a-very-long-name0",
                "15",
            ),
            (&["--outbound-port", "0"], "outbound-port", "0", "not a port"),
            (&["--inbound-port", "0"], "inbound-port", "0", "not a port"),
        ];
        for (args, option, value, reason) in cases {
            let err = parse(args).expect_err("refused");
            assert_eq!((err.option, err.value.as_str()), (*option, *value), "{args:?}");
            let text = err.to_string();
            assert!(
                text.contains(&format!("--{option}")) && text.contains(value) && text.contains(reason),
                "{text}"
            );
        }
    }

    #[test]
    fn proxy_ports_follow_the_capture_ports() {
        let options = parse(&[
            "--outbound-port",
            "16001",
            "--inbound-port",
            "16006",
            "--exclude-inbound-ports",
            "",
        ])
        .expect("valid");
        assert_eq!(options.exclude_inbound_ports, vec![15000, 15020, 15021, 16001, 16006]);
    }
}
