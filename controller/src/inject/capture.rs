//! The traffic capture of an injected pod: the `strait-init` container, which runs
//! `strait-sidecar init` (iptables rules in the pod's network namespace, as root with
//! NET_ADMIN and NET_RAW) before any other container starts.
//!
//! Its flags come from Istio's annotations, with Istio's meanings and defaults, and
//! are validated as Istio validates them (a bad value refuses the injection, and so
//! the pod, with the annotation's name in the message):
//!
//! | annotation (`traffic.sidecar.istio.io/`) | flag | when absent |
//! | --- | --- | --- |
//! | `includeOutboundIPRanges` (CIDRs or `*`) | `--include-outbound-cidrs` | `*`: all |
//! | `excludeOutboundIPRanges` (CIDRs) | `--exclude-outbound-cidrs` | not passed |
//! | `includeInboundPorts` (ports or `*`) | `--include-inbound-ports` | `*`: all |
//! | `excludeInboundPorts` (ports) | `--exclude-inbound-ports` | `15020,15021,15090` |
//! | `includeOutboundPorts` (ports) | `--include-outbound-ports` | not passed |
//! | `excludeOutboundPorts` (ports) | `--exclude-outbound-ports` | not passed |
//! | `excludeInterfaces` (names) | `--exclude-interfaces` | not passed |
//!
//! The include flags are always passed, and an empty value means "none" (Istio's
//! `-i ""`: no outbound IP captured; `-b ""`: no inbound port). Inbound ports default
//! to `*` as in Istio today (it once defaulted to the pod's containerPorts, which
//! left undeclared ports outside the mesh). The sidecar's own ports 15020 (metrics)
//! and 15021 (health, which the kubelet probes) and Istio's 15090 are always excluded
//! from inbound capture, whatever the annotation says.
//! Then the fixed ones: `--outbound-port 15001 --inbound-port 15006 --proxy-uid 1337
//! --proxy-gid 1337`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Capabilities, Container, ResourceRequirements, SecurityContext};

use super::{Error, Settings, INIT_CONTAINER};

/// The uid and gid the proxy runs as: its own traffic is never captured.
pub(super) const PROXY_UID: i64 = 1337;

/// Inbound ports never captured: the sidecar's metrics (15020) and health (15021)
/// ports, and Istio's Envoy metrics port (15090), which scrapers may still try.
const ALWAYS_EXCLUDED_INBOUND: &[u16] = &[15020, 15021, 15090];

/// What a value may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Cidrs { wildcard: bool },
    Ports { wildcard: bool },
    Interfaces,
}

/// One annotation and the flag it becomes.
struct Rule {
    annotation: &'static str,
    flag: &'static str,
    kind: Kind,
    /// The value when the annotation is absent; None: the flag is left out then.
    default: Option<&'static str>,
}

const RULES: &[Rule] = &[
    Rule {
        annotation: "traffic.sidecar.istio.io/includeOutboundIPRanges",
        flag: "--include-outbound-cidrs",
        kind: Kind::Cidrs { wildcard: true },
        default: Some("*"),
    },
    Rule {
        annotation: "traffic.sidecar.istio.io/excludeOutboundIPRanges",
        flag: "--exclude-outbound-cidrs",
        kind: Kind::Cidrs { wildcard: false },
        default: None,
    },
    Rule {
        annotation: "traffic.sidecar.istio.io/includeInboundPorts",
        flag: "--include-inbound-ports",
        kind: Kind::Ports { wildcard: true },
        default: Some("*"),
    },
    Rule {
        annotation: "traffic.sidecar.istio.io/excludeInboundPorts",
        flag: "--exclude-inbound-ports",
        kind: Kind::Ports { wildcard: false },
        default: Some(""),
    },
    Rule {
        annotation: "traffic.sidecar.istio.io/includeOutboundPorts",
        flag: "--include-outbound-ports",
        kind: Kind::Ports { wildcard: false },
        default: None,
    },
    Rule {
        annotation: "traffic.sidecar.istio.io/excludeOutboundPorts",
        flag: "--exclude-outbound-ports",
        kind: Kind::Ports { wildcard: false },
        default: None,
    },
    Rule {
        annotation: "traffic.sidecar.istio.io/excludeInterfaces",
        flag: "--exclude-interfaces",
        kind: Kind::Interfaces,
        default: None,
    },
];

