//! `POST /api/admin`: hands the envelope to `chatmail_admin::Api` and
//! wraps its reply in HTTP 200, as Madmail's tools expect.

use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use chatmail_admin::{Api, MAX_REQUEST};

use crate::Context;
use crate::new::ClientAddr;

pub async fn handle(State(ctx): State<Arc<Context>>, request: Request) -> Response {
    let Some(api) = ctx.admin.clone() else {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    };
    if request.method() != Method::POST {
        return Json(Api::post_only()).into_response();
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|info| info.0.0.ip());
    // Read at most one byte past the cap: enough to know it is too big.
    let body = match axum::body::to_bytes(request.into_body(), MAX_REQUEST + 1).await {
        Ok(body) => body,
        Err(_) => return Json(Api::too_large()).into_response(),
    };
    Json(api.handle(&body, peer).await).into_response()
}
