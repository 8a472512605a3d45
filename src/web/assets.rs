//! The stylesheet and vendored htmx, compiled into the binary so it runs from any directory.

use actix_web::HttpResponse;
use actix_web::http::header;

const HTMX: &str = include_str!("../../static/htmx.min.js");
const STYLESHEET: &str = include_str!("../../static/style.css");
const SCRIPT: &str = include_str!("../../static/app.js");
const FAVICON: &str = include_str!("../../static/favicon.svg");

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(body)
}

pub async fn htmx() -> HttpResponse {
    asset("text/javascript; charset=utf-8", HTMX)
}

pub async fn stylesheet() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLESHEET)
}

pub async fn favicon() -> HttpResponse {
    asset("image/svg+xml", FAVICON)
}

pub async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}
