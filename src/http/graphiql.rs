//! `GET /graphiql`: the GraphiQL page, wired to `/graphql` over HTTP and the
//! websocket. Its scripts come from unpkg.com, or, for networks without
//! internet, from a local folder of npm packages served under
//! `/graphiql/assets`.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use tower_http::services::ServeDir;

use super::AppState;

/// The files the page loads, relative to a folder holding npm's `react`,
/// `react-dom` and `graphiql` packages (a `node_modules` folder).
const LOCAL_FILES: [&str; 4] = [
    "react/umd/react.production.min.js",
    "react-dom/umd/react-dom.production.min.js",
    "graphiql/graphiql.min.js",
    "graphiql/graphiql.min.css",
];

/// The same files on unpkg.com, at the versions the page is written for.
const CDN_FILES: [&str; 4] = [
    "https://unpkg.com/react@18/umd/react.production.min.js",
    "https://unpkg.com/react-dom@18/umd/react-dom.production.min.js",
    "https://unpkg.com/graphiql@4/graphiql.min.js",
    "https://unpkg.com/graphiql@4/graphiql.min.css",
];

/// Where the page's scripts come from.
#[derive(Debug, Clone, Default)]
pub enum GraphiqlAssets {
    /// unpkg.com.
    #[default]
    Cdn,
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
            GraphiqlAssets::Cdn => CDN_FILES.map(str::to_owned),
            GraphiqlAssets::Local(_) => LOCAL_FILES.map(|file| format!("/graphiql/assets/{file}")),
        }
    }
}

/// The GraphiQL page and, for local assets, the folder they are served from.
pub fn routes(assets: &GraphiqlAssets) -> Router<AppState> {
    let page = Html(page(assets));
    let router = Router::new().route("/graphiql", get(move || async move { page.clone() }));
    match assets {
        GraphiqlAssets::Cdn => router,
        GraphiqlAssets::Local(dir) => router.nest_service("/graphiql/assets", ServeDir::new(dir)),
    }
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
  <script crossorigin src="{react}"></script>
  <script crossorigin src="{react_dom}"></script>
  <script crossorigin src="{graphiql}"></script>
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
