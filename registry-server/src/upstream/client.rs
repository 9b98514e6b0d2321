//! Requests to one upstream registry, answering its authentication challenges.
//!
//! Tokens are kept per scope until shortly before they expire: an optimisation only, each
//! replica fetches its own, so nothing here needs sharing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};

use std::sync::Arc;

use super::UpstreamError;
use super::challenge::Challenge;
use super::reach::{Reach, ReachResolver, redirect_policy};
use crate::config::UpstreamSettings;

/// How long a token is used when its issuer does not say (the distribution token spec's 60 s).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// Largest token answer read from a realm (a JWT is a few KiB).
const MAX_TOKEN_ANSWER_BYTES: usize = 64 << 10;

/// One request to an upstream (or downstream) registry.
pub(crate) struct Request<'a> {
    /// The method.
    pub(crate) method: Method,
    /// A path starting `/v2/`, or an absolute URL the registry gave.
    pub(crate) target: &'a str,
    /// The repository, for the token's scope.
    pub(crate) repository: &'a str,
    /// The actions asked of it: `pull`, or `pull,push`.
    pub(crate) actions: &'a str,
    /// The Accept header.
    pub(crate) accept: Option<&'a str>,
    /// Other headers.
    pub(crate) headers: &'a [(&'a str, &'a str)],
    /// A body that can be sent again after a challenge.
    pub(crate) body: Option<bytes::Bytes>,
}

/// A client of one upstream registry.
pub(crate) struct UpstreamClient {
    settings: UpstreamSettings,
    http: reqwest::Client,
    reach: Arc<Reach>,
    /// Bearer tokens by scope, with the instant they stop being used.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    /// Whether the upstream asked for Basic credentials (then they go with every request).
    basic: std::sync::atomic::AtomicBool,
}

impl UpstreamClient {
    /// A client for `settings`, as the pull-through cache.
    pub(crate) fn new(settings: UpstreamSettings) -> Result<Self, UpstreamError> {
        Self::for_purpose(settings, "pull-through cache")
    }

