//! The UI's session cookie: who logged in, signed with a key every replica reads from the
//! store (so any replica takes any session, and nothing about sessions is kept in memory),
//! and the CSRF token its forms carry.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use registry_core::StorageDriver;
use registry_core::layout;
use registry_core::storage::{PutCondition, StorageError};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::auth::policy::{IdentityKind, Subject};
use crate::auth::viewer::kind_named;

/// The cookie's name.
pub const COOKIE: &str = "berth_session";
/// How long a login lasts.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Cookies longer than this are refused by some browsers: a login that would need one fails.
pub const MAX_COOKIE: usize = 3800;

/// One visitor's session: who (anonymous until a login), a nonce its CSRF token is made
/// from, and when it ends.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who logged in.
    pub subject: Subject,
    /// Random, per session: a login or logout makes a new one, so old forms stop working.
    pub nonce: String,
    /// Unix seconds.
    pub expires: u64,
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<String>,
    k: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    g: Vec<String>,
    n: String,
    e: u64,
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// 122 random bits as 32 hex digits.
pub fn random_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Session {
    /// A new session for `subject`.
    pub fn new(subject: Subject) -> Session {
        Session {
            subject,
            nonce: random_hex(),
            expires: now() + LIFETIME.as_secs(),
        }
    }
}

/// Signs and checks session cookies and CSRF tokens.
#[derive(Clone)]
pub struct SessionKey {
    key: Arc<[u8]>,
}

