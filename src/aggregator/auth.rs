//! Who is calling. Every request the aggregator serves carries one verified [`Principal`]
//! in its extensions, put there by authentication before any service runs; each service
//! authorizes with it: Ingest takes writers, Query/Subscribe/Investigate take readers, and a
//! reader sees only the namespaces it was granted ([`NamespaceScope`]).
//!
//! The principal's [`key`](Principal::key) is the stable name of the identity behind a
//! request: per-identity limits, logs and audit key on it.

pub mod authenticate;
pub mod jwt;
pub mod keys;
pub mod readers;
pub mod spiffe;

use std::collections::BTreeSet;
use std::sync::Arc;

use tonic::{Request, Status};

pub use authenticate::{Authenticated, Authenticator, Purpose};

// === Principal ===

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    key: Arc<str>,
    kind: PrincipalKind,
    /// When the credential stops being valid (unix ns): a stream it opened ends then.
    expires_at: Option<u64>,
}

/// What a principal is allowed to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A workload that writes records (a collector, an audit source): its pod, namespace
    /// and collector id come from its verified credential, never from what it sends.
    Writer(WriterIdentity),
    /// A reader with a role from the readers file.
    Reader(ReaderGrant),
    /// The single shared token, or no credential at all, on a loopback listener
    /// (`make run`): writes as any collector and reads everything.
    Local,
}

/// A writer's identity, as its credential states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterIdentity {
    pub namespace: String,
    /// Absent when the credential names a namespace's workloads rather than one pod (a
    /// certificate for a service account): the pod name is then the collector's to say.
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    pub credential: Credential,
}

/// Which kind of credential named a writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A Kubernetes projected service-account token (JWT) bound to a pod.
    ServiceAccountToken,
    /// A client certificate with a SPIFFE URI SAN.
    ClientCertificate,
}

/// A reader's role and the namespaces it may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderGrant {
    pub role: Role,
    pub namespaces: NamespaceScope,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads the namespaces it is granted.
    Viewer,
    /// Reads every namespace and may change rules.
    Admin,
}

/// Namespaces a reader may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceScope {
    All,
    Only(Arc<BTreeSet<String>>),
}

impl Principal {
    /// The loopback principal: `make run`, or the shared token on loopback.
    pub fn local() -> Principal {
        Principal {
            key: Arc::from("local"),
            kind: PrincipalKind::Local,
            expires_at: None,
        }
    }

    pub fn writer(key: impl Into<Arc<str>>, identity: WriterIdentity) -> Principal {
        Principal {
            key: key.into(),
            kind: PrincipalKind::Writer(identity),
            expires_at: None,
        }
    }

    pub fn reader(key: impl Into<Arc<str>>, grant: ReaderGrant) -> Principal {
        Principal {
            key: key.into(),
            kind: PrincipalKind::Reader(grant),
            expires_at: None,
        }
    }

    /// The same principal, whose credential expires at `unix_ns`.
    pub fn expiring_at(mut self, unix_ns: u64) -> Principal {
        self.expires_at = Some(unix_ns);
        self
    }

    /// When the credential expires (unix ns), if it does.
    pub fn expires_at(&self) -> Option<u64> {
        self.expires_at
    }

    /// Stable and unique per identity: `local`, `pod:<namespace>/<pod>` (a service-account
    /// token bound to a pod), `spiffe://…` (a client certificate), `reader:<name>`.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn kind(&self) -> &PrincipalKind {
        &self.kind
    }

    /// The principal authentication attached to `request`. A request without one never
    /// got past authentication: refused, never served as anyone.
    pub fn of<T>(request: &Request<T>) -> Result<Principal, Status> {
        request
            .extensions()
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no verified credential"))
    }

    /// What this principal may read; writers read nothing.
    pub fn read_scope(&self) -> Result<NamespaceScope, Status> {
        match &self.kind {
            PrincipalKind::Local => Ok(NamespaceScope::All),
            PrincipalKind::Reader(grant) => match grant.role {
                Role::Admin => Ok(NamespaceScope::All),
                Role::Viewer => Ok(grant.namespaces.clone()),
            },
            PrincipalKind::Writer(_) => Err(Status::permission_denied(format!(
                "{} is a writer: it may not read",
                self.key
            ))),
        }
    }

    /// Changing rules (and anything else beyond reading) is for admins.
    pub fn require_admin(&self) -> Result<(), Status> {
        match &self.kind {
            PrincipalKind::Local => Ok(()),
            PrincipalKind::Reader(g) if g.role == Role::Admin => Ok(()),
            _ => Err(Status::permission_denied(format!(
                "{} is not an admin",
                self.key
            ))),
        }
    }

    /// Writing records is for writers (and the loopback principal).
    pub fn require_writer(&self) -> Result<Option<&WriterIdentity>, Status> {
        match &self.kind {
            PrincipalKind::Local => Ok(None),
            PrincipalKind::Writer(w) => Ok(Some(w)),
            PrincipalKind::Reader(_) => Err(Status::permission_denied(format!(
                "{} is a reader: it may not write records",
                self.key
            ))),
        }
    }
}

