//! How an upload session is named in its URLs: its id, and whether nothing of it is stored yet.
//!
//! On object stores a session's start writes nothing (its first chunk writes the state), so
//! the URL the start gives must tell the next request not to look for a state. It says so in
//! the id itself, not in a query parameter, so that a client or script that appends
//! `?digest=` to the Location by hand still works: the start answers the session's UUID with
//! its version nibble set to 8 (RFC 9562's "custom" version), and every later answer the
//! UUID itself, a random (version 4) one. Forging the mark gains nothing: a request that
//! carries it only ever creates a session's state, never overwrites one.
//!
//! On object stores a chunk's answer also names the state it left: `<uuid>.<tag>`, the tag
//! (8 hex digits) under which the answering replica keeps that state in memory, so that the
//! session's next request, if it comes back there, reads nothing. A tag this replica did not
//! give, or gave for an older state, only means the state is read from the store.

use registry_core::RegistryError;
use registry_core::upload::session::parse_upload_id;

/// A session as a request's URL names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UploadRef {
    /// The session's id (where its state is stored).
    pub id: String,
    /// The URL is the one the session's start gave while nothing of it was stored.
    pub fresh: bool,
    /// The tag of the state the last answer's replica kept.
    pub tag: Option<u32>,
}

/// The version a fresh session's URL carries in its id.
const FRESH_VERSION: u8 = 8;
/// The version of session ids.
const ID_VERSION: u8 = 4;

fn with_version(id: &uuid::Uuid, version: u8) -> uuid::Uuid {
    let mut bytes = *id.as_bytes();
    bytes[6] = (bytes[6] & 0x0f) | (version << 4);
    uuid::Uuid::from_bytes(bytes)
}

impl UploadRef {
    /// Parses the id segment of an upload URL.
    pub(crate) fn parse(segment: &str) -> Result<UploadRef, RegistryError> {
        let (segment, tag) = match segment.split_once('.') {
            Some((id, tag)) if tag.len() == 8 => (
                id,
                Some(u32::from_str_radix(tag, 16).map_err(|_| RegistryError::BlobUploadUnknown)?),
            ),
            Some(_) => return Err(RegistryError::BlobUploadUnknown),
            None => (segment, None),
        };
        let id = parse_upload_id(segment)?;
        let uuid = uuid::Uuid::try_parse(&id).map_err(|_| RegistryError::BlobUploadUnknown)?;
        if uuid.get_version_num() == FRESH_VERSION as usize {
            return Ok(UploadRef {
                id: with_version(&uuid, ID_VERSION).hyphenated().to_string(),
                fresh: true,
                tag: None,
            });
        }
        Ok(UploadRef {
            id,
            fresh: false,
            tag,
        })
    }

    /// What the session's code needs of it.
    pub(crate) fn url(&self) -> registry_core::upload::session::SessionUrl {
        registry_core::upload::session::SessionUrl {
            fresh: self.fresh,
            tag: self.tag,
        }
    }

    /// The id segment, with a state's tag when there is one.
    pub(crate) fn tagged_segment(id: &str, fresh: bool, tag: Option<u32>) -> String {
        match tag {
            Some(t) if !fresh => format!("{}.{t:08x}", Self::segment(id, false)),
            _ => Self::segment(id, fresh),
        }
    }

    /// The id segment for a URL: marked fresh when `fresh` and the id can carry the mark.
    pub(crate) fn segment(id: &str, fresh: bool) -> String {
        match uuid::Uuid::try_parse(id) {
            Ok(u) if fresh && u.get_version_num() == ID_VERSION as usize => {
                with_version(&u, FRESH_VERSION).hyphenated().to_string()
            }
            _ => id.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_segment_names_the_same_session() {
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        let fresh = UploadRef::segment(&id, true);
        assert_ne!(fresh, id);
        assert_eq!(
            UploadRef::parse(&fresh).unwrap(),
            UploadRef {
                id: id.clone(),
                fresh: true,
                tag: None
            }
        );
        assert_eq!(UploadRef::segment(&id, false), id);
        assert_eq!(
            UploadRef::parse(&id).unwrap(),
            UploadRef {
                id: id.clone(),
                fresh: false,
                tag: None
            }
        );
        let tagged = UploadRef::tagged_segment(&id, false, Some(0xab));
        assert_eq!(tagged, format!("{id}.000000ab"));
        assert_eq!(UploadRef::parse(&tagged).unwrap().tag, Some(0xab));
        assert_eq!(UploadRef::parse(&tagged).unwrap().id, id);
        assert_eq!(UploadRef::tagged_segment(&id, true, Some(1)), fresh);
        assert!(UploadRef::parse("not-a-uuid").is_err());
        for bad in [
            ".0000000a",
            "x.1",
            &format!("{id}.zzzzzzzz"),
            &format!("{id}.1"),
        ] {
            assert!(UploadRef::parse(bad).is_err(), "{bad}");
        }
    }
}
