//! State: what the consumer keeps between runs and what several instances must agree on.
//!
//! [`StateBackend`] is where the shared decisions live — which instance handles an event
//! ([`claims`]), dedupe, rate-limit windows, leases: files in the state directory ([`local`],
//! the embedded default, one instance), Redis / Valkey ([`redis_store`], several instances), or
//! memory (unit tests).
//!
//! What the consumer keeps on disk (seen events, rate-limit windows, parked alerts, script
//! logs) is written through the helpers below, so every file survives a crash whole or not at
//! all, and every stored time and file-name hash means the same thing.
//!
//! What is written here holds alert content (app names, error messages, script logs) and
//! tenant ids: files are created `0600` and directories `0700` (on Unix), readable by the
//! consumer's own user only, whatever the umask.

pub mod backend;
pub mod claims;
pub mod dedupe;
pub mod local;
mod local_digests;
mod local_notes;
mod redis_backend;
pub mod redis_store;

use std::path::Path;
use std::sync::Arc;

use crate::settings::StateStoreConfig;
pub use backend::{ClaimState, DueDigest, Folding, RateWindow, StateBackend, StoreError};
pub use claims::{Begin, Claim, Claims};
pub use local::LocalStore;
pub use redis_store::RedisStore;

/// Opens the configured store (`Butler.qlikSenseCloud.consumer.stateStore`) without waiting
/// for it: an unreachable Redis is retried when used.
pub fn open(
    store: &StateStoreConfig,
    state_dir: &Path,
    retention: std::time::Duration,
) -> Result<Arc<dyn StateBackend>, StoreError> {
    match store {
        StateStoreConfig::File => Ok(Arc::new(LocalStore::open(state_dir, retention))),
        StateStoreConfig::Redis(url) => RedisStore::open(url)
            .map(|store| {
                crate::metrics::global().shared_store_configured();
                Arc::new(store) as Arc<dyn StateBackend>
            })
            .map_err(|e| StoreError {
                store: url.to_string(),
                reason: e.to_string(),
            }),
    }
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, then renames it into place: a
/// reader (or the next start after a crash) sees the old content or the new, never half of it.
pub async fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let path = path.to_owned();
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || write_atomically_blocking(&path, &bytes))
        .await
        .map_err(std::io::Error::other)?
}

/// Creates a directory and any missing parents, each new one `0700` (Unix). Directories that
/// exist are left as they are: the deployer may have chosen their mode.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// A new file, `0600` (Unix), replacing any file of that name.
fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// [`write_atomically`] for callers outside the async runtime.
///
/// The rename is made durable too: a rename is an update of the directory, which the file's
/// own `sync_all` does not cover, so after a power loss the directory could still list the old
/// file (or none) although the caller went on — acknowledging the MQTT message, say, whose
/// dedupe entry or parked alert then never existed.
pub fn write_atomically_blocking(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    /// Some file systems cannot sync a directory and say so (`EINVAL`, unsupported); the
    /// rename happened there all the same.
    fn sync_dir(dir: &Path) -> std::io::Result<()> {
        #[cfg(unix)]
        match std::fs::File::open(dir).and_then(|d| d.sync_all()) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported
                ) => {}
            other => other?,
        }
        #[cfg(not(unix))]
        let _ = dir;
        Ok(())
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        // A temporary file left by a crash may have another mode: start afresh.
        let _ = std::fs::remove_file(&tmp);
        let mut file = create_private_file(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Unix seconds, the unit of every timestamp in the state files. A clock before 1970 reads as
/// 0 rather than failing: the worst case is a window that closes early.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Now as RFC 3339 (UTC), the time format of parked alerts and messages.
pub fn now_rfc3339() -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}

/// Nanoseconds since the Unix epoch, for values that must differ between starts.
pub fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// FNV-1a: a hash that stays the same across processes and versions (std's is seeded per
/// process), for names that must come out the same every time: parked-alert file names, email
/// Message-IDs.
pub fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_is_the_published_function() {
        // Test vectors from the FNV reference: changing them would rename parked alerts and
        // change Message-IDs between versions.
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("state.json");
        write_atomically_blocking(&path, b"one").expect("first write");
        write_atomically_blocking(&path, b"two").expect("second write");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        let names: Vec<_> = std::fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    /// What a power loss would show cannot be observed here; this runs the directory sync (in a
    /// directory that exists and in a new one) and checks the writes come out whole.
    #[test]
    fn the_directory_sync_after_the_rename_keeps_every_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        for path in [
            dir.path().join("seen-events.json"),
            dir.path().join("new").join("parked.json"),
        ] {
            write_atomically_blocking(&path, b"durable").expect("write");
            write_atomically_blocking(&path, b"durable again").expect("rewrite");
            assert_eq!(std::fs::read(&path).expect("read"), b"durable again");
        }
    }

    #[cfg(unix)]
    #[test]
    fn files_and_new_directories_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a").join("b").join("parked.json");
        write_atomically_blocking(&path, b"x").expect("write");
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&dir.path().join("a").join("b")), 0o700);
        create_private_dir(&dir.path().join("state")).expect("dir");
        assert_eq!(mode(&dir.path().join("state")), 0o700);
    }
}
