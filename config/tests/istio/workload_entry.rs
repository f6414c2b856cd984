//! WorkloadEntry: validation.go `ValidateWorkloadEntry` / `validateWorkloadEntry`,
//! `ValidateUnixAddress`, `ValidatePortName`; agent `ValidatePort`, `ValidateFQDN`;
//! labels `Instance.Validate`; CRD rules of WorkloadEntry (address/network, UDS).

use strait_config::Code::*;

use super::*;

/// The field of a 63-character port name.
const LONG_PORT: &str = "spec.ports.ppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp";

fn we(spec: &str) -> String {
    resource("networking.istio.io/v1", "WorkloadEntry", spec)
}

#[test]
fn workload_entry_rules() {
    run(&[
        // validateWorkloadEntry: an address, or a network (then a warning).
        (we("{}"), Error(Required, "spec.address")),
        (we("{address: ''}"), Error(Required, "spec.address")),
        (we("{network: net2}"), Warning(Required, "spec.address")),
        (we("{address: 10.0.0.1}"), Accepted),
        (we("{address: 'fd00::1'}"), Accepted),
        (we("{address: vm1.example.com}"), Accepted),
        (we("{address: 'vm 1'}"), Error(InvalidValue, "spec.address")),
        (we("{address: 'vm_1.example.com'}"), Error(InvalidValue, "spec.address")),
        (
            we(&format!("{{address: {}.example.com}}", "a".repeat(250))),
            Error(InvalidValue, "spec.address"),
        ),
        // ValidateUnixAddress and the CRD's UDS rules.
        (we("{address: 'unix:///var/run/app.sock'}"), Accepted),
        (we("{address: 'unix://@abstract'}"), Accepted),
        (we("{address: 'unix:///dir/'}"), Error(InvalidValue, "spec.address")),
        (we("{address: 'unix://relative'}"), Error(InvalidValue, "spec.address")),
        (we("{address: 'unix://'}"), Error(InvalidValue, "spec.address")),
        (
            we("{address: 'unix://@foo', ports: {http: 80}}"),
            Error(Conflict, "spec.ports"),
        ),
        // ValidatePortName, ValidatePort (and the CRD's port rules).
        (we("{address: 10.0.0.1, ports: {http: 8080, grpc-web: 9090}}"), Accepted),
        (
            we("{address: 10.0.0.1, ports: {http: 99999}}"),
            Error(InvalidValue, "spec.ports.http"),
        ),
        (
            we("{address: 10.0.0.1, ports: {http: 0}}"),
            Error(InvalidValue, "spec.ports.http"),
        ),
        (
            we("{address: 10.0.0.1, ports: {'@': 80}}"),
            Error(InvalidValue, "spec.ports.@"),
        ),
        (
            we("{address: 10.0.0.1, ports: {http_1: 80}}"),
            Error(InvalidValue, "spec.ports.http_1"),
        ),
        // The CRD takes port names of at most 62 characters.
        (
            we("{address: 10.0.0.1, ports: {ppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp: 80}}"),
            Error(InvalidValue, LONG_PORT),
        ),
        // labels.Instance.Validate.
        (
            we("{address: 10.0.0.1, labels: {app: web, app.kubernetes.io/version: v1.2}}"),
            Accepted,
        ),
        (
            we("{address: 10.0.0.1, labels: {app: 'a b'}}"),
            Error(InvalidValue, "spec.labels.app"),
        ),
        (
            we("{address: 10.0.0.1, labels: {'-app': web}}"),
            Error(InvalidValue, "spec.labels.-app"),
        ),
        // CRD bounds: weight is a uint32, serviceAccount at most 253 characters.
        (we("{address: 10.0.0.1, weight: 4294967295}"), Accepted),
        (
            we("{address: 10.0.0.1, weight: 4294967296}"),
            Error(InvalidValue, "spec.weight"),
        ),
        (
            we("{address: 10.0.0.1, weight: -1}"),
            Error(InvalidValue, "spec.weight"),
        ),
        (
            we(&format!("{{address: 10.0.0.1, serviceAccount: {}}}", "s".repeat(254))),
            Error(InvalidValue, "spec.serviceAccount"),
        ),
        (
            we("{address: 10.0.0.1, network: n1, locality: us-east/a, serviceAccount: web}"),
            Accepted,
        ),
    ]);
}
