//! Logging in and out of the UI with the credentials the API takes (htpasswd passwords,
//! robot tokens, OIDC ID tokens), through the same throttled gate.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::Ui;
use super::session::MAX_COOKIE;
use super::templates::{Login, render};
use super::visit::{Visit, get, query_of};
use crate::auth::AuthError;
use crate::auth::policy::Subject;

/// Where to go after a login: a UI page of this site, never another site.
pub(super) fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.contains("//") && !n.contains('\\') => n,
        _ => "/ui/",
    }
}

pub(super) async fn form(State(ui): State<Arc<Ui>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let visit = match Visit::of(&ui, &parts).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    if !ui.app.settings.auth.has_logins() {
        return visit.message(
            StatusCode::NOT_FOUND,
            "No logins here",
            "This registry has no accounts: everyone sees everything it serves.",
        );
    }
    let q = query_of(&parts);
    let page = Login {
        chrome: &visit.chrome,
        next: safe_next(get(&q, "next")),
        user: "",
        error: None,
        oidc_label: ui.app.settings.ui_oidc.as_ref().map(|o| o.label.as_str()),
    };
    visit.respond(render(StatusCode::OK, &page))
}

pub(super) async fn submit(State(ui): State<Arc<Ui>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let (mut visit, form) = match Visit::posted(&ui, &parts, body).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let user = get(&form, "username").unwrap_or("");
    let password = get(&form, "password").unwrap_or("");
    let next = safe_next(get(&form, "next")).to_owned();
    let app = &ui.app;
    let origin = crate::api::origin_of(app, &parts);
    let outcome = app
        .settings
        .auth
        .browser_login(user, password, origin, &app.metrics)
        .await;
    let refused = |visit: &Visit, status: StatusCode, error: &str| {
        let page = Login {
            chrome: &visit.chrome,
            next: &next,
            user,
            error: Some(error),
            oidc_label: ui.app.settings.ui_oidc.as_ref().map(|o| o.label.as_str()),
        };
        visit.respond(render(status, &page))
    };
    match outcome {
        Ok(subject) => {
            visit.restart(subject);
            if visit.sealed().len() > MAX_COOKIE {
                visit.restart(Subject::anonymous());
                return refused(
                    &visit,
                    StatusCode::BAD_REQUEST,
                    "This identity carries too many claims for a browser session.",
                );
            }
            visit.respond(Redirect::to(&next).into_response())
        }
        Err(AuthError::Throttled { retry_after }) => {
            let mut resp = refused(
                &visit,
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed logins: try again later.",
            );
            if let Ok(v) = retry_after.to_string().parse() {
                resp.headers_mut().insert("retry-after", v);
            }
            resp
        }
        Err(AuthError::Busy) => refused(
            &visit,
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many logins at once: try again in a moment.",
        ),
        Err(AuthError::NoIssuer) => refused(
            &visit,
            StatusCode::NOT_FOUND,
            "Accounts are not checked here: log in through your token service.",
        ),
        Err(_) => refused(
            &visit,
            StatusCode::UNAUTHORIZED,
            "Invalid user name or password.",
        ),
    }
}

pub(super) async fn logout(State(ui): State<Arc<Ui>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let (mut visit, _) = match Visit::posted(&ui, &parts, body).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    visit.restart(Subject::anonymous());
    visit.respond(Redirect::to("/ui/").into_response())
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn logins_return_to_this_site_only() {
        assert_eq!(safe_next(Some("/ui/repo/a")), "/ui/repo/a");
        assert_eq!(safe_next(Some("https://evil.example/")), "/ui/");
        assert_eq!(safe_next(Some("/ui//evil.example")), "/ui/");
        assert_eq!(safe_next(Some("/ui/\\evil")), "/ui/");
        assert_eq!(safe_next(Some("/v2/")), "/ui/");
        assert_eq!(safe_next(None), "/ui/");
    }
}
