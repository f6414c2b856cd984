//! Strait as Istio's egress gateway and as the origin of TLS to external services:
//! `origination` (an egress gateway selecting `istio: egressgateway`, a ServiceEntry
//! resolved by DNS, TLS originated by a DestinationRule, towards a second Strait
//! standing in for the external service), `registry` (the outbound traffic policy)
//! and `mutual` (mutual TLS with client certificates from files or a Secret).

mod mutual;
mod origination;
mod registry;
