//! The readers file: who may read, and what. Each entry names one credential — a bearer
//! token (by its SHA-256, never the token itself), a Kubernetes service account or a
//! service-account group (from a verified projected token), or a SPIFFE ID (from a client
//! certificate) — and gives it a role: `viewer` of some namespaces, or `admin`.
//!
//! ```yaml
//! readers:
//!   - name: alice
//!     token_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//!     role: viewer
//!     namespaces: [shop]
//!   - name: security-console
//!     serviceaccount: security/console
//!     role: admin
//!   - name: shop-team
//!     group: system:serviceaccounts:shop
//!     role: viewer
//!     namespaces: [shop]
//!   - name: oncall
//!     spiffe: spiffe://prod.example/ns/security/sa/oncall
//!     role: admin
//! ```
//!
//! The file is re-read when it changes; a file that does not load leaves the previous one
//! in force (logged and counted).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use thiserror::Error;

use super::{NamespaceScope, ReaderGrant, Role};
use crate::telemetry::aggregator::{ReadersReloadFailed, ReadersReloaded};
use crate::telemetry::InternalEvent;

#[derive(Debug, Error)]
pub enum ReadersError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("{path}: reader {name:?}: {problem}")]
    Invalid {
        path: PathBuf,
        name: String,
        problem: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    readers: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    role: Role,
    #[serde(default)]
    namespaces: Vec<String>,
    token_sha256: Option<String>,
    serviceaccount: Option<String>,
    group: Option<String>,
    spiffe: Option<String>,
}

/// A credential a reader is recognised by.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Match {
    TokenDigest([u8; 32]),
    /// `namespace/name`.
    ServiceAccount(String),
    /// `system:serviceaccounts` or `system:serviceaccounts:<namespace>`.
    Group(String),
    Spiffe(String),
}

#[derive(Debug, Clone)]
struct Reader {
    name: String,
    matches: Match,
    grant: ReaderGrant,
}

/// The loaded readers.
#[derive(Debug, Clone, Default)]
pub struct Readers {
    readers: Vec<Reader>,
}

/// A matched reader: its principal key and grant.
pub type Found = (String, ReaderGrant);

