//! Storage keys, in CNCF distribution's layout so that a registry:2 bucket is served in place.
//!
//! Everything lives under `docker/registry/v2/`. Berth's own additions (upload state, referrer
//! and catalog indexes) sit where distribution never looks.

use crate::digest::Digest;
use crate::names::{RepositoryName, Tag};

const ROOT: &str = "docker/registry/v2";

/// Key of a blob's bytes (manifests are blobs too).
pub fn blob_data(d: &Digest) -> String {
    format!(
        "{ROOT}/blobs/{}/{}/{}/data",
        d.algorithm(),
        &d.hex()[..2],
        d.hex()
    )
}

/// Prefix of every blob of one algorithm.
pub fn blobs_prefix() -> String {
    format!("{ROOT}/blobs/")
}

/// Prefix of every repository.
pub fn repositories_prefix() -> String {
    format!("{ROOT}/repositories/")
}

fn repo(name: &RepositoryName) -> String {
    format!("{ROOT}/repositories/{name}")
}

/// Link that makes a blob part of a repository.
pub fn layer_link(name: &RepositoryName, d: &Digest) -> String {
    format!("{}/_layers/{}/{}/link", repo(name), d.algorithm(), d.hex())
}

/// Link that makes a manifest revision part of a repository.
pub fn manifest_revision_link(name: &RepositoryName, d: &Digest) -> String {
    format!(
        "{}/_manifests/revisions/{}/{}/link",
        repo(name),
        d.algorithm(),
        d.hex()
    )
}

/// Prefix of a repository's manifest revisions.
pub fn manifest_revisions_prefix(name: &RepositoryName) -> String {
    format!("{}/_manifests/revisions/", repo(name))
}

/// Prefix under which each tag is a sub-prefix.
pub fn tags_prefix(name: &RepositoryName) -> String {
    format!("{}/_manifests/tags/", repo(name))
}

/// Prefix of everything stored for one tag.
pub fn tag_prefix(name: &RepositoryName, tag: &Tag) -> String {
    format!("{}/_manifests/tags/{tag}/", repo(name))
}

/// The tag's current target.
pub fn tag_current_link(name: &RepositoryName, tag: &Tag) -> String {
    format!("{}/_manifests/tags/{tag}/current/link", repo(name))
}

/// The tag's history entry for one digest.
pub fn tag_index_link(name: &RepositoryName, tag: &Tag, d: &Digest) -> String {
    format!(
        "{}/_manifests/tags/{tag}/index/{}/{}/link",
        repo(name),
        d.algorithm(),
        d.hex()
    )
}

/// Prefix under which each upload session of a repository is a sub-prefix.
pub fn uploads_prefix(name: &RepositoryName) -> String {
    format!("{}/_uploads/", repo(name))
}

/// Prefix of one upload session.
pub fn upload_prefix(name: &RepositoryName, id: &str) -> String {
    format!("{}/_uploads/{id}/", repo(name))
}

/// The upload session's state object.
pub fn upload_state(name: &RepositoryName, id: &str) -> String {
    format!("{}/_uploads/{id}/berth-state.json", repo(name))
}

/// Where an upload's bytes accumulate before they are verified and moved.
pub fn upload_data(name: &RepositoryName, id: &str) -> String {
    format!("{}/_uploads/{id}/data", repo(name))
}

/// The repository and upload id of an upload's data key, if `key` is one.
pub fn parse_upload_data(key: &str) -> Option<(RepositoryName, String)> {
    let rest = key.strip_prefix(&repositories_prefix())?;
    let rest = rest.strip_suffix("/data")?;
    let (name, id) = rest.rsplit_once("/_uploads/")?;
    Some((name.parse().ok()?, id.to_owned()))
}

/// A staged fragment smaller than a part, waiting to be joined with the next bytes.
pub fn upload_staged(name: &RepositoryName, id: &str, generation: u64) -> String {
    format!("{}/_uploads/{id}/staged/{generation}", repo(name))
}

/// Prefix of the referrers of one subject (Berth's index; distribution ignores `_berth*`).
pub fn referrers_prefix(name: &RepositoryName, subject: &Digest) -> String {
    format!(
        "{}/_berth_referrers/{}/{}/",
        repo(name),
        subject.algorithm(),
        subject.hex()
    )
}

/// One referrer's descriptor, stored as JSON.
pub fn referrer_entry(name: &RepositoryName, subject: &Digest, referrer: &Digest) -> String {
    format!(
        "{}{}-{}",
        referrers_prefix(name, subject),
        referrer.algorithm(),
        referrer.hex()
    )
}

/// Prefix of the flat catalog index earlier versions kept (one empty object per repository),
/// read once when the ordered index is first built.
pub fn legacy_catalog_prefix() -> String {
    format!("{ROOT}/berth/catalog/")
}

/// The repository name a legacy catalog entry's last key segment stands for.
pub fn legacy_catalog_name_of(key_segment: &str) -> String {
    key_segment.replace('+', "/")
}

/// Prefix of the ordered, sharded index of repository names (see `registry::sorted_index`).
pub fn catalog_index_prefix() -> String {
    format!("{ROOT}/berth/catalog-index/")
}

