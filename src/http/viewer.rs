//! `GET /runs` and `GET /runs/{run_id}`: the run viewer. One page shell for
//! both; the script (built into the binary from `web/viewer`, bundled in
//! `web/dist/viewer`) reads the path and fetches everything through
//! `/graphql` with the read role, live over the websocket. The shell and
//! the script are public; the data needs a token when keys exist, which the
//! page asks for.

use axum::Router;
use axum::extract::Path;
use axum::response::{Html, Response};
use axum::routing::get;

use super::AppState;
use super::assets::{self, Asset};

/// The built-in files: (name, content type, bytes).
const ASSETS: [Asset; 2] = [
    (
        "viewer.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/dist/viewer/viewer.js"),
    ),
    (
        "viewer.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/dist/viewer/viewer.css"),
    ),
];

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>scenario-hub runs</title>
  <link rel="stylesheet" href="/runs/assets/viewer.css">
</head>
<body>
  <main id="app">Loading...</main>
  <footer><small><a href="/graphiql">GraphiQL</a> · <a href="/graphiql/licenses">licences</a></small></footer>
  <script src="/runs/assets/viewer.js"></script>
</body>
</html>
"#;

/// The viewer's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/runs", get(page))
        .route("/runs/{run_id}", get(page))
        .route("/runs/assets/{name}", get(asset))
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn asset(Path(name): Path<String>) -> Response {
    assets::serve(&ASSETS, &name)
}