    /// A client for `settings`, saying in its User-Agent what it does there.
    pub(crate) fn for_purpose(
        settings: UpstreamSettings,
        purpose: &str,
    ) -> Result<Self, UpstreamError> {
        let reach = Reach::new(&settings.url, &settings.trusted);
        let http = reqwest::Client::builder()
            .redirect(redirect_policy(reach.clone()))
            .dns_resolver(Arc::new(ReachResolver(reach.clone())))
            .connect_timeout(Duration::from_secs(10))
            // Between two reads of a body, not for the whole of a multi-GiB layer.
            .read_timeout(Duration::from_secs(60))
            .user_agent(format!("berth/{} ({purpose})", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        Ok(UpstreamClient {
            settings,
            http,
            reach,
            tokens: Mutex::new(HashMap::new()),
            basic: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The upstream's origin, for messages.
    pub(crate) fn origin(&self) -> &url::Url {
        &self.settings.url
    }

    /// Sends `method` to `path` (starting `/v2/`) for `repository` at the upstream, with
    /// `accept` and extra `headers`, authenticating as the upstream asks. Redirects (to blob
    /// storage) are followed; credentials are not sent to another host.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        repository: &str,
        accept: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Response, UpstreamError> {
        self.request(Request {
            method,
            target: path,
            repository,
            actions: "pull",
            accept,
            headers,
            body: None,
        })
        .await
    }

    /// Sends `r`, answering an authentication challenge once (for the actions it asks).
    pub(crate) async fn request(&self, r: Request<'_>) -> Result<Response, UpstreamError> {
        let span = self.span(&r);
        tracing::Instrument::instrument(self.request_now(r), span).await
    }

    /// A span of the trace for a call to this registry.
    fn span(&self, r: &Request<'_>) -> tracing::Span {
        tracing::info_span!(
            target: crate::observe::trace_export::TRACE_TARGET,
            "upstream",
            otel.name = %format!("{} {}", r.method, self.origin().host_str().unwrap_or("")),
            otel.kind = "client",
            http.request.method = %r.method,
            server.address = self.origin().host_str().unwrap_or(""),
            repository = r.repository,
        )
    }

    async fn request_now(&self, r: Request<'_>) -> Result<Response, UpstreamError> {
        let url = self.url_of(r.target)?;
        let scope = format!("repository:{}:{}", r.repository, r.actions);
        let mut fresh_auth = false;
        loop {
            let mut req = self.authorized(r.method.clone(), url.clone(), &scope, &r);
            if let Some(b) = &r.body {
                req = req.body(b.clone());
            }
            let resp = req.send().await.map_err(unreachable)?;
            if resp.status() != StatusCode::UNAUTHORIZED || fresh_auth {
                return self.judged(resp);
            }
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(Challenge::parse)
                .ok_or_else(|| UpstreamError::Refused(self.origin().to_string()))?;
            self.answer(challenge, &scope).await?;
            fresh_auth = true;
        }
    }

    /// Sends `r` with a streamed `body` of `len` bytes, which cannot be sent twice: the
    /// credentials are those an earlier request of the same actions got (a push starts an
    /// upload before it sends the bytes), and a challenge now is a refusal.
    pub(crate) async fn request_streaming(
        &self,
        r: Request<'_>,
        body: reqwest::Body,
        len: u64,
    ) -> Result<Response, UpstreamError> {
        let url = self.url_of(r.target)?;
        let scope = format!("repository:{}:{}", r.repository, r.actions);
        let span = self.span(&r);
        let send = span.in_scope(|| {
            self.authorized(r.method.clone(), url, &scope, &r)
                .header(reqwest::header::CONTENT_LENGTH, len)
                .body(body)
                .send()
        });
        let resp = tracing::Instrument::instrument(send, span)
            .await
            .map_err(unreachable)?;
        self.judged(resp)
    }

    /// A path under the upstream, or an absolute URL it gave (an upload's Location), which
    /// must be somewhere its requests may go.
    fn url_of(&self, target: &str) -> Result<url::Url, UpstreamError> {
        let url = self
            .settings
            .url
            .join(target)
            .map_err(|e| UpstreamError::BadAnswer(format!("{target:?}: {e}")))?;
        self.reach.check(&url).map_err(|why| {
            UpstreamError::BadAnswer(format!("{} refused: {why}", redacted(url.as_str())))
        })?;
        Ok(url)
    }

    fn authorized(
        &self,
        method: Method,
        url: url::Url,
        scope: &str,
        r: &Request<'_>,
    ) -> reqwest::RequestBuilder {
        let same_origin = url.origin() == self.settings.url.origin();
        // The trace goes on at the other registry (a no-op without trace export).
        let mut req = self
            .http
            .request(method, url)
            .headers(crate::observe::trace_export::trace_headers());
        if let Some(a) = r.accept {
            req = req.header(ACCEPT, a);
        }
        for (k, v) in r.headers {
            req = req.header(*k, *v);
        }
        if !same_origin {
            return req;
        }
        if let Some(token) = self.token(scope) {
            req.bearer_auth(token)
        } else if let Some((user, password)) = self.basic_credentials() {
            req.basic_auth(user, Some(password))
        } else {
            req
        }
    }

    fn judged(&self, resp: Response) -> Result<Response, UpstreamError> {
        match resp.status() {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(UpstreamError::Refused(self.origin().to_string()))
            }
            StatusCode::TOO_MANY_REQUESTS => {
                Err(UpstreamError::RateLimited(self.origin().to_string()))
            }
            _ => Ok(resp),
        }
    }

    /// The digest `tag` of `repository` names there (a HEAD, asking for `actions`); `None`
    /// when there is no such tag, or the registry did not say.
    pub(crate) async fn tag_digest(
        &self,
        repository: &str,
        tag: &str,
        actions: &str,
    ) -> Result<Option<registry_core::Digest>, UpstreamError> {
        let resp = self
            .request(Request {
                method: Method::HEAD,
                target: &format!("/v2/{repository}/manifests/{tag}"),
                repository,
                actions,
                accept: Some(registry_core::manifest::ACCEPT_ALL),
                headers: &[],
                body: None,
            })
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())),
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_server_error() => Err(UpstreamError::Unreachable(format!(
                "{} answered {s} to a HEAD of a tag",
                self.origin()
            ))),
            s => Err(UpstreamError::BadAnswer(format!("{s} to a HEAD of a tag"))),
        }
    }

    /// Every tag of `repository` there, following its pages (a registry that keeps naming
    /// further pages is stopped after a thousand); none when it has no such repository.
    pub(crate) async fn all_tags(&self, repository: &str) -> Result<Vec<String>, UpstreamError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let mut out = Vec::new();
        let mut next = Some(format!("/v2/{repository}/tags/list?n=1000"));
        for _ in 0..1000 {
            let Some(target) = next.take() else { break };
            let resp = self
                .request(Request {
                    method: Method::GET,
                    target: &target,
                    repository,
                    actions: "pull",
                    accept: None,
                    headers: &[],
                    body: None,
                })
                .await?;
            match resp.status() {
                StatusCode::NOT_FOUND => break,
                s if s.is_server_error() => {
                    return Err(UpstreamError::Unreachable(format!(
                        "{} answered {s} to a tag listing",
                        self.origin()
                    )));
                }
                s if !s.is_success() => {
                    return Err(UpstreamError::BadAnswer(format!("{s} to a tag listing")));
                }
                _ => {}
            }
            next = resp
                .headers()
                .get("link")
                .and_then(|v| v.to_str().ok())
                .and_then(|l| l.split('<').nth(1)?.split('>').next().map(str::to_owned));
            let body = read_at_most(resp, 16 << 20).await?;
            let list: TagList = serde_json::from_slice(&body)
                .map_err(|e| UpstreamError::BadAnswer(format!("a tag listing: {e}")))?;
            out.extend(list.tags.unwrap_or_default());
        }
        Ok(out)
    }

