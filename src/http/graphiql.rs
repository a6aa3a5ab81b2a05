//! `GET /graphiql`: the GraphiQL page, wired to `/graphql` over HTTP and the
//! websocket. Its scripts are built into the binary (`web/dist`, copied from
//! the npm packages pinned in `web/package-lock.json`, with their licences)
//! and served under `/graphiql/assets`, so the page needs no internet; a
//! local folder of npm packages may replace them (`GRAPHIQL_ASSETS`).

use std::path::{Path, PathBuf};

use axum::Router;
use axum::extract::Path as UrlPath;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tower_http::services::ServeDir;

use super::AppState;
use super::assets::{self, Asset};

/// The files the page loads, relative to a folder holding npm's `react`,
/// `react-dom` and `graphiql` packages (a `node_modules` folder).
const LOCAL_FILES: [&str; 4] = [
    "react/umd/react.production.min.js",
    "react-dom/umd/react-dom.production.min.js",
    "graphiql/graphiql.min.js",
    "graphiql/graphiql.min.css",
];

/// The built-in files: (name, content type, bytes), in the page's order.
const EMBEDDED: [Asset; 4] = [
    (
        "react.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/dist/graphiql/react.production.min.js"),
    ),
    (
        "react-dom.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/dist/graphiql/react-dom.production.min.js"),
    ),
    (
        "graphiql.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/dist/graphiql/graphiql.min.js"),
    ),
    (
        "graphiql.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/dist/graphiql/graphiql.min.css"),
    ),
];

/// The licences of every npm package the built-in files come from.
const LICENCES: &[u8] = include_bytes!("../../web/dist/THIRD_PARTY_LICENSES.txt");

/// Where the page's scripts come from.
#[derive(Debug, Clone, Default)]
pub enum GraphiqlAssets {
    /// The files built into the binary.
    #[default]
    Embedded,
    /// A local folder of npm packages, served under `/graphiql/assets`.
    Local(PathBuf),
}

impl GraphiqlAssets {
    /// Local assets from `dir`, if it holds every file the page needs.
    pub fn local(dir: &Path) -> Result<GraphiqlAssets, String> {
        let missing: Vec<_> = LOCAL_FILES
            .iter()
            .filter(|file| !dir.join(file).is_file())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "GRAPHIQL_ASSETS {} lacks {missing:?}; fill it with \
                 `npm install --prefix DIR graphiql@4 react@18 react-dom@18` \
                 and pass DIR/node_modules",
                dir.display()
            ));
        }
        Ok(GraphiqlAssets::Local(dir.to_owned()))
    }

    /// The page's script and stylesheet URLs: react, react-dom, graphiql, css.
    fn urls(&self) -> [String; 4] {
        match self {
            GraphiqlAssets::Embedded => {
                EMBEDDED.map(|(name, ..)| format!("/graphiql/assets/{name}"))
            }
            GraphiqlAssets::Local(_) => LOCAL_FILES.map(|file| format!("/graphiql/assets/{file}")),
        }
    }
}

/// The GraphiQL page and the assets it loads.
pub fn routes(assets: &GraphiqlAssets) -> Router<AppState> {
    let page = Html(page(assets));
    let router = Router::new()
        .route("/graphiql", get(move || async move { page.clone() }))
        .route("/graphiql/licenses", get(licences));
    match assets {
        GraphiqlAssets::Embedded => router.route("/graphiql/assets/{name}", get(embedded)),
        GraphiqlAssets::Local(dir) => router.nest_service("/graphiql/assets", ServeDir::new(dir)),
    }
}

/// A built-in file.
async fn embedded(UrlPath(name): UrlPath<String>) -> Response {
    assets::serve(&EMBEDDED, &name)
}

/// `GET /graphiql/licenses`: the licences of the built-in files.
async fn licences() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        LICENCES,
    )
        .into_response()
}

/// The HTML of the page.
fn page(assets: &GraphiqlAssets) -> String {
    let [react, react_dom, graphiql, css] = assets.urls();
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>scenario-hub GraphiQL</title>
  <style>body {{ margin: 0; }} #graphiql {{ height: 100dvh; }}</style>
  <link rel="stylesheet" href="{css}">
  <script src="{react}"></script>
  <script src="{react_dom}"></script>
  <script src="{graphiql}"></script>
</head>
<body>
  <div id="graphiql">Loading GraphiQL...</div>
  <script>
    // Queries and mutations over HTTP, subscriptions over the websocket of
    // the same path (graphql-transport-ws).
    const url = new URL('/graphql', window.location.href).toString();
    const subscriptionUrl = url.replace(/^http/, 'ws');
    const fetcher = GraphiQL.createFetcher({{ url, subscriptionUrl }});
    ReactDOM.createRoot(document.getElementById('graphiql'))
      .render(React.createElement(GraphiQL, {{ fetcher, defaultEditorToolsVisibility: true }}));
  </script>
</body>
</html>
"#
    )
}
