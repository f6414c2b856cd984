//! The state of one request as it goes through the phases of the request path:
//! the snapshot it was matched against (loaded once, so a reload mid-request never
//! mixes two configurations), where it was routed, its tries, and what the response
//! and the logs will need. `Place` reads the routed-to route, destination and
//! cluster back out of that snapshot by index.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{HeaderName, HeaderValue};
use strait_config::jwt::Verified;
use strait_config::snapshot::{Action, Cluster, Route, WeightedCluster};

use crate::engine::{Engine, InflightGuard};
use crate::flags::Flags;
use crate::request_copy::PendingCopy;
use crate::retry::Attempts;
use crate::runtime::Runtime;
use crate::trace::RequestSpan;
use crate::upstreams::{ActiveGuard, Admission, ClusterState, Outcome};

/// Per-request state.
pub struct RequestCtx {
    /// The configuration this request runs under, loaded once when it starts.
    pub(crate) runtime: Arc<Runtime>,
    _inflight: InflightGuard,
    /// Index of the request's listener in the snapshot (`usize::MAX`: none).
    pub(crate) listener: usize,
    /// (virtual host, route) indexes once matched.
    pub(crate) route: Option<(usize, usize)>,
    /// Index of the chosen destination of a Forward action.
    pub(crate) destination: Option<usize>,
    /// Length of the matched `uri.prefix`, for a prefix rewrite.
    pub(crate) prefix_len: Option<usize>,
    /// Tries so far, the deadline, where they went.
    pub(crate) attempts: Attempts,
    /// Headers the gateway adds to the response (CORS, external authorization).
    pub(crate) response_headers: Vec<(HeaderName, HeaderValue)>,
    /// The request's place in its cluster's connection limits.
    pub(crate) admission: Option<Admission>,
    /// Refused by the cluster's limits.
    pub(crate) overflow: bool,
    /// The endpoint of the current try, counted as active while held.
    pub(crate) endpoint: Option<(usize, ActiveGuard)>,
    /// Hash for consistent hashing, computed at the first try.
    pub(crate) hash: Option<u64>,
    /// A generated hash cookie to hand to the client.
    pub(crate) set_cookie: Option<HeaderValue>,
    /// A mirrored copy waiting for the request body.
    // Boxed: the context lives in the request's future, which Pingora moves on
    // every request; a copy in progress is rare.
    pub(crate) mirror: Option<Box<PendingCopy>>,
    /// Mirroring was decided (once per request, not per try).
    pub(crate) mirror_decided: bool,
    /// This try is the last request its upstream connection may carry.
    pub(crate) close_upstream: bool,
    /// The rate limit's allowance and what is left, for the response headers.
    pub(crate) rate: Option<(u32, u32)>,
    /// The request's verified JWT.
    // Boxed for the same reason as `mirror`.
    pub(crate) auth: Option<Box<Verified>>,
    /// When the request started, for its duration.
    pub(crate) start: Instant,
    /// Why it ended as it did.
    pub(crate) flags: Flags,
    /// `grpc-status` of the upstream's answer.
    pub(crate) grpc_status: Option<u16>,
    /// An upstream answered (the response is not the gateway's own).
    pub(crate) upstream_answered: bool,
    /// The `x-request-id` the gateway made up, when the client sent none.
    pub(crate) request_id: Option<HeaderValue>,
    /// The request's span, when tracing is on.
    // Boxed for the same reason as `mirror`.
    pub(crate) span: Option<Box<RequestSpan>>,
    /// Why the upstream's TLS handshake failed (`%UPSTREAM_TRANSPORT_FAILURE_REASON%`).
    pub(crate) transport_failure: Option<Box<str>>,
}

/// Where a request was routed, by index into its snapshot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Place {
    listener: usize,
    route: Option<(usize, usize)>,
    destination: Option<usize>,
}

impl Place {
    /// The matched route.
    #[inline]
    pub(crate) fn route(self, runtime: &Runtime) -> Option<&Route> {
        let (v, r) = self.route?;
        runtime
            .snapshot
            .listeners
            .get(self.listener)?
            .virtual_hosts
            .get(v)?
            .routes
            .get(r)
    }

    /// The chosen destination of the route's Forward action.
    #[inline]
    pub(crate) fn destination(self, runtime: &Runtime) -> Option<&WeightedCluster> {
        match &self.route(runtime)?.action {
            Action::Forward(f) => f.destinations.get(self.destination?),
            _ => None,
        }
    }

    /// The cluster of the chosen destination.
    #[inline]
    pub(crate) fn cluster(self, runtime: &Runtime) -> Option<&Cluster> {
        runtime.snapshot.clusters.get(self.destination(runtime)?.cluster)
    }

    /// The runtime state of that cluster.
    #[inline]
    pub(crate) fn cluster_state(self, runtime: &Runtime) -> Option<&ClusterState> {
        runtime
            .upstreams
            .clusters
            .get(self.destination(runtime)?.cluster)
            .map(|s| &**s)
    }
}

impl RequestCtx {
    /// A request arriving on the listener of Gateway port `port`, under the
    /// configuration running now.
    pub(crate) fn new(shared: &Arc<Engine>, port: u16) -> RequestCtx {
        let runtime = shared.current();
        let listener = runtime.listener_of_port(port);
        RequestCtx {
            runtime,
            _inflight: InflightGuard::new(shared),
            listener,
            route: None,
            destination: None,
            prefix_len: None,
            attempts: Attempts::default(),
            response_headers: Vec::new(),
            admission: None,
            overflow: false,
            endpoint: None,
            hash: None,
            set_cookie: None,
            mirror: None,
            mirror_decided: false,
            close_upstream: false,
            rate: None,
            auth: None,
            start: Instant::now(),
            flags: Flags::NONE,
            grpc_status: None,
            upstream_answered: false,
            request_id: None,
            span: None,
            transport_failure: None,
        }
    }

    /// Records the outcome of the current try for outlier detection and counters.
    pub(crate) fn record(&self, outcome: Outcome) {
        let Some((index, _)) = &self.endpoint else { return };
        let place = self.place();
        if let (Some(c), Some(s)) = (place.cluster(&self.runtime), place.cluster_state(&self.runtime)) {
            s.record(&c.policy, *index, outcome);
        }
    }

    /// Where the request was routed.
    #[inline]
    pub(crate) fn place(&self) -> Place {
        Place {
            listener: self.listener,
            route: self.route,
            destination: self.destination,
        }
    }

    /// The matched route.
    #[inline]
    pub(crate) fn route(&self) -> Option<&Route> {
        self.place().route(&self.runtime)
    }

    /// Endpoint `index` of the request's cluster.
    pub(crate) fn endpoint_info(&self, index: usize) -> Option<&strait_config::snapshot::Endpoint> {
        let cluster = self.place().destination(&self.runtime)?.cluster;
        self.runtime.cluster_endpoints(cluster)?.endpoints.get(index)
    }

    /// The workload of the endpoint of the last try, when known.
    pub(crate) fn upstream_workload(&self) -> Option<&str> {
        let (index, _) = self.endpoint.as_ref()?;
        self.endpoint_info(*index)?.workload.as_deref()
    }

    /// The endpoint of the last try.
    pub(crate) fn upstream_endpoint(&self) -> Option<SocketAddr> {
        let (index, _) = self.endpoint.as_ref()?;
        Some(self.endpoint_info(*index)?.address)
    }

    /// The chosen destination of the route's Forward action.
    #[inline]
    pub(crate) fn destination(&self) -> Option<&WeightedCluster> {
        self.place().destination(&self.runtime)
    }
}
