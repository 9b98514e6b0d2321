//! The pages' templates (under `templates/ui/`) and what each is given. askama escapes every
//! value for HTML; URLs are built (and their query strings encoded) in Rust.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// What every page's frame shows.
pub struct Chrome {
    /// Who is logged in (`None`: anonymous).
    pub account: Option<String>,
    /// Whether anyone can log in here.
    pub logins: bool,
    /// The session's CSRF token, for forms.
    pub csrf: String,
    /// This page's path and query (where a login returns to).
    pub here: String,
}

/// A page of text: an error, a refusal.
#[derive(Template)]
#[template(path = "ui/message.html")]
pub struct Message<'a> {
    pub chrome: &'a Chrome,
    pub title: &'a str,
    pub text: &'a str,
}

/// The last garbage collection, as the repositories page shows it.
pub struct CollectionLine {
    pub finished: String,
    pub freed: String,
    pub blobs: usize,
    pub manifests: usize,
}

/// The repositories page.
#[derive(Template)]
#[template(path = "ui/repositories.html")]
pub struct Repositories<'a> {
    pub chrome: &'a Chrome,
    pub q: &'a str,
    pub list_html: String,
    pub collection: Option<CollectionLine>,
}

/// The list part of the repositories page (also served alone, for filtering as one types).
#[derive(Template)]
#[template(path = "ui/repository_list.html")]
pub struct RepositoryList {
    pub names: Vec<String>,
    pub matched: usize,
    pub next: Option<String>,
    pub filtered: bool,
}

/// One tag's row.
pub struct TagRow {
    pub tag: String,
    pub digest: String,
    pub short_digest: String,
    pub size: String,
    pub platforms: String,
    pub created: String,
    pub pushed: String,
    pub pulled: String,
    pub inspect: String,
    pub pull_by_tag: String,
    pub pull_by_digest: String,
}

/// A link that sorts the tags.
pub struct SortLink {
    pub label: &'static str,
    pub href: String,
    pub current: bool,
}

/// The tags page of a repository.
#[derive(Template)]
#[template(path = "ui/tags.html")]
pub struct Tags<'a> {
    pub chrome: &'a Chrome,
    pub name: &'a str,
    pub rows: Vec<TagRow>,
    pub total: usize,
    pub sorts: Vec<SortLink>,
    pub previous: Option<String>,
    pub next: Option<String>,
    pub page: usize,
    pub pages: usize,
    pub may_delete: bool,
    pub delete_href: String,
    pub notice: Option<String>,
}

/// A layer's row.
pub struct LayerRow {
    pub digest: String,
    pub size: String,
    pub media_type: String,
}

/// A child of an index.
pub struct ChildRow {
    pub platform: String,
    pub digest: String,
    pub size: String,
    pub href: String,
}

/// A referrer's row.
pub struct ReferrerRow {
    pub digest: String,
    pub media_type: String,
    pub size: String,
    pub href: String,
    pub created: String,
}

/// Referrers of one artifact type.
pub struct ReferrerGroup {
    pub artifact_type: String,
    pub rows: Vec<ReferrerRow>,
}

/// The page of one manifest.
#[derive(Template)]
#[template(path = "ui/image.html")]
pub struct Image<'a> {
    pub chrome: &'a Chrome,
    pub name: &'a str,
    pub tag: Option<String>,
    pub digest: String,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub size: Option<String>,
    pub created: Option<String>,
    pub pull_by_tag: Option<String>,
    pub pull_by_digest: String,
    pub layers: Vec<LayerRow>,
    pub children: Vec<ChildRow>,
    pub config: Option<std::sync::Arc<super::facts::ConfigFacts>>,
    pub subject: Option<(String, String)>,
    pub referrers: Vec<ReferrerGroup>,
    pub annotations: Vec<(String, String)>,
    pub raw: String,
    pub may_delete: bool,
    pub delete_tag_href: Option<String>,
    pub delete_manifest_href: String,
    pub repository_href: String,
}

/// The confirmation before a deletion.
#[derive(Template)]
#[template(path = "ui/confirm_delete.html")]
pub struct ConfirmDelete<'a> {
    pub chrome: &'a Chrome,
    pub name: &'a str,
    pub reference: &'a str,
    pub is_tag: bool,
    pub action: String,
    pub back: String,
}

/// The login form.
#[derive(Template)]
#[template(path = "ui/login.html")]
pub struct Login<'a> {
    pub chrome: &'a Chrome,
    pub next: &'a str,
    pub user: &'a str,
    pub error: Option<&'a str>,
    pub oidc_label: Option<&'a str>,
}

/// A rendered page with `status`.
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, [("content-type", "text/html; charset=utf-8")], html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a UI page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "page failed to render").into_response()
        }
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM UTC`.
pub fn utc_time(secs: u64) -> String {
    crate::civil_time::CivilTime::of_unix(secs).to_minute()
}

/// An RFC 3339 time from an image config, shortened to the minute.
pub fn config_time(text: &str) -> String {
    match (text.get(..10), text.get(11..16)) {
        (Some(date), Some(time)) if text.ends_with('Z') => format!("{date} {time} UTC"),
        (Some(date), Some(time)) => format!("{date} {time}"),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_calendar_dates() {
        assert_eq!(utc_time(1_796_169_600 + 3_723), "2026-12-02 01:02 UTC");
        assert_eq!(
            config_time("2026-01-02T03:04:05.123Z"),
            "2026-01-02 03:04 UTC"
        );
        assert_eq!(config_time("odd"), "odd");
    }

    #[test]
    fn values_are_escaped() {
        let chrome = Chrome {
            account: Some("<script>".into()),
            logins: true,
            csrf: "t\"x".into(),
            here: "/ui/".into(),
        };
        let page = Message {
            chrome: &chrome,
            title: "<b>",
            text: "a & b",
        };
        let html = page.render().unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<b>"));
        assert!(!html.contains("a & b"));
        assert!(!html.contains("t\"x"));
    }
}
