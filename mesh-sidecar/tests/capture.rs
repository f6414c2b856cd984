//! `strait-sidecar init` for real: the built binary sets up capture in a pod (a
//! network namespace, as root), and connections from the app, from the proxy's user
//! and from a peer land where Istio's capture would send them. Listeners on 15001 and
//! 15006 answer with the original destination they read from the redirected socket.
//!
//! These tests need root and network namespaces; without them they fail, they do not
//! skip.

mod netns;

use std::process::Output;

use netns::{ask, ask_as, exec, nat, serve, Pods, Reply, Server, PEER_IP, PEER_IP6, PEER_OTHER_IP, POD_IP, POD_IP6};

/// The pod's capture listeners, bound to all addresses as the sidecar's are.
fn capture_listeners(pods: &Pods) -> Vec<Server> {
    vec![
        serve(&pods.pod, "0.0.0.0:15001", Reply::Capture),
        serve(&pods.pod, "0.0.0.0:15006", Reply::Capture),
    ]
}

/// Real services on the peer at these ports, on all its addresses.
fn peer_services(pods: &Pods, ports: &[u16]) -> Vec<Server> {
    ports
        .iter()
        .map(|port| serve(&pods.peer, &format!("0.0.0.0:{port}"), Reply::Direct))
        .collect()
}

