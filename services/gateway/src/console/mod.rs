//! The web console under `/console/`: static files compiled into the
//! gateway binary, served with their content type, a strict
//! Content-Security-Policy and revalidation caching. The pages are plain
//! HTML, CSS and native ES modules (no framework, no bundler, no npm step
//! in the build): the gateway's REST API already has every operation the
//! pages show, so the console is a client of that API and nothing more.
//! It keeps the caller's token in `sessionStorage` and sends it as
//! `Authorization: Bearer` on every data request, treating it as opaque
//! (a JWT or an API key alike).
//!
//! Why this stack: the console needs forms, tables, an event stream and a
//! few SVG charts; a framework and a JavaScript build would add a second
//! toolchain to a Rust workspace whose CI builds cold on two cores, for
//! little gain at this size. Native modules load in every current browser,
//! and `include_bytes!` makes the files part of the binary, so a deployed
//! gateway always serves the console of its own version.
//!
//! What this module must never do: serve anything but the compiled-in
//! files (no file system, no templating of request data into a page), or
//! relax the CSP: the scripts build the DOM with text nodes only, and the
//! policy (`require-trusted-types-for 'script'`) makes the browser refuse
//! any HTML-string sink, so data from the API cannot become markup.
//! The routes are public (listed in `auth::UNAUTHENTICATED_ROUTES`): the
//! files hold no data; the data comes from the authenticated API.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The policy every console response carries: scripts, styles, images
/// (and data: icons), and API calls from this origin only; no inline code,
/// no frames, no plugins, no form posts; HTML-string sinks refused.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'; \
    trusted-types 'none'";

/// Files change with the binary only, but a browser must not keep an old
/// console after an upgrade: it revalidates every time (the ETag makes that
/// a 304 without a body).
const CACHE_CONTROL: &str = "no-cache";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!("../../console/", $path)),
        }
    };
}

/// Every file of the console; nothing else is served.
const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("console.css", CSS),
    asset!("icon.svg", SVG),
    asset!("js/main.js", JS),
    asset!("js/api.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/format.js", JS),
    asset!("js/jsonpos.js", JS),
    asset!("js/yaml.js", JS),
    asset!("js/editor.js", JS),
    asset!("js/resources.js", JS),
    asset!("js/tasks.js", JS),
    asset!("js/traces.js", JS),
    asset!("js/usage.js", JS),
    asset!("js/charts.js", JS),
];

/// `GET /console` (redirected), `/console/` (the page) and the files.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route(
            "/console/",
            get(|headers: HeaderMap| async move { serve("index.html", &headers) }),
        )
        .route(
            "/console/{*path}",
            get(|Path(path): Path<String>, headers: HeaderMap| async move {
                serve(&path, &headers)
            }),
        )
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        return with_policy(
            (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "no such console file",
            )
                .into_response(),
        );
    };
    let etag = etag(asset.body);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    with_policy(response)
}

fn with_policy(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// A strong validator from the bytes (FNV-1a, 64 bits: a cache key, not a
/// security property).
fn etag(body: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in body {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("\"{hash:016x}-{}\"", body.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    async fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        routes::<()>()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn files_carry_type_policy_and_validator() {
        let page = get("/console/", None).await;
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers()[header::CONTENT_TYPE], HTML);
        assert_eq!(
            page.headers()[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
        assert_eq!(page.headers()[header::CACHE_CONTROL], CACHE_CONTROL);
        let module = get("/console/js/main.js", None).await;
        assert_eq!(module.headers()[header::CONTENT_TYPE], JS);
        assert_eq!(module.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let tag = module.headers()[header::ETAG].to_str().unwrap();
        let again = get("/console/js/main.js", Some(tag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        let changed = get("/console/js/main.js", Some("\"other\"")).await;
        assert_eq!(changed.status(), StatusCode::OK);
        let redirect = get("/console", None).await;
        assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
    }

    #[tokio::test]
    async fn only_compiled_in_files_are_served() {
        for path in [
            "/console/../Cargo.toml",
            "/console/js/../../src/lib.rs",
            "/console/nope.js",
            "/console/js/",
        ] {
            let response = get(path, None).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            assert!(
                response
                    .headers()
                    .contains_key(header::CONTENT_SECURITY_POLICY)
            );
        }
    }

    /// The page loads only its own modules and styles: no inline script or
    /// style that the policy would block (and that a reviewer would miss).
    #[test]
    fn the_page_has_no_inline_code() {
        let index = ASSETS
            .iter()
            .find(|a| a.path == "index.html")
            .map(|a| String::from_utf8_lossy(a.body).into_owned())
            .unwrap();
        assert!(index.contains(r#"<script type="module" src="js/main.js"></script>"#));
        assert_eq!(
            index.matches("<script").count(),
            1,
            "one script, no inline one"
        );
        for inline in [
            " style=",
            " onclick=",
            " onload=",
            " onsubmit=",
            "javascript:",
        ] {
            assert!(!index.contains(inline), "inline code: {inline}");
        }
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = String::from_utf8_lossy(asset.body);
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!text.contains(sink), "{} uses {sink}", asset.path);
            }
        }
    }
}