// === Writers ===

impl WriterIdentity {
    /// The identity a batch claims, checked against this verified writer: its namespace
    /// (and its pod, and pod uid, when the credential names them) must be the writer's, or
    /// the batch is refused (`Err` says what it claimed). What the credential states
    /// replaces what the batch says, and the collector id is put under the writer's own
    /// prefix (its pod uid, else its principal key `key`): deduplication keys on it, so no
    /// writer can reach another's sequence space.
    pub fn admit(
        &self,
        mut claimed: crate::model::CollectorIdentity,
        key: &str,
    ) -> Result<crate::model::CollectorIdentity, String> {
        if claimed.pod_namespace != self.namespace {
            return Err(format!(
                "the batch claims namespace {:?}; the credential is for {:?}",
                claimed.pod_namespace, self.namespace
            ));
        }
        if let Some(pod) = &self.pod_name {
            if claimed.pod_name != *pod {
                return Err(format!(
                    "the batch claims pod {:?}; the credential is for {pod:?}",
                    claimed.pod_name
                ));
            }
        }
        if let Some(uid) = &self.pod_uid {
            if !claimed.pod_uid.is_empty() && claimed.pod_uid != *uid {
                return Err(format!(
                    "the batch claims pod uid {:?}; the credential is for {uid:?}",
                    claimed.pod_uid
                ));
            }
            claimed.pod_uid.clone_from(uid);
        }
        let prefix = self.pod_uid.as_deref().unwrap_or(key);
        let inside = claimed
            .collector_id
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'));
        if !inside {
            claimed.collector_id = format!("{prefix}/{}", claimed.collector_id);
        }
        Ok(claimed)
    }
}

// === Credentials ===

/// SHA-256 of a secret: secrets are compared digest to digest, so a comparison takes the
/// same time whatever the presented secret's length and content.
pub(crate) fn digest(secret: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, secret).as_ref());
    out
}

/// Constant-time equality of two digests.
pub(crate) fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// === NamespaceScope ===