    fn token(&self, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().ok()?;
        let (token, until) = tokens.get(scope)?;
        (Instant::now() < *until).then(|| token.clone())
    }

    fn basic_credentials(&self) -> Option<&(String, String)> {
        self.basic
            .load(std::sync::atomic::Ordering::Relaxed)
            .then_some(self.settings.credentials.as_ref())
            .flatten()
    }

    /// Gets what a challenge asks for: Basic credentials, or a token from the realm.
    async fn answer(&self, challenge: Challenge, scope: &str) -> Result<(), UpstreamError> {
        let (realm, service, asked_scope) = match challenge {
            Challenge::Basic => {
                if self.settings.credentials.is_none() {
                    return Err(UpstreamError::Refused(self.origin().to_string()));
                }
                self.basic.store(true, std::sync::atomic::Ordering::Relaxed);
                return Ok(());
            }
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => (realm, service, scope),
        };
        let realm_url = url::Url::parse(&realm).map_err(|e| {
            UpstreamError::BadAnswer(format!("token realm {:?}: {e}", redacted(&realm)))
        })?;
        self.reach.check(&realm_url).map_err(|why| {
            UpstreamError::BadAnswer(format!("token realm {} refused: {why}", redacted(&realm)))
        })?;
        let mut req = self
            .http
            .get(realm_url.clone())
            .query(&[("scope", asked_scope.as_deref().unwrap_or(scope))]);
        if let Some(s) = &service {
            req = req.query(&[("service", s)]);
        }
        // A password goes only where nobody on the way can read it, or to the upstream itself.
        let same_origin = realm_url.origin() == self.settings.url.origin();
        if let Some((user, password)) = &self.settings.credentials {
            if realm_url.scheme() == "https" || same_origin {
                req = req.basic_auth(user, Some(password));
            } else {
                tracing::warn!(realm = %redacted(&realm), upstream = %self.origin(), "the upstream's token realm is plain http on another origin: asking it anonymously, without the configured credentials");
            }
        }
        let resp = req.send().await.map_err(unreachable)?;
        if !resp.status().is_success() {
            return Err(UpstreamError::Refused(self.origin().to_string()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_TOKEN_ANSWER_BYTES as u64)
        {
            return Err(UpstreamError::BadAnswer(format!(
                "token endpoint {}: an answer over {MAX_TOKEN_ANSWER_BYTES} bytes",
                redacted(&realm)
            )));
        }
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let body = resp.bytes().await.map_err(unreachable)?;
        let realm = redacted(&realm);
        if body.len() > MAX_TOKEN_ANSWER_BYTES {
            return Err(UpstreamError::BadAnswer(format!(
                "token endpoint {realm}: an answer over {MAX_TOKEN_ANSWER_BYTES} bytes"
            )));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| UpstreamError::BadAnswer(format!("token endpoint {realm}: {e}")))?;
        let token = answer
            .token
            .or(answer.access_token)
            .ok_or_else(|| UpstreamError::BadAnswer(format!("token endpoint {realm}: no token")))?;
        let lifetime = answer
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        // Renewed a little early, so that a token does not expire between use and arrival.
        let until = Instant::now() + lifetime.mul_f32(0.9);
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.retain(|_, (_, u)| Instant::now() < *u);
            tokens.insert(scope.to_owned(), (token, until));
        }
        Ok(())
    }
}

/// A body, refused once it passes `limit` bytes (whatever Content-Length said).
pub(crate) async fn read_at_most(
    resp: reqwest::Response,
    limit: usize,
) -> Result<bytes::Bytes, UpstreamError> {
    let too_large = || UpstreamError::BadAnswer(format!("an answer larger than {limit} bytes"));
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = bytes::BytesMut::new();
    let mut stream = futures::StreamExt::fuse(resp.bytes_stream());
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        let chunk = chunk.map_err(unreachable)?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A URL as it may be logged: without any account or password written into it.
pub(crate) fn redacted(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// The error with its causes (and without credentials in the URL it names): reqwest's own message ("error sending request") hides whether it
/// was DNS, a refused connection or a certificate, which is what an operator needs.
pub(crate) fn unreachable(e: reqwest::Error) -> UpstreamError {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    UpstreamError::Unreachable(text)
}
