//! Logging in with an OpenID provider in the browser: the authorization code flow with PKCE.
//! What the login began with (state, nonce, PKCE verifier, where to return) travels in a
//! short-lived signed cookie, so that whichever replica the provider sends the browser back to
//! can finish it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::Ui;
use super::login::safe_next;
use super::session::{MAX_COOKIE, now, random_hex};
use super::visit::{Visit, cookie_of, get, query_of, registry_host};
use crate::auth::oidc::CodeRedemption;
use crate::auth::policy::Subject;
use crate::config::UiOidcSettings;

/// The cookie that carries a login under way.
const PENDING: &str = "berth_oidc";
/// How long a person has at the provider.
const PENDING_FOR: u64 = 600;
/// The callback's path.
const CALLBACK: &str = "/ui/login/oidc/callback";

/// A login under way.
#[derive(Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
    next: String,
    redirect: String,
    expires: u64,
}

fn pending_cookie(value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    // Lax: the provider's redirect back is a top-level navigation from another site.
    HeaderValue::from_str(&format!(
        "{PENDING}={value}; Path=/ui/login/oidc; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The PKCE S256 challenge of a verifier.
fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
}

fn redirect_uri(ui: &Ui, parts: &Parts, o: &UiOidcSettings, secure: bool) -> String {
    if let Some(r) = &o.redirect_url {
        return r.clone();
    }
    if let Some(h) = &ui.app.settings.host {
        return format!("{h}{CALLBACK}");
    }
    let scheme = if secure { "https" } else { "http" };
    format!("{scheme}://{}{CALLBACK}", registry_host(&ui.app, parts))
}

fn settings(ui: &Ui) -> Option<&UiOidcSettings> {
    ui.app.settings.ui_oidc.as_ref()
}

pub(super) async fn start(State(ui): State<Arc<Ui>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let visit = match Visit::of(&ui, &parts).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let (Some(o), Some(issuers)) = (settings(&ui), ui.app.settings.auth.oidc.as_ref()) else {
        return visit.message(
            StatusCode::NOT_FOUND,
            "No OpenID login",
            "This registry logs no one in with an OpenID provider.",
        );
    };
    let endpoints = match issuers.login_endpoints(&o.issuer).await {
        Ok(e) => e,
        Err(why) => {
            tracing::warn!(issuer = %o.issuer, reason = %why, "the OpenID provider could not be asked");
            return visit.message(
                StatusCode::BAD_GATEWAY,
                "Provider unavailable",
                "The OpenID provider could not be reached. Try again in a moment.",
            );
        }
    };
    let secure = visit.secure();
    let pending = Pending {
        state: random_hex(),
        nonce: random_hex(),
        verifier: format!("{}{}", random_hex(), random_hex()),
        next: safe_next(get(&query_of(&parts), "next")).to_owned(),
        redirect: redirect_uri(&ui, &parts, o, secure),
        expires: now() + PENDING_FOR,
    };
    let scope = o.scopes.join(" ");
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &o.client_id)
        .append_pair("redirect_uri", &pending.redirect)
        .append_pair("scope", &scope)
        .append_pair("state", &pending.state)
        .append_pair("nonce", &pending.nonce)
        .append_pair("code_challenge", &challenge(&pending.verifier))
        .append_pair("code_challenge_method", "S256")
        .finish();
    let sep = if endpoints.authorization.contains('?') {
        '&'
    } else {
        '?'
    };
    let mut resp =
        Redirect::to(&format!("{}{sep}{query}", endpoints.authorization)).into_response();
    let signed = visit.key().sign("oidc", &pending);
    resp.headers_mut()
        .append("set-cookie", pending_cookie(&signed, PENDING_FOR, secure));
    visit.respond(resp)
}

pub(super) async fn callback(State(ui): State<Arc<Ui>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let mut visit = match Visit::of(&ui, &parts).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let mut resp = finish(&ui, &parts, &mut visit).await;
    // A login's cookie serves one answer, whatever it was.
    resp.headers_mut()
        .append("set-cookie", pending_cookie("", 0, visit.secure()));
    resp
}

async fn finish(ui: &Arc<Ui>, parts: &Parts, visit: &mut Visit) -> Response {
    let (Some(o), Some(issuers)) = (settings(ui), ui.app.settings.auth.oidc.as_ref()) else {
        return visit.message(
            StatusCode::NOT_FOUND,
            "No OpenID login",
            "This registry logs no one in with an OpenID provider.",
        );
    };
    let q = query_of(parts);
    let pending: Option<Pending> = cookie_of(parts, PENDING)
        .and_then(|c| visit.key().verify("oidc", c))
        .filter(|p: &Pending| p.expires > now());
    let Some(pending) = pending else {
        return visit.message(
            StatusCode::BAD_REQUEST,
            "Login expired",
            "This login has expired or was not started here. Log in again.",
        );
    };
    if let Some(error) = get(&q, "error") {
        return visit.message(
            StatusCode::UNAUTHORIZED,
            "Not logged in",
            &format!("The OpenID provider did not log you in ({error})."),
        );
    }
    let (Some(code), Some(state)) = (get(&q, "code"), get(&q, "state")) else {
        return visit.message(
            StatusCode::BAD_REQUEST,
            "Login failed",
            "The provider sent no code.",
        );
    };
    // The state ties the answer to the login this browser began (no login CSRF).
    if state != pending.state {
        return visit.message(
            StatusCode::BAD_REQUEST,
            "Login failed",
            "This answer belongs to another login.",
        );
    }
    let redemption = CodeRedemption {
        issuer: &o.issuer,
        code,
        redirect_uri: &pending.redirect,
        client_id: &o.client_id,
        client_secret: o.client_secret.as_deref(),
        verifier: &pending.verifier,
        nonce: &pending.nonce,
    };
    let app = &ui.app;
    let origin = crate::api::origin_of(app, parts);
    // Through the login gate: each try costs the provider a request. Counted per client only
    // (the state names no account).
    let outcome = app
        .settings
        .auth
        .logins
        .gate(&pending.state, "oidc", origin, &app.metrics, async {
            issuers.redeem(&redemption).await.map_err(|why| {
                tracing::info!(reason = %why, "a browser OIDC login was refused");
                crate::auth::logins::LoginRefused::Invalid
            })
        })
        .await;
    let Ok(id) = outcome else {
        return visit.message(
            StatusCode::UNAUTHORIZED,
            "Not logged in",
            "The OpenID provider's answer could not be verified. Log in again.",
        );
    };
    visit.restart(Subject::oidc(&id.account, id.claims));
    if visit.sealed().len() > MAX_COOKIE {
        visit.restart(Subject::anonymous());
        return visit.message(
            StatusCode::BAD_REQUEST,
            "Not logged in",
            "This identity carries too many claims for a browser session.",
        );
    }
    visit.respond(Redirect::to(&pending.next).into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn pkce_challenges_are_s256() {
        // RFC 7636 section 4.2: BASE64URL(SHA256(verifier)), without padding.
        assert_eq!(
            super::challenge("abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
    }
}
