//! Files built into the binary (from `web/dist`) and served as they are.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A built-in file: its name in the URL, its content type, its bytes.
pub type Asset = (&'static str, &'static str, &'static [u8]);

/// The file of `files` named `name`, or 404. They change only with the
/// binary, so browsers may keep them for a day.
pub fn serve(files: &[Asset], name: &str) -> Response {
    match files.iter().find(|(file, ..)| *file == name) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            *bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
