//! The demo page on the API port: `GET /` (index.html), `GET /demo/app.js`, `GET /demo/style.css`.
//!
//! Plain HTML and JavaScript compiled into the binary (no build step, no external resources); the
//! page talks to the same WebSocket API as any client (`/api/ws`): an echo test and an SFU room.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("demo/index.html");
const APP_JS: &str = include_str!("demo/app.js");
const STYLE: &str = include_str!("demo/style.css");

/// Routes for the demo page (stateless; merged into the API router).
pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/demo/app.js", get(app_js))
        .route("/demo/style.css", get(style))
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX)
}

async fn app_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE)
}
