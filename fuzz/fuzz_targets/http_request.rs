//! Whole HTTP requests against Berth's router (open registry, in-memory store, deletes on):
//! any method, path, headers and body. No request panics or gets a 5xx, and each response
//! ends. The input is the method's index, then lines: the path, headers as `name: value`, an
//! empty line, and the body.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const METHODS: [&str; 8] = [
    "GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "TRACE",
];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fn router() -> &'static axum::Router {
    static ROUTER: OnceLock<axum::Router> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let env = [
            ("REGISTRY_STORAGE".to_owned(), "inmemory".to_owned()),
            ("REGISTRY_LOG_LEVEL".to_owned(), "error".to_owned()),
        ];
        let (settings, _) =
            registry_server::config::load(registry_server::config::Source::Embedded, env)
                .expect("config");
        let app: Arc<registry_server::api::App> = runtime()
            .block_on(registry_server::serve::app(
                settings,
                registry_server::store_mode::Role::Command,
            ))
            .expect("app");
        // The web UI's pages too: they parse the same hostile paths and queries.
        let pages = registry_server::ui::routes(app.clone());
        registry_server::api::router(app, pages)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let method = METHODS[m as usize % METHODS.len()];
    let (head, body) = match rest.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&rest[..at], &rest[at + 2..]),
        None => (rest, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split('\n');
    let path = lines.next().unwrap_or("/");
    let mut req = axum::http::Request::builder().method(method).uri(path);
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            req = req.header(k.trim(), v.trim());
        }
    }
    // What hyper would refuse before Berth sees it is not Berth's to handle.
    let Ok(req) = req.body(axum::body::Body::from(body.to_vec())) else {
        return;
    };
    // Built (once) outside the runtime: building it blocks on the runtime itself.
    let router = router().clone();
    runtime().block_on(async {
        let resp = router.oneshot(req).await.expect("infallible");
        let status = resp.status();
        assert!(!status.is_server_error(), "{method} {path}: {status}");
        let body = axum::body::to_bytes(resp.into_body(), 64 << 20).await;
        assert!(body.is_ok(), "{method} {path}: the response body failed");
    });
});