/// Prefix of the ordered, sharded index of a repository's tags, kept once it has many.
pub fn tag_index_prefix(name: &RepositoryName) -> String {
    format!("{ROOT}/berth/tag-index/{name}/_index/")
}

/// Prefix of the reference index: under each blob, one entry per manifest revision that
/// refers to it (see `registry::references`).
pub fn references_prefix() -> String {
    format!("{ROOT}/berth/refs/")
}

/// Prefix of the entries of the revisions that refer to blob `d`.
pub fn references_of(d: &Digest) -> String {
    format!("{}{}/{}/", references_prefix(), d.algorithm(), d.hex())
}

/// The entry saying that revision `revision` of repository `name` refers to blob `d`: one
/// level under the blob (walking the index walks one folder per blob), named by a 128-bit hash
/// of the repository and revision so that keys stay short whatever the name's length (a
/// file name holds 255 bytes; some S3 servers refuse long keys). Its body,
/// [`reference_body`], says which revision it stands for.
pub fn reference_entry(d: &Digest, name: &RepositoryName, revision: &Digest) -> String {
    use sha2::Digest as _;
    let sum = sha2::Sha256::digest(reference_body(name, revision).as_bytes());
    format!("{}{}", references_of(d), hex::encode(&sum[..16]))
}

/// What a reference entry holds: the repository and the revision, one per line.
pub fn reference_body(name: &RepositoryName, revision: &Digest) -> String {
    format!("{name}\n{revision}")
}

/// The repository and revision a reference entry's body names.
pub fn parse_reference_body(body: &[u8]) -> Option<(RepositoryName, Digest)> {
    let text = std::str::from_utf8(body).ok()?;
    let (name, revision) = text.split_once('\n')?;
    Some((name.parse().ok()?, revision.trim().parse().ok()?))
}

/// Marks a blob an incremental collection must look at: bytes just stored, or a revision
/// that referred to it just removed.
pub fn gc_candidate(d: &Digest) -> String {
    format!("{}{}/{}", gc_candidates_prefix(), d.algorithm(), d.hex())
}

/// The blob a candidate's key names.
pub fn digest_of_candidate_key(key: &str) -> Option<Digest> {
    let (alg, hex) = key.strip_prefix(&gc_candidates_prefix())?.split_once('/')?;
    format!("{alg}:{hex}").parse().ok()
}

/// Prefix of the candidates of the next incremental collection.
pub fn gc_candidates_prefix() -> String {
    format!("{ROOT}/berth/gc-candidates/")
}

/// Written by each full collection once the reference index matches the layout; its time is
/// that collection's. Incremental collections need it.
pub fn references_complete_marker() -> String {
    format!("{ROOT}/berth/refs-complete")
}

/// Marker refreshed whenever a blob is linked or referenced, so a running GC spares it.
pub fn touched_marker(d: &Digest) -> String {
    format!("{ROOT}/berth/touched/{}/{}", d.algorithm(), d.hex())
}

/// Prefix of the touched markers.
pub fn touched_prefix() -> String {
    format!("{ROOT}/berth/touched/")
}

/// When a client last pulled `reference` (a tag, or a digest as `algorithm/hex`) of a
/// repository: for cache expiry and retention. Under `cache-used`, the pull-through cache's
/// first use of it, so markers written before stay valid. `_tags` and `_revisions` cannot be
/// repository name components, so one repository's markers never collide with another's.
pub fn pull_marker(name: &RepositoryName, reference: &crate::Reference) -> String {
    match reference {
        crate::Reference::Tag(t) => format!("{ROOT}/berth/cache-used/{name}/_tags/{t}"),
        crate::Reference::Digest(d) => format!(
            "{ROOT}/berth/cache-used/{name}/_revisions/{}/{}",
            d.algorithm(),
            d.hex()
        ),
    }
}

/// One replica's record of when each repository was last pulled (see
/// `registry::pull_times`).
pub fn pull_times(replica: &str) -> String {
    format!("{}{replica}.json", pull_times_prefix())
}

/// Prefix of the replicas' pull records.
pub fn pull_times_prefix() -> String {
    format!("{ROOT}/berth/pulls/")
}

/// The record that holds those of replicas that stopped.
pub const FOLDED_PULL_TIMES: &str = "_folded";

/// Written by a collection while it removes a tag retention let go: a push that wrote the tag
/// meanwhile sees it and writes the tag again once it is gone (see `registry::retention`).
pub fn retiring_marker(name: &RepositoryName, tag: &Tag) -> String {
    format!("{ROOT}/berth/retiring/{name}/_tags/{tag}")
}

/// A repository's quota ledger: what its revisions name and the sizes (see `registry::quota`).
pub fn quota_ledger(name: &RepositoryName) -> String {
    format!("{ROOT}/berth/quota/{name}/_ledger.json")
}

/// Prefix of the quota ledgers.
pub fn quota_ledgers_prefix() -> String {
    format!("{ROOT}/berth/quota/")
}

