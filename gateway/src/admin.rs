//! The admin (`:15000`: `/ready`, `/config_dump`, `/clusters`) and health (`:15021`:
//! `/healthz/ready`) endpoints.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::state::Shared;

/// Which endpoints a port serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoints {
    /// Admin: everything.
    Admin,
    /// Health: readiness only.
    Health,
}

/// The admin/health HTTP application.
pub struct AdminApp {
    /// Engine state.
    pub shared: Arc<Shared>,
    /// Endpoints served.
    pub endpoints: Endpoints,
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    if let Ok(v) = resp.body().len().to_string().parse() {
        resp.headers_mut().insert(http::header::CONTENT_LENGTH, v);
    }
    resp
}

impl AdminApp {
    fn ready(&self) -> Response<Vec<u8>> {
        if self.shared.draining.load(Ordering::Relaxed) {
            reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", b"DRAINING\n".to_vec())
        } else {
            reply(StatusCode::OK, "text/plain", b"LIVE\n".to_vec())
        }
    }

    /// Clusters with their endpoints' health, ejections and counters.
    fn clusters(&self) -> Response<Vec<u8>> {
        let runtime = self.shared.current();
        let clusters: Vec<serde_json::Value> = runtime
            .snapshot
            .clusters
            .iter()
            .zip(&runtime.upstreams.clusters)
            .map(|(c, s)| crate::upstreams::describe(c, s))
            .collect();
        match serde_json::to_vec_pretty(&json!({ "clusters": clusters })) {
            Ok(body) => reply(StatusCode::OK, "application/json", body),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string().into_bytes(),
            ),
        }
    }

    fn config_dump(&self) -> Response<Vec<u8>> {
        let runtime = self.shared.current();
        let last = self.shared.last_attempt.lock().map(|l| l.clone()).unwrap_or_default();
        let dump = json!({
            "version": runtime.snapshot.version,
            "config_dir": self.shared.config_dir.display().to_string(),
            "sources": runtime.snapshot.sources,
            "rejected_since_start": self.shared.rejections.load(Ordering::Relaxed),
            "last_attempt": last,
            "warnings": runtime.warnings,
            "snapshot": runtime.snapshot,
        });
        match serde_json::to_vec_pretty(&dump) {
            Ok(body) => reply(StatusCode::OK, "application/json", body),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string().into_bytes(),
            ),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        match (self.endpoints, path.as_str()) {
            (_, "/healthz/ready") => self.ready(),
            (Endpoints::Admin, "/ready") => self.ready(),
            (Endpoints::Admin, "/config_dump") => self.config_dump(),
            (Endpoints::Admin, "/clusters") => self.clusters(),
            _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}