impl Readers {
    pub fn load(path: &Path) -> Result<Readers, ReadersError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReadersError::Read {
            path: path.to_owned(),
            source,
        })?;
        Readers::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<Readers, ReadersError> {
        let file: File = serde_yaml_ng::from_str(text).map_err(|source| ReadersError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let mut names = BTreeSet::new();
        let mut readers = Vec::with_capacity(file.readers.len());
        for e in file.readers {
            let invalid = |problem: String| ReadersError::Invalid {
                path: path.to_owned(),
                name: e.name.clone(),
                problem,
            };
            if e.name.is_empty() || !names.insert(e.name.clone()) {
                return Err(invalid("names must be present and unique".into()));
            }
            let given = [
                e.token_sha256.is_some(),
                e.serviceaccount.is_some(),
                e.group.is_some(),
                e.spiffe.is_some(),
            ];
            if given.iter().filter(|g| **g).count() != 1 {
                return Err(invalid(
                    "exactly one of token_sha256, serviceaccount, group, spiffe".into(),
                ));
            }
            let matches = if let Some(hex) = &e.token_sha256 {
                Match::TokenDigest(parse_digest(hex).ok_or_else(|| {
                    invalid("token_sha256 must be 64 hex digits (sha256sum of the token)".into())
                })?)
            } else if let Some(sa) = &e.serviceaccount {
                if sa.split('/').filter(|p| !p.is_empty()).count() != 2 {
                    return Err(invalid("serviceaccount must be <namespace>/<name>".into()));
                }
                Match::ServiceAccount(sa.clone())
            } else if let Some(group) = &e.group {
                if group != "system:serviceaccounts"
                    && !group.starts_with("system:serviceaccounts:")
                {
                    return Err(invalid(
                        "group must be system:serviceaccounts[:<namespace>] (the groups a service-account token proves)".into(),
                    ));
                }
                Match::Group(group.clone())
            } else {
                let id = e.spiffe.clone().unwrap_or_default();
                if !id.starts_with("spiffe://") {
                    return Err(invalid("spiffe must be a spiffe:// ID".into()));
                }
                Match::Spiffe(id)
            };
            let namespaces = match e.role {
                Role::Admin => NamespaceScope::All,
                Role::Viewer if e.namespaces.is_empty() => {
                    return Err(invalid("a viewer needs the namespaces it may see".into()))
                }
                Role::Viewer => NamespaceScope::only(e.namespaces.iter().cloned()),
            };
            readers.push(Reader {
                name: e.name,
                matches,
                grant: ReaderGrant {
                    role: e.role,
                    namespaces,
                },
            });
        }
        Ok(Readers { readers })
    }

    pub fn len(&self) -> usize {
        self.readers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.readers.is_empty()
    }

    fn found(r: &Reader) -> Found {
        (format!("reader:{}", r.name), r.grant.clone())
    }

    /// The reader whose token this is. Every entry is compared, in constant time, so the
    /// time taken does not say which one matched.
    pub fn by_token(&self, token: &str) -> Option<Found> {
        let digest = super::digest(token.as_bytes());
        let mut found = None;
        for r in &self.readers {
            if let Match::TokenDigest(d) = &r.matches {
                if super::digests_equal(d, &digest) && found.is_none() {
                    found = Some(Self::found(r));
                }
            }
        }
        found
    }

    /// The reader a verified service account is: by its own entry first, then by the
    /// groups Kubernetes puts every service account in.
    pub fn by_service_account(&self, namespace: &str, name: &str) -> Option<Found> {
        let sa = format!("{namespace}/{name}");
        let group = format!("system:serviceaccounts:{namespace}");
        let find = |want: &dyn Fn(&Match) -> bool| {
            self.readers
                .iter()
                .find(|r| want(&r.matches))
                .map(Self::found)
        };
        find(&|m| matches!(m, Match::ServiceAccount(s) if *s == sa))
            .or_else(|| find(&|m| matches!(m, Match::Group(g) if *g == group)))
            .or_else(|| find(&|m| matches!(m, Match::Group(g) if g == "system:serviceaccounts")))
    }

    pub fn by_spiffe(&self, id: &str) -> Option<Found> {
        self.readers
            .iter()
            .find(|r| matches!(&r.matches, Match::Spiffe(s) if s == id))
            .map(Self::found)
    }
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

// === Hot reload ===

/// The readers file as currently in force.
pub struct ReadersFile {
    path: PathBuf,
    current: RwLock<Arc<Readers>>,
    loaded_mtime: RwLock<Option<SystemTime>>,
}

pub const RELOAD_CHECK_EVERY: Duration = Duration::from_secs(2);

impl ReadersFile {
    /// Loads `path`; an error here stops the aggregator (a typo must not lock readers out
    /// or let them in).
    pub fn open(path: &Path) -> Result<Arc<ReadersFile>, ReadersError> {
        let mtime = modified(path);
        let readers = Readers::load(path)?;
        tracing::info!(path = %path.display(), readers = readers.len(), "readers loaded");
        Ok(Arc::new(ReadersFile {
            path: path.to_owned(),
            current: RwLock::new(Arc::new(readers)),
            loaded_mtime: RwLock::new(mtime),
        }))
    }

    pub fn current(&self) -> Arc<Readers> {
        match self.current.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the file if it changed; returns whether a new version is in force.
    pub fn reload_if_changed(&self) -> bool {
        let mtime = modified(&self.path);
        let unchanged = self
            .loaded_mtime
            .read()
            .map(|m| *m == mtime)
            .unwrap_or(false);
        if unchanged {
            return false;
        }
        if let Ok(mut m) = self.loaded_mtime.write() {
            *m = mtime;
        }
        match Readers::load(&self.path) {
            Ok(readers) => {
                ReadersReloaded {
                    path: &self.path,
                    readers: readers.len(),
                }
                .emit();
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(readers);
                }
                true
            }
            Err(error) => {
                ReadersReloadFailed { error: &error }.emit();
                false
            }
        }
    }

    /// Checks the file for changes until the runtime stops.
    pub fn spawn_reloader(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_CHECK_EVERY);
            loop {
                tick.tick().await;
                let Some(file) = this.upgrade() else { return };
                file.reload_if_changed();
            }
        });
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA256_OF_TEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn parse(text: &str) -> Result<Readers, ReadersError> {
        Readers::parse(Path::new("readers.yaml"), text)
    }

    #[test]
    fn each_credential_kind_finds_its_reader_and_grant() {
        let readers = parse(&format!(
            "readers:
  - name: alice
    token_sha256: {SHA256_OF_TEST}
    role: viewer
    namespaces: [shop]
  - name: console
    serviceaccount: security/console
    role: admin
  - name: shop-team
    group: system:serviceaccounts:shop
    role: viewer
    namespaces: [shop, shop-staging]
  - name: oncall
    spiffe: spiffe://prod.example/ns/security/sa/oncall
    role: admin
"
        ))
        .expect("valid");
        let (key, grant) = readers.by_token("test").expect("alice");
        assert_eq!(key, "reader:alice");
        assert_eq!(grant.role, Role::Viewer);
        assert!(grant.namespaces.allows("shop") && !grant.namespaces.allows("bank"));
        assert!(readers.by_token("tesT").is_none());
        assert_eq!(
            readers
                .by_service_account("security", "console")
                .expect("sa")
                .1
                .role,
            Role::Admin
        );
        let (key, grant) = readers.by_service_account("shop", "ci").expect("by group");
        assert_eq!(key, "reader:shop-team");
        assert!(grant.namespaces.allows("shop-staging"));
        assert!(readers.by_service_account("bank", "ci").is_none());
        assert!(readers
            .by_spiffe("spiffe://prod.example/ns/security/sa/oncall")
            .is_some());
        assert!(readers
            .by_spiffe("spiffe://prod.example/ns/x/sa/y")
            .is_none());
    }

    #[test]
    fn mistakes_are_load_errors_with_the_readers_name() {
        for (text, needle) in [
            ("readers:\n  - name: a\n    role: viewer\n    namespaces: [x]\n", "exactly one"),
            (
                "readers:\n  - name: a\n    token_sha256: abc\n    role: admin\n",
                "64 hex",
            ),
            (
                &format!("readers:\n  - name: a\n    token_sha256: {SHA256_OF_TEST}\n    role: viewer\n"),
                "namespaces",
            ),
            (
                "readers:\n  - name: a\n    group: developers\n    role: admin\n",
                "system:serviceaccounts",
            ),
            (
                "readers:\n  - name: a\n    serviceaccount: x/y\n    role: root\n",
                "unknown variant",
            ),
            (
                "readers:\n  - name: a\n    serviceaccount: x/y\n    role: admin\n  - name: a\n    serviceaccount: x/z\n    role: admin\n",
                "unique",
            ),
            ("readers:\n  - name: a\n    serviceaccount: x/y\n    role: admin\n    tokne: 1\n", "unknown field"),
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(needle), "{err} (wanted {needle:?})");
        }
    }

    #[test]
    fn a_changed_file_is_reloaded_and_a_broken_one_keeps_the_last_good() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("readers.yaml");
        let write = |text: &str, age_secs: u64| {
            std::fs::write(&path, text).expect("write");
            // mtimes move by the file system's granularity: set them apart explicitly.
            let f = std::fs::File::options()
                .write(true)
                .open(&path)
                .expect("open");
            f.set_modified(SystemTime::now() - Duration::from_secs(age_secs))
                .expect("mtime");
        };
        write(
            "readers:\n  - name: a\n    serviceaccount: x/a\n    role: admin\n",
            100,
        );
        let file = ReadersFile::open(&path).expect("loads");
        assert!(file.current().by_service_account("x", "a").is_some());
        assert!(!file.reload_if_changed(), "unchanged");
        write(
            "readers:\n  - name: b\n    serviceaccount: x/b\n    role: admin\n",
            50,
        );
        assert!(file.reload_if_changed());
        assert!(file.current().by_service_account("x", "a").is_none());
        assert!(file.current().by_service_account("x", "b").is_some());
        write("readers: [oops\n", 10);
        assert!(!file.reload_if_changed());
        assert!(file.current().by_service_account("x", "b").is_some());
    }
}