/// The arguments of `strait-sidecar init` for a pod with `annotations`.
pub(super) fn init_args(annotations: &BTreeMap<String, String>) -> Result<Vec<String>, Error> {
    let mut args: Vec<String> = [
        "strait-sidecar",
        "init",
        "--outbound-port",
        "15001",
        "--inbound-port",
        "15006",
    ]
    .map(String::from)
    .into();
    args.extend([
        "--proxy-uid".into(),
        PROXY_UID.to_string(),
        "--proxy-gid".into(),
        PROXY_UID.to_string(),
    ]);
    for rule in RULES {
        let given = annotations.get(rule.annotation).map(String::as_str);
        let Some(raw) = given.or(rule.default) else {
            continue;
        };
        let mut value = normalize(raw, rule.kind).map_err(|reason| Error::Annotation {
            name: rule.annotation,
            value: raw.to_string(),
            reason,
        })?;
        if rule.flag == "--exclude-inbound-ports" {
            value = with_sidecar_ports(&value);
        }
        // An exclusion or extra inclusion of nothing is no flag at all.
        if value.is_empty() && rule.default.is_none() {
            continue;
        }
        args.extend([rule.flag.to_string(), value]);
    }
    Ok(args)
}

/// The `strait-init` container.
pub(super) fn init_container(
    annotations: &BTreeMap<String, String>,
    resources: &ResourceRequirements,
    settings: &Settings,
) -> Result<Container, Error> {
    Ok(Container {
        name: INIT_CONTAINER.into(),
        image: Some(settings.proxy_image.clone()),
        command: Some(init_args(annotations)?),
        resources: Some(resources.clone()),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    })
}

/// `raw` checked and written the way the flag takes it: comma-separated, no spaces.
fn normalize(raw: &str, kind: Kind) -> Result<String, String> {
    let raw = raw.trim();
    let wildcard = matches!(kind, Kind::Cidrs { wildcard: true } | Kind::Ports { wildcard: true });
    if raw == "*" && wildcard {
        return Ok("*".into());
    }
    if raw.is_empty() {
        return Ok(String::new());
    }
    let items: Vec<&str> = raw.split(',').map(str::trim).collect();
    for item in &items {
        match kind {
            Kind::Cidrs { .. } => check_cidr(item)?,
            Kind::Ports { .. } => {
                item.parse::<u16>()
                    .map_err(|_| format!("{item:?} is not a port (0-65535)"))?;
            }
            Kind::Interfaces => check_interface(item)?,
        }
    }
    Ok(items.join(","))
}

fn check_cidr(item: &str) -> Result<(), String> {
    let bad = || format!("{item:?} is not a CIDR (address/prefix length)");
    let (address, length) = item.split_once('/').ok_or_else(bad)?;
    let address: std::net::IpAddr = address.parse().map_err(|_| bad())?;
    let length: u8 = length.parse().map_err(|_| bad())?;
    let most = if address.is_ipv4() { 32 } else { 128 };
    if length > most {
        return Err(bad());
    }
    Ok(())
}

/// A Linux interface name: 1 to 15 bytes, none of them `/`, `:` or white space.
fn check_interface(item: &str) -> Result<(), String> {
    let fine = !item.is_empty()
        && item.len() <= 15
        && item != "."
        && item != ".."
        && !item.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if fine {
        Ok(())
    } else {
        Err(format!("{item:?} is not an interface name"))
    }
}

