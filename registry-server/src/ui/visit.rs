//! One page request: the visitor's session (a fresh anonymous one when the cookie is missing,
//! ended or not ours), what they may do, and what every page's frame shows.

use std::sync::Arc;

use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::Ui;
use super::session::{COOKIE, Session, SessionKey};
use super::templates::{Chrome, Message, render};
use crate::auth::policy::Subject;
use crate::auth::viewer::Viewer;

/// A page request and who makes it.
pub(crate) struct Visit {
    /// The session (possibly new).
    pub session: Session,
    /// What the session's identity may do.
    pub viewer: Viewer,
    /// What the frame of every page shows.
    pub chrome: Chrome,
    key: SessionKey,
    set_cookie: bool,
    secure: bool,
}

/// The value of cookie `name`, if the request carries it.
pub(crate) fn cookie_of<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl Visit {
    /// The visit of a request, or the error page when the session key cannot be read.
    pub async fn of(ui: &Arc<Ui>, parts: &Parts) -> Result<Visit, Response> {
        let store = ui.app.registry.store().clone();
        let key = ui
            .key
            .get_or_try_init(|| async { SessionKey::from_store(&store).await })
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "the UI's session key could not be read");
                unavailable()
            })?
            .clone();
        let found = cookie_of(parts, COOKIE).and_then(|c| key.open(c));
        let set_cookie = found.is_none();
        let session = found.unwrap_or_else(|| Session::new(Subject::anonymous()));
        let auth = &ui.app.settings.auth;
        let viewer = auth.viewer(session.subject.clone()).await;
        let secure = ui.app.settings.tls.is_some()
            || parts
                .headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|p| p.eq_ignore_ascii_case("https"));
        let chrome = Chrome {
            account: viewer.account().map(str::to_owned),
            logins: auth.has_logins(),
            csrf: key.csrf(&session),
            here: parts
                .uri
                .path_and_query()
                .map_or("/ui/".into(), |p| p.as_str().to_owned()),
        };
        Ok(Visit {
            session,
            viewer,
            chrome,
            key,
            set_cookie,
            secure,
        })
    }

    /// Starts a new session for `subject` (a login, or a logout to anonymous): a new nonce,
    /// so forms of the old session stop working.
    pub fn restart(&mut self, subject: Subject) {
        self.session = Session::new(subject);
        self.chrome.csrf = self.key.csrf(&self.session);
        self.set_cookie = true;
    }

    /// The cookie value the session would have (to check its length before a login).
    pub fn sealed(&self) -> String {
        self.key.seal(&self.session)
    }

    /// Whether a form post carries this session's CSRF token and comes from a page of this
    /// origin (the browser's `Sec-Fetch-Site` or `Origin`, where it sends them).
    fn form_is_ours(&self, parts: &Parts, token: &str) -> bool {
        let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok());
        if let Some(site) = header("sec-fetch-site")
            && site != "same-origin"
        {
            return false;
        }
        // Behind a proxy that rewrites Host, the browser's origin is the one the proxy names
        // (a cross-site form cannot set that header; the token is checked besides).
        if let Some(origin) = header("origin") {
            let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
            // HTTP/2 names the host in the URI's authority rather than a Host header.
            let names: Vec<&str> = [
                header("host"),
                header("x-forwarded-host"),
                parts.uri.authority().map(|a| a.as_str()),
            ]
            .into_iter()
            .flatten()
            .collect();
            if !names.is_empty() && !names.contains(&origin_host) {
                return false;
            }
        }
        self.key.csrf_holds(&self.session, token)
    }

    /// The visit of a form post and the form's fields, or the page refusing a form that could
    /// not be read or did not come from this session's pages.
    pub async fn posted(
        ui: &Arc<Ui>,
        parts: &Parts,
        body: axum::body::Body,
    ) -> Result<(Visit, Vec<(String, String)>), Response> {
        let visit = Visit::of(ui, parts).await?;
        let Some(form) = read_form(body).await else {
            return Err(visit.message(
                StatusCode::BAD_REQUEST,
                "Bad form",
                "The form could not be read.",
            ));
        };
        if !visit.form_is_ours(parts, get(&form, "csrf").unwrap_or("")) {
            return Err(visit.message(
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form has expired or did not come from this site. Go back, reload the page and try again.",
            ));
        }
        Ok((visit, form))
    }

    /// The key that signs this site's cookies.
    pub fn key(&self) -> &SessionKey {
        &self.key
    }

    /// Whether the page was reached over HTTPS (its cookies are then `Secure`).
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// `resp` with the session cookie, when it is new.
    pub fn respond(&self, mut resp: Response) -> Response {
        if self.set_cookie {
            let secure = if self.secure { "; Secure" } else { "" };
            let value = format!(
                "{COOKIE}={}; Path=/ui; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
                self.key.seal(&self.session),
                super::session::LIFETIME.as_secs()
            );
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().append("set-cookie", v);
            }
        }
        resp
    }

    /// The page for a store that failed (`what` the page was reading, for the log): 503.
    pub fn unavailable(&self, what: &str, e: &dyn std::fmt::Display) -> Response {
        tracing::warn!(error = %e, "{what} could not be read for a page");
        self.message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Storage unavailable",
            "The registry's storage is not answering. Try again in a moment.",
        )
    }

    /// A page saying `text`, with `status`.
    pub fn message(&self, status: StatusCode, title: &str, text: &str) -> Response {
        let page = Message {
            chrome: &self.chrome,
            title,
            text,
        };
        self.respond(render(status, &page))
    }
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [("retry-after", "5")],
        "the registry's storage is not answering: try again in a moment",
    )
        .into_response()
}

/// The largest form body read.
const MAX_FORM: usize = 16 << 10;

/// The fields of a posted form.
async fn read_form(body: axum::body::Body) -> Option<Vec<(String, String)>> {
    let bytes = axum::body::to_bytes(body, MAX_FORM).await.ok()?;
    Some(url::form_urlencoded::parse(&bytes).into_owned().collect())
}

/// A request's query parameters, in order.
pub(crate) fn query_of(parts: &Parts) -> Vec<(String, String)> {
    url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// The first value of `key`.
pub(crate) fn get<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Where pull commands say the registry is: `http.host` when configured, else the Host the
/// browser used (when it is a plain authority).
pub(crate) fn registry_host(app: &crate::api::App, parts: &Parts) -> String {
    if let Some(h) = &app.settings.host {
        return h
            .split_once("://")
            .map_or(h.as_str(), |(_, rest)| rest)
            .trim_end_matches('/')
            .to_owned();
    }
    parts
        .headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .filter(|h| crate::auth::valid_authority(h))
        .unwrap_or("localhost:5000")
        .to_owned()
}
