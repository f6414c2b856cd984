//! Header operations (VirtualService `headers`, compiled to names and values)
//! applied to the request going upstream or the response going to the client.

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use strait_config::snapshot::HeaderOps;

/// Applies `ops` to a request going upstream.
pub fn apply_request(req: &mut RequestHeader, ops: &HeaderOps) -> Result<()> {
    for (k, v) in &ops.set {
        req.insert_header(k.clone(), v.clone())?;
    }
    for (k, v) in &ops.add {
        req.append_header(k.clone(), v.clone())?;
    }
    for k in &ops.remove {
        req.remove_header(k);
    }
    Ok(())
}

/// Applies set, add and remove operations to a response's headers.
/// Applies `ops` to a response going to the client.
pub fn apply_response(resp: &mut ResponseHeader, ops: &HeaderOps) -> Result<()> {
    for (k, v) in &ops.set {
        resp.insert_header(k.clone(), v.clone())?;
    }
    for (k, v) in &ops.add {
        resp.append_header(k.clone(), v.clone())?;
    }
    for k in &ops.remove {
        resp.remove_header(k);
    }
    Ok(())
}

/// The `server` header every answer carries, the upstream's replaced, as Envoy's
/// default (`server_header_transformation: OVERWRITE`) replaces it with its name.
const SERVER_NAME: http::HeaderValue = http::HeaderValue::from_static("strait");

/// Sets the answer's `server` header (a route's header operations may still
/// change it).
pub fn server_header(resp: &mut ResponseHeader) -> Result<()> {
    resp.insert_header(http::header::SERVER, SERVER_NAME)
}