/// The repository a quota ledger key belongs to.
pub fn repository_of_quota_ledger(key: &str) -> Option<RepositoryName> {
    key.strip_prefix(&quota_ledgers_prefix())?
        .strip_suffix("/_ledger.json")?
        .parse()
        .ok()
}

/// Where a collection holds a blob's bytes while it makes sure nothing came to rely on them
/// during their removal (see `registry::gc`).
pub fn gc_quarantine(d: &Digest) -> String {
    format!("{ROOT}/berth/gc-quarantine/{}/{}", d.algorithm(), d.hex())
}

/// Prefix of the bytes collections hold.
pub fn gc_quarantine_prefix() -> String {
    format!("{ROOT}/berth/gc-quarantine/")
}

/// Parses a quarantine key back into its digest.
pub fn digest_of_quarantine_key(key: &str) -> Option<Digest> {
    let rest = key.strip_prefix(&gc_quarantine_prefix())?;
    let (alg, hex) = rest.split_once('/')?;
    format!("{alg}:{hex}").parse().ok()
}

/// A robot token's record (its name, a hash of the token, its access): the store is where every
/// replica learns of tokens and of their revocation.
pub fn robot_token(name: &str) -> String {
    format!("{}{name}.json", robot_tokens_prefix())
}

/// Prefix of the robot token records.
pub fn robot_tokens_prefix() -> String {
    format!("{ROOT}/berth/robots/")
}

/// What the last collection removed and when (`registry::collections`).
pub fn last_collection() -> String {
    format!("{ROOT}/berth/gc-last.json")
}

/// The key that signs the web UI's session cookies, shared by every replica.
pub fn ui_session_key() -> String {
    format!("{ROOT}/berth/ui/session-key")
}

/// The lease that lets one process at a time collect garbage.
pub fn gc_lease() -> String {
    format!("{ROOT}/berth/gc-lease")
}

/// Events waiting to be sent to the downstream registry `downstream`, one object each, named
/// so that their keys sort in the order they were queued.
pub fn replication_queue(downstream: &str) -> String {
    format!("{ROOT}/berth/replication/{downstream}/queue/")
}

/// Events the downstream `downstream` refused for good, kept with the reason.
pub fn replication_dead_letters(downstream: &str) -> String {
    format!("{ROOT}/berth/replication/{downstream}/failed/")
}

/// The lease that lets one process at a time send `downstream` its queue.
pub fn replication_lease(downstream: &str) -> String {
    format!("{ROOT}/berth/replication/{downstream}/lease")
}

/// Where a scheduled sync from an upstream keeps its lease (`lease`) and the mark of its last
/// finished run (`last`).
pub fn replication_sync(name: &str, what: &str) -> String {
    format!("{ROOT}/berth/replication-sync/{name}/{what}")
}

/// Parses a blob data key back into its digest.
pub fn digest_of_blob_key(key: &str) -> Option<Digest> {
    let rest = key
        .strip_prefix(&format!("{ROOT}/blobs/"))?
        .strip_suffix("/data")?;
    let mut parts = rest.split('/');
    let (alg, _, hex) = (parts.next()?, parts.next()?, parts.next()?);
    format!("{alg}:{hex}").parse().ok()
}

/// Parses the `sha256:<hex>` text of a link file.
pub fn parse_link(body: &[u8]) -> Option<Digest> {
    std::str::from_utf8(body).ok()?.trim().parse().ok()
}

/// A scratch object the startup probe of the store's guarantees writes and removes.
pub fn store_probe(instance: &str) -> String {
    format!("{ROOT}/berth/probe/{instance}")
}

/// Where a Berth in single-writer mode says it is alive, so that a second one is noticed.
pub fn single_writer_heartbeat() -> String {
    format!("{ROOT}/berth/single-writer")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    #[test]
    fn distribution_paths() {
        let d = Digest::of(Algorithm::Sha256, b"");
        let n: RepositoryName = "library/ubuntu".parse().unwrap();
        assert_eq!(
            blob_data(&d),
            "docker/registry/v2/blobs/sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/data"
        );
        assert_eq!(
            tag_current_link(&n, &"latest".parse().unwrap()),
            "docker/registry/v2/repositories/library/ubuntu/_manifests/tags/latest/current/link"
        );
        assert!(layer_link(&n, &d).ends_with(
            "_layers/sha256/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/link"
        ));
        assert_eq!(legacy_catalog_name_of("library+ubuntu"), "library/ubuntu");
        let m = Digest::of(Algorithm::Sha256, b"m");
        assert_eq!(
            parse_reference_body(reference_body(&n, &m).as_bytes()),
            Some((n.clone(), m.clone()))
        );
        assert!(reference_entry(&d, &n, &m).starts_with(&references_of(&d)));
        assert_ne!(reference_entry(&d, &n, &m), reference_entry(&d, &n, &d));
        assert_eq!(
            tag_index_prefix(&n),
            "docker/registry/v2/berth/tag-index/library/ubuntu/_index/"
        );
        assert_eq!(digest_of_quarantine_key(&gc_quarantine(&d)), Some(d));
    }
}
