//! `GET /`: the status page. One HTML document with its CSS and JavaScript inline, embedded in the
//! binary: it loads nothing from elsewhere (the admin endpoint is often reached through an SSH
//! tunnel from a host without internet). The script polls `/status` and `/traffic` every 2 s
//! while the page is open; closed, it costs the agent nothing.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("index.html");

pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Everything is inline; nothing else may load (and nothing may frame the page).
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src data:; frame-ancestors 'none'",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
}