/// Real services of the app in the pod at these ports.
fn app_services(pods: &Pods, ports: &[u16]) -> Vec<Server> {
    ports
        .iter()
        .map(|port| serve(&pods.pod, &format!("0.0.0.0:{port}"), Reply::Direct))
        .collect()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_app_s_outbound_tcp_lands_on_15001_with_its_original_destination() {
    let pods = Pods::new();
    let _servers = (capture_listeners(&pods), peer_services(&pods, &[8080, 53]));
    pods.init_ok(&[]);

    assert_eq!(
        ask(&pods.pod, &format!("{PEER_IP}:8080")),
        format!("captured by 15001 for {PEER_IP}:8080")
    );
    assert_eq!(
        ask(&pods.pod, &format!("{PEER_OTHER_IP}:8080")),
        format!("captured by 15001 for {PEER_OTHER_IP}:8080")
    );
    // DNS is left alone unless asked for.
    assert_eq!(
        ask(&pods.pod, &format!("{PEER_IP}:53")),
        format!("direct to {PEER_IP}:53")
    );
}

#[test]
fn the_proxy_s_own_traffic_goes_direct() {
    let pods = Pods::new();
    let _servers = (capture_listeners(&pods), peer_services(&pods, &[8080]));
    pods.init_ok(&[]);

    assert_eq!(
        ask_as(&pods.pod, 1337, 1337, PEER_IP, 8080, None),
        format!("direct to {PEER_IP}:8080")
    );
    // Another user is captured like the app.
    assert_eq!(
        ask_as(&pods.pod, 1000, 1000, PEER_IP, 8080, None),
        format!("captured by 15001 for {PEER_IP}:8080")
    );
}

#[test]
fn proxy_uid_and_gid_each_exempt_their_traffic() {
    let pods = Pods::new();
    let _servers = (capture_listeners(&pods), peer_services(&pods, &[8080]));
    pods.init_ok(&["--proxy-uid", "2000", "--proxy-gid", "3000"]);

    let direct = format!("direct to {PEER_IP}:8080");
    assert_eq!(ask_as(&pods.pod, 2000, 100, PEER_IP, 8080, None), direct, "by uid");
    assert_eq!(ask_as(&pods.pod, 100, 3000, PEER_IP, 8080, None), direct, "by gid");
    assert_eq!(
        ask_as(&pods.pod, 1337, 1337, PEER_IP, 8080, None),
        format!("captured by 15001 for {PEER_IP}:8080")
    );
}

#[test]
fn inbound_tcp_lands_on_15006_except_excluded_ports() {
    let pods = Pods::new();
    let _servers = (
        capture_listeners(&pods),
        app_services(&pods, &[8080, 15021, 15090, 2222]),
    );
    pods.init_ok(&["--exclude-inbound-ports", "15020,15021,15090,2222"]);

    assert_eq!(
        ask(&pods.peer, &format!("{POD_IP}:8080")),
        format!("captured by 15006 for {POD_IP}:8080")
    );
    for port in [15021, 15090, 2222] {
        assert_eq!(
            ask(&pods.peer, &format!("{POD_IP}:{port}")),
            format!("direct to {POD_IP}:{port}")
        );
    }
}

#[test]
fn only_included_inbound_ports_are_captured() {
    let pods = Pods::new();
    let _servers = (capture_listeners(&pods), app_services(&pods, &[8080, 9090]));
    pods.init_ok(&["--include-inbound-ports", "8080"]);

    assert_eq!(
        ask(&pods.peer, &format!("{POD_IP}:8080")),
        format!("captured by 15006 for {POD_IP}:8080")
    );
    assert_eq!(
        ask(&pods.peer, &format!("{POD_IP}:9090")),
        format!("direct to {POD_IP}:9090")
    );
}

#[test]
fn outbound_exclusions_go_direct_and_included_ports_are_captured_anyway() {
    let pods = Pods::new();
    let _servers = (capture_listeners(&pods), peer_services(&pods, &[8080, 9090, 7070, 53]));
    pods.init_ok(&[
        "--exclude-outbound-cidrs",
        "10.200.1.0/24",
        "--exclude-outbound-ports",
        "9090",
        "--include-outbound-ports",
        "7070,53",
    ]);

    assert_eq!(
        ask(&pods.pod, &format!("{PEER_OTHER_IP}:8080")),
        format!("direct to {PEER_OTHER_IP}:8080")
    );
    assert_eq!(
        ask(&pods.pod, &format!("{PEER_IP}:9090")),
        format!("direct to {PEER_IP}:9090")
    );
    assert_eq!(
        ask(&pods.pod, &format!("{PEER_OTHER_IP}:7070")),
        format!("captured by 15001 for {PEER_OTHER_IP}:7070")
    );
    assert_eq!(
        ask(&pods.pod, &format!("{PEER_IP}:53")),
        format!("captured by 15001 for {PEER_IP}:53")
    );
    assert_eq!(
        ask(&pods.pod, &format!("{PEER_IP}:8080")),
        format!("captured by 15001 for {PEER_IP}:8080")
    );
}

#[test]
fn only_included_outbound_cidrs_are_captured() {
    let pods = Pods::new();
    let _servers = (capture_listeners(&pods), peer_services(&pods, &[8080]));
    pods.init_ok(&["--include-outbound-cidrs", "10.200.1.0/24"]);

    assert_eq!(
        ask(&pods.pod, &format!("{PEER_OTHER_IP}:8080")),
        format!("captured by 15001 for {PEER_OTHER_IP}:8080")
    );
    assert_eq!(
        ask(&pods.pod, &format!("{PEER_IP}:8080")),
        format!("direct to {PEER_IP}:8080")
    );
}

#[test]
fn loopback_is_handled_as_istio_does() {
    let pods = Pods::new();
    let _servers = (capture_listeners(&pods), app_services(&pods, &[8080]));
    pods.init_ok(&[]);

    // The app calling itself, by 127.0.0.1 or by its pod IP over lo: not captured.
    assert_eq!(ask(&pods.pod, "127.0.0.1:8080"), "direct to 127.0.0.1:8080");
    assert_eq!(
        ask(&pods.pod, &format!("{POD_IP}:8080")),
        format!("direct to {POD_IP}:8080")
    );
    // The proxy calling its own pod IP (an app's service call that picked this pod):
    // through inbound capture, so inbound policy applies.
    assert_eq!(
        ask_as(&pods.pod, 1337, 1337, POD_IP, 8080, None),
        format!("captured by 15006 for {POD_IP}:8080")
    );
    // The proxy handing inbound traffic to the app, from 127.0.0.6 or to 127.0.0.1:
    // not looped back into capture.
    assert_eq!(
        ask_as(&pods.pod, 1337, 1337, POD_IP, 8080, Some("127.0.0.6")),
        format!("direct to {POD_IP}:8080")
    );
    assert_eq!(
        ask_as(&pods.pod, 1337, 1337, "127.0.0.1", 8080, None),
        "direct to 127.0.0.1:8080"
    );
}

#[test]
fn init_twice_equals_once_and_cleanup_restores_the_nat_table() {
    let pods = Pods::new();
    let _servers = (capture_listeners(&pods), peer_services(&pods, &[8080]));
    // Someone else's rules (a CNI's) are there before and stay.
    for chain in ["PREROUTING", "OUTPUT"] {
        let output = exec(
            &pods.pod,
            "iptables",
            &["-t", "nat", "-A", chain, "-p", "udp", "--dport", "9999", "-j", "RETURN"],
        );
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let before = nat(&pods.pod, "iptables-save");

    pods.init_ok(&[]);
    let once = nat(&pods.pod, "iptables-save");
    assert!(once.contains("-A OUTPUT -p tcp -j ISTIO_OUTPUT"), "{once}");
    pods.init_ok(&[]);
    assert_eq!(nat(&pods.pod, "iptables-save"), once, "init twice");
    assert_eq!(once.matches("-j ISTIO_OUTPUT").count(), 1, "{once}");
    assert!(once.contains("--dport 9999"), "the other rules stay: {once}");

    // Re-running with other options replaces the rules, as one run with them would.
    let other = ["--include-inbound-ports", "", "--exclude-outbound-ports", "9090"];
    pods.init_ok(&other);
    let replaced = nat(&pods.pod, "iptables-save");
    assert!(!replaced.contains("-j ISTIO_INBOUND"), "{replaced}");
    pods.init_ok(&["--cleanup"]);
    assert_eq!(nat(&pods.pod, "iptables-save"), before, "cleanup");
    pods.init_ok(&other);
    assert_eq!(
        nat(&pods.pod, "iptables-save"),
        replaced,
        "one run with the other options"
    );

    pods.init_ok(&["--cleanup"]);
    assert_eq!(nat(&pods.pod, "iptables-save"), before, "cleanup");
    assert_eq!(
        ask(&pods.pod, &format!("{PEER_IP}:8080")),
        format!("direct to {PEER_IP}:8080")
    );
    // Nothing left to remove: still fine.
    let again = pods.init_ok(&["--cleanup"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to clean up"));
    assert_eq!(nat(&pods.pod, "iptables-save"), before);
}

#[test]
fn dry_run_prints_the_rules_and_applies_nothing() {
    let pods = Pods::new();
    let before = nat(&pods.pod, "iptables-save");
    let output = pods.init_ok(&["--dry-run"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("# IPv4: iptables-restore --noflush\n*nat\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("-A OUTPUT -p tcp -j ISTIO_OUTPUT\nCOMMIT\n"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("IPv6"),
        "an IPv4-only pod gets no IPv6 rules: {stdout}"
    );
    assert_eq!(nat(&pods.pod, "iptables-save"), before);
}

#[test]
fn a_dual_stack_pod_is_captured_over_ipv6_too() {
    let pods = Pods::dual_stack();
    let mut servers = capture_listeners(&pods);
    servers.push(serve(&pods.pod, "[::]:15001", Reply::Capture));
    servers.push(serve(&pods.pod, "[::]:15006", Reply::Capture));
    servers.push(serve(&pods.peer, "[::]:8080", Reply::Direct));
    servers.push(serve(&pods.pod, "[::]:8080", Reply::Direct));
    let before = nat(&pods.pod, "ip6tables-save");
    pods.init_ok(&["--exclude-outbound-cidrs", "fd20::2/128"]);

    assert_eq!(
        ask(&pods.pod, &format!("[{PEER_IP6}]:8080")),
        format!("direct to [{PEER_IP6}]:8080"),
        "an excluded IPv6 CIDR"
    );
    pods.init_ok(&[]);
    assert_eq!(
        ask(&pods.pod, &format!("[{PEER_IP6}]:8080")),
        format!("captured by 15001 for [{PEER_IP6}]:8080")
    );
    assert_eq!(
        ask(&pods.peer, &format!("[{POD_IP6}]:8080")),
        format!("captured by 15006 for [{POD_IP6}]:8080")
    );
    assert_eq!(
        ask_as(&pods.pod, 1337, 1337, PEER_IP6, 8080, None),
        format!("direct to [{PEER_IP6}]:8080")
    );

    pods.init_ok(&["--cleanup"]);
    assert_eq!(nat(&pods.pod, "ip6tables-save"), before);
}

#[test]
fn without_ip6tables_a_dual_stack_pod_gets_ipv4_capture_and_a_warning() {
    let pods = Pods::dual_stack();
    let _servers = (capture_listeners(&pods), peer_services(&pods, &[8080]));
    // A PATH with iptables but no ip6tables.
    let bin = tempfile::tempdir().expect("a temporary folder");
    for tool in ["iptables-save", "iptables-restore"] {
        let real = ["/usr/sbin", "/sbin", "/usr/bin"]
            .iter()
            .map(|dir| std::path::Path::new(dir).join(tool))
            .find(|path| path.exists())
            .unwrap_or_else(|| panic!("{tool} is not installed"));
        std::os::unix::fs::symlink(real, bin.path().join(tool)).expect("a symlink");
    }
    let path = format!("PATH={}", bin.path().display());
    let output = exec(&pods.pod, "env", &[&path, env!("CARGO_BIN_EXE_strait-sidecar"), "init"]);

    assert!(output.status.success(), "{}", stderr(&output));
    let stderr = stderr(&output);
    assert!(
        stderr.contains("IPv6: ip6tables-save is not installed") && stderr.contains("IPv6 traffic is not captured"),
        "{stderr}"
    );
    assert_eq!(
        ask(&pods.pod, &format!("{PEER_IP}:8080")),
        format!("captured by 15001 for {PEER_IP}:8080")
    );
    assert!(!nat(&pods.pod, "ip6tables-save").contains("ISTIO"));
}

#[test]
fn a_failing_iptables_is_reported_with_its_own_words() {
    let pods = Pods::new();
    // Without root's capabilities, iptables refuses.
    let binary = env!("CARGO_BIN_EXE_strait-sidecar");
    let output = exec(
        &pods.pod,
        "setpriv",
        &["--reuid=1337", "--regid=1337", "--clear-groups", binary, "init"],
    );
    assert!(!output.status.success());
    let stderr = stderr(&output);
    assert!(
        stderr.starts_with("strait-sidecar init: IPv4: iptables-save -t nat failed"),
        "{stderr}"
    );
    assert!(stderr.contains("Permission denied"), "the tool's own stderr: {stderr}");
}

#[test]
fn an_unusable_option_exits_non_zero_naming_the_option_and_value() {
    // --dry-run: should a value slip through, nothing is applied to this machine.
    /// Arguments, environment, then the option and value the error must name.
    type Case = (
        &'static [&'static str],
        &'static [(&'static str, &'static str)],
        &'static str,
        &'static str,
    );
    let cases: &[Case] = &[
        (
            &["--exclude-outbound-cidrs", "10.0.0.0/33"],
            &[],
            "--exclude-outbound-cidrs",
            "10.0.0.0/33",
        ),
        (
            &["--include-inbound-ports", "80,http"],
            &[],
            "--include-inbound-ports",
            "http",
        ),
        (
            &["--exclude-interfaces", "eth0 -j DROP"],
            &[],
            "--exclude-interfaces",
            "eth0 -j DROP",
        ),
        (&["--outbound-port", "70000"], &[], "--outbound-port", "70000"),
        (&["--proxy-uid", "istio"], &[], "--proxy-uid", "istio"),
        (
            &[],
            &[("STRAIT_EXCLUDE_OUTBOUND_PORTS", "9090,nine")],
            "--exclude-outbound-ports",
            "nine",
        ),
    ];
    for (args, env, option, value) in cases {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_strait-sidecar"))
            .arg("init")
            .arg("--dry-run")
            .args(*args)
            .envs(env.iter().copied())
            .output()
            .expect("the binary runs");
        let stderr = stderr(&output);
        assert!(!output.status.success(), "{args:?} {env:?} was accepted");
        assert!(output.stdout.is_empty(), "{args:?}: nothing printed but the error");
        assert!(
            stderr.contains(option) && stderr.contains(value),
            "{args:?} {env:?}: {stderr}"
        );
    }
}