impl SessionKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> SessionKey {
        SessionKey { key: bytes.into() }
    }

    /// The store's key, made by the first replica that needs one (a create-only write: the
    /// others read the winner's).
    pub async fn from_store(store: &Arc<dyn StorageDriver>) -> Result<SessionKey, StorageError> {
        let key = layout::ui_session_key();
        for _ in 0..3 {
            match store.read_small(&key).await {
                Ok((body, _)) if body.len() >= 32 => return Ok(SessionKey::from_bytes(&body)),
                Ok(_) | Err(StorageError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
            let fresh = format!("{}{}", random_hex(), random_hex());
            match store
                .put_bytes(&key, Bytes::from(fresh.clone()), PutCondition::CreateOnly)
                .await
            {
                Ok(_) => return Ok(SessionKey::from_bytes(fresh.as_bytes())),
                Err(StorageError::AlreadyExists(_) | StorageError::Precondition(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Err(StorageError::Backend("no session key could be read".into()))
    }

    fn mac(&self, purpose: &[u8], data: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC takes keys of any length");
        mac.update(purpose);
        mac.update(&[0]);
        mac.update(data);
        mac
    }

    /// `value` as JSON, signed for `purpose` (a cookie's value).
    pub fn sign<T: Serialize>(&self, purpose: &str, value: &T) -> String {
        let payload = B64.encode(serde_json::to_vec(value).unwrap_or_default());
        let tag = B64.encode(
            self.mac(purpose.as_bytes(), payload.as_bytes())
                .finalize()
                .into_bytes(),
        );
        format!("{payload}.{tag}")
    }

    /// What [`SessionKey::sign`] signed for `purpose`, if this key signed it.
    pub fn verify<T: serde::de::DeserializeOwned>(&self, purpose: &str, signed: &str) -> Option<T> {
        let (payload, tag) = signed.split_once('.')?;
        let tag = B64.decode(tag).ok()?;
        self.mac(purpose.as_bytes(), payload.as_bytes())
            .verify_slice(&tag)
            .ok()?;
        serde_json::from_slice(&B64.decode(payload).ok()?).ok()
    }

    /// The cookie value for `session`.
    pub fn seal(&self, session: &Session) -> String {
        let s = &session.subject;
        let sealed = Sealed {
            a: s.account.clone(),
            k: s.kind.name().to_owned(),
            c: s.claims.as_ref().map(|c| (**c).clone()),
            g: s.groups.clone(),
            n: session.nonce.clone(),
            e: session.expires,
        };
        self.sign("session", &sealed)
    }

    /// The session a cookie value holds, if this key signed it and it has not ended.
    pub fn open(&self, cookie: &str) -> Option<Session> {
        let sealed: Sealed = self.verify("session", cookie)?;
        if sealed.e <= now() {
            return None;
        }
        let kind = kind_named(&sealed.k)?;
        let subject = match (&sealed.a, kind) {
            (None, _) | (_, IdentityKind::Anonymous) => Subject::anonymous(),
            (Some(a), IdentityKind::Oidc) => {
                Subject::oidc(a, Arc::new(sealed.c.clone().unwrap_or_default()))
            }
            (Some(a), kind) => Subject::account(a, kind).with_groups(sealed.g.clone()),
        };
        Some(Session {
            subject,
            nonce: sealed.n,
            expires: sealed.e,
        })
    }

    /// The CSRF token of a session's forms.
    pub fn csrf(&self, session: &Session) -> String {
        B64.encode(
            self.mac(b"csrf", session.nonce.as_bytes())
                .finalize()
                .into_bytes(),
        )
    }

    /// Whether `token` is the session's CSRF token (compared in constant time).
    pub fn csrf_holds(&self, session: &Session, token: &str) -> bool {
        let Ok(given) = B64.decode(token) else {
            return false;
        };
        self.mac(b"csrf", session.nonce.as_bytes())
            .verify_slice(&given)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SessionKey {
        SessionKey::from_bytes(b"0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn a_sealed_session_opens_with_its_key_only() {
        let s = Session::new(Subject::account("alice", IdentityKind::Password));
        let cookie = key().seal(&s);
        let back = key().open(&cookie).expect("opens");
        assert_eq!(back.subject.account.as_deref(), Some("alice"));
        assert_eq!(back.subject.kind, IdentityKind::Password);
        assert_eq!(back.nonce, s.nonce);
        let other = SessionKey::from_bytes(b"another key of thirty-two bytes!");
        assert!(other.open(&cookie).is_none());
    }

    #[test]
    fn a_changed_cookie_is_refused() {
        let s = Session::new(Subject::account("alice", IdentityKind::Password));
        let cookie = key().seal(&s);
        let (payload, tag) = cookie.split_once('.').unwrap();
        // Claim another account with the old signature.
        let forged =
            serde_json::json!({"a": "admin", "k": "password", "n": s.nonce, "e": s.expires});
        let forged = B64.encode(forged.to_string());
        assert!(key().open(&format!("{forged}.{tag}")).is_none());
        assert!(key().open(payload).is_none());
        assert!(key().open(&format!("{payload}.")).is_none());
        // A value signed for another purpose is not a session.
        let other = key().sign(
            "oidc",
            &serde_json::json!({"k": "password", "a": "x", "n": "", "e": u64::MAX}),
        );
        assert!(key().open(&other).is_none());
        assert!(key().open("").is_none());
    }

    #[test]
    fn an_ended_session_is_refused() {
        let mut s = Session::new(Subject::anonymous());
        s.expires = now() - 1;
        assert!(key().open(&key().seal(&s)).is_none());
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let a = Session::new(Subject::anonymous());
        let b = Session::new(Subject::anonymous());
        let token = key().csrf(&a);
        assert!(key().csrf_holds(&a, &token));
        assert!(!key().csrf_holds(&b, &token));
        assert!(!key().csrf_holds(&a, ""));
        assert!(!key().csrf_holds(&a, "not base64 !"));
    }

    #[test]
    fn robot_groups_and_oidc_claims_survive_the_cookie() {
        let robot =
            Subject::account("ci", IdentityKind::Robot).with_groups(vec!["builders".into()]);
        let back = key().open(&key().seal(&Session::new(robot))).unwrap();
        assert_eq!(back.subject.groups, vec!["builders".to_string()]);
        let mut claims = serde_json::Map::new();
        claims.insert("groups".into(), serde_json::json!(["ops"]));
        let oidc = Subject::oidc("bob", Arc::new(claims));
        let back = key().open(&key().seal(&Session::new(oidc))).unwrap();
        assert_eq!(back.subject.kind, IdentityKind::Oidc);
        assert_eq!(back.subject.groups, vec!["ops".to_string()]);
    }
}
