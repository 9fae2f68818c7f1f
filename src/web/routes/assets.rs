//! The stylesheet and the favicon, compiled into the binary. The stylesheet is served with
//! long-lived cache headers (its URL carries a content hash, so a new release is fetched at
//! once); the favicon, whose URL is fixed, for a day.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use sha2::{Digest as _, Sha256};

const STYLESHEET: &str = include_str!("../../../static/app.css");
const FAVICON: &str = include_str!("../../../static/favicon.svg");

/// `/static/app.css?v=<hash>`.
pub fn stylesheet_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let digest = Sha256::digest(STYLESHEET.as_bytes());
        let version = crate::secret::encode_token(&digest[..9]);
        format!("/static/app.css?v={version}")
    })
}

pub async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/css; charset=utf-8"))
        .insert_header((CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .body(STYLESHEET)
}

/// `/favicon.svg`, and `/favicon.ico` for browsers that ask for it by that name.
pub async fn favicon() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "image/svg+xml"))
        .insert_header((CACHE_CONTROL, "public, max-age=86400"))
        .body(FAVICON)
}