/// `ports` (checked, comma-separated) after the ports never captured inbound.
fn with_sidecar_ports(ports: &str) -> String {
    let mut all: Vec<String> = ALWAYS_EXCLUDED_INBOUND.iter().map(u16::to_string).collect();
    for port in ports.split(',').filter(|p| !p.is_empty()) {
        if !all.iter().any(|p| p == port) {
            all.push(port.to_string());
        }
    }
    all.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "traffic.sidecar.istio.io/";

    fn args_for(pairs: &[(&str, &str)]) -> Result<Vec<String>, Error> {
        let annotations = pairs
            .iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
            .collect();
        init_args(&annotations)
    }

    /// The value after `flag`, if the flag is there.
    fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
        let i = args.iter().position(|a| a == flag)?;
        args.get(i + 1).map(String::as_str)
    }

    #[test]
    fn no_annotations_capture_everything_but_the_sidecar_ports() {
        let args = args_for(&[]).expect("valid");
        assert_eq!(
            args,
            [
                "strait-sidecar",
                "init",
                "--outbound-port",
                "15001",
                "--inbound-port",
                "15006",
                "--proxy-uid",
                "1337",
                "--proxy-gid",
                "1337",
                "--include-outbound-cidrs",
                "*",
                "--include-inbound-ports",
                "*",
                "--exclude-inbound-ports",
                "15020,15021,15090",
            ]
        );
    }

    #[test]
    fn each_annotation_becomes_its_flag() {
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "includeOutboundIPRanges",
                "10.0.0.0/8, 172.16.0.0/12",
                "--include-outbound-cidrs",
                "10.0.0.0/8,172.16.0.0/12",
            ),
            ("includeOutboundIPRanges", "", "--include-outbound-cidrs", ""),
            (
                "excludeOutboundIPRanges",
                "169.254.169.254/32,fd00::/8",
                "--exclude-outbound-cidrs",
                "169.254.169.254/32,fd00::/8",
            ),
            (
                "includeInboundPorts",
                "8080,9090",
                "--include-inbound-ports",
                "8080,9090",
            ),
            ("includeInboundPorts", "", "--include-inbound-ports", ""),
            (
                "excludeInboundPorts",
                "8081, 15021",
                "--exclude-inbound-ports",
                "15020,15021,15090,8081",
            ),
            ("includeOutboundPorts", "443", "--include-outbound-ports", "443"),
            (
                "excludeOutboundPorts",
                "3306,5432",
                "--exclude-outbound-ports",
                "3306,5432",
            ),
            ("excludeInterfaces", "eth1,net1", "--exclude-interfaces", "eth1,net1"),
        ];
        for (annotation, value, name, expected) in cases {
            let args = args_for(&[(annotation, value)]).expect(annotation);
            assert_eq!(flag(&args, name), Some(*expected), "{annotation}={value:?}");
        }
    }

    #[test]
    fn empty_exclusions_are_no_flag() {
        let args = args_for(&[("excludeOutboundIPRanges", ""), ("excludeOutboundPorts", " ")]).expect("valid");
        assert_eq!(flag(&args, "--exclude-outbound-cidrs"), None);
        assert_eq!(flag(&args, "--exclude-outbound-ports"), None);
    }

    #[test]
    fn bad_values_name_their_annotation() {
        let cases: &[(&str, &str)] = &[
            ("includeOutboundIPRanges", "10.0.0.0"),
            ("includeOutboundIPRanges", "10.0.0.0/33"),
            ("excludeOutboundIPRanges", "*"),
            ("includeInboundPorts", "http"),
            ("excludeInboundPorts", "70000"),
            ("excludeInboundPorts", "*"),
            ("excludeOutboundPorts", "1,,2"),
            ("excludeInterfaces", "a very long interface"),
        ];
        for (annotation, value) in cases {
            let error = args_for(&[(annotation, value)]).expect_err(annotation);
            let Error::Annotation { name, .. } = &error else {
                panic!("{error}");
            };
            assert_eq!(*name, format!("{PREFIX}{annotation}"), "{error}");
        }
    }
}