impl NamespaceScope {
    pub fn only<I: IntoIterator<Item = S>, S: Into<String>>(namespaces: I) -> NamespaceScope {
        NamespaceScope::Only(Arc::new(namespaces.into_iter().map(Into::into).collect()))
    }

    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            NamespaceScope::All => true,
            NamespaceScope::Only(set) => set.contains(namespace),
        }
    }

    /// The one namespace filter every reader path applies: the namespaces a request may
    /// look at, given those it asked for (empty: every namespace it may see). Never empty
    /// for a limited scope (an empty list means "all" to the store and the hub); asking for
    /// a namespace outside the scope is refused rather than silently narrowed, so a viewer
    /// learns its grant, not whether the namespace exists.
    pub fn restrict(&self, requested: Vec<String>) -> Result<Vec<String>, Status> {
        let NamespaceScope::Only(granted) = self else {
            return Ok(requested);
        };
        if granted.is_empty() {
            return Err(Status::permission_denied("no namespace is granted"));
        }
        if requested.is_empty() {
            return Ok(granted.iter().cloned().collect());
        }
        if let Some(denied) = requested.iter().find(|ns| !granted.contains(*ns)) {
            return Err(Status::permission_denied(format!(
                "namespace {denied:?} is not granted"
            )));
        }
        Ok(requested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer(namespaces: &[&str]) -> Principal {
        Principal::reader(
            "reader:v",
            ReaderGrant {
                role: Role::Viewer,
                namespaces: NamespaceScope::only(namespaces.iter().copied()),
            },
        )
    }

    #[test]
    fn a_viewer_reads_only_its_namespaces_and_an_empty_request_means_them_all() {
        let scope = viewer(&["a", "c"]).read_scope().expect("a reader reads");
        assert_eq!(scope.restrict(vec![]).expect("ok"), vec!["a", "c"]);
        assert_eq!(scope.restrict(vec!["c".into()]).expect("ok"), vec!["c"]);
        let denied = scope
            .restrict(vec!["a".into(), "b".into()])
            .expect_err("b is not granted");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(scope.allows("a") && !scope.allows("b"));
    }

    #[test]
    fn an_empty_grant_is_refused_never_widened_to_everything() {
        let scope = viewer(&[]).read_scope().expect("a reader reads");
        let denied = scope.restrict(vec![]).expect_err("nothing granted");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn roles_decide_what_each_principal_may_do() {
        let admin = Principal::reader(
            "reader:root",
            ReaderGrant {
                role: Role::Admin,
                namespaces: NamespaceScope::only(["ignored"]),
            },
        );
        assert_eq!(admin.read_scope().expect("reads"), NamespaceScope::All);
        assert!(admin.require_admin().is_ok());
        assert!(admin.require_writer().is_err());
        assert!(viewer(&["a"]).require_admin().is_err());

        let writer = Principal::writer(
            "sa:a/web/u1",
            WriterIdentity {
                namespace: "a".into(),
                pod_name: Some("web".into()),
                pod_uid: Some("u1".into()),
                credential: Credential::ServiceAccountToken,
            },
        );
        assert_eq!(
            writer.read_scope().expect_err("writers do not read").code(),
            tonic::Code::PermissionDenied
        );
        assert!(writer.require_writer().expect("writes").is_some());
        assert_eq!(writer.key(), "sa:a/web/u1");

        let local = Principal::local();
        assert_eq!(local.read_scope().expect("reads"), NamespaceScope::All);
        assert!(local.require_writer().expect("writes").is_none());
    }

    #[test]
    fn a_writer_can_claim_only_its_own_pod_and_sequence_space() {
        use crate::model::CollectorIdentity;
        let writer = WriterIdentity {
            namespace: "shop".into(),
            pod_name: Some("web-1".into()),
            pod_uid: Some("uid-1".into()),
            credential: Credential::ServiceAccountToken,
        };
        let claim = |ns: &str, pod: &str, uid: &str, id: &str| CollectorIdentity {
            collector_id: id.into(),
            pod_name: pod.into(),
            pod_namespace: ns.into(),
            pod_uid: uid.into(),
            ..CollectorIdentity::default()
        };
        let own = writer
            .admit(claim("shop", "web-1", "", "uid-1/ab12"), "pod:shop/web-1")
            .expect("its own");
        assert_eq!(
            (own.collector_id.as_str(), own.pod_uid.as_str()),
            ("uid-1/ab12", "uid-1")
        );
        for (ns, pod, uid) in [
            ("bank", "web-1", ""),
            ("shop", "db-0", ""),
            ("shop", "web-1", "uid-2"),
        ] {
            assert!(
                writer
                    .admit(claim(ns, pod, uid, "uid-1/ab12"), "k")
                    .is_err(),
                "{ns}/{pod}/{uid}"
            );
        }
        // Another collector's id lands under this writer's prefix, not in the victim's space.
        let squat = writer
            .admit(claim("shop", "web-1", "", "uid-2/victim"), "k")
            .expect("own pod");
        assert_eq!(squat.collector_id, "uid-1/uid-2/victim");
        let prefix_trick = writer
            .admit(claim("shop", "web-1", "", "uid-1x/victim"), "k")
            .expect("own pod");
        assert_eq!(prefix_trick.collector_id, "uid-1/uid-1x/victim");

        // A namespace-wide certificate: any pod name, the certificate's own id space.
        let namespace_wide = WriterIdentity {
            namespace: "shop".into(),
            pod_name: None,
            pod_uid: None,
            credential: Credential::ClientCertificate,
        };
        let key = "spiffe://prod.example/ns/shop/sa/web";
        let admitted = namespace_wide
            .admit(claim("shop", "web-9", "u9", "u9/1"), key)
            .expect("in namespace");
        assert_eq!(admitted.collector_id, format!("{key}/u9/1"));
        assert!(namespace_wide
            .admit(claim("bank", "x", "", "1"), key)
            .is_err());
    }

    #[test]
    fn a_request_without_a_principal_is_refused() {
        let request = Request::new(());
        assert_eq!(
            Principal::of(&request).expect_err("none").code(),
            tonic::Code::Unauthenticated
        );
        let mut request = Request::new(());
        request.extensions_mut().insert(Principal::local());
        assert_eq!(Principal::of(&request).expect("set"), Principal::local());
    }
}
