//! Who is calling. Every request the aggregator serves carries one verified [`Principal`]
//! in its extensions, put there by authentication before any service runs; each service
//! authorizes with it: Ingest takes writers, Query/Subscribe/Investigate take readers, and a
//! reader sees only the namespaces it was granted ([`NamespaceScope`]).
//!
//! The principal's [`key`](Principal::key) is the stable name of the identity behind a
//! request: per-identity limits, logs and audit key on it.

use std::collections::BTreeSet;
use std::sync::Arc;

use tonic::{Request, Status};

// === Principal ===

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    key: Arc<str>,
    kind: PrincipalKind,
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

/// Which kind of credential was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A Kubernetes projected service-account token (JWT).
    ServiceAccountToken,
    /// A client certificate with a SPIFFE URI SAN.
    ClientCertificate,
    /// A bearer token from the readers file.
    ReaderToken,
    /// The shared token or none (loopback only).
    Local,
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
        }
    }

    pub fn writer(key: impl Into<Arc<str>>, identity: WriterIdentity) -> Principal {
        Principal {
            key: key.into(),
            kind: PrincipalKind::Writer(identity),
        }
    }

    pub fn reader(key: impl Into<Arc<str>>, grant: ReaderGrant) -> Principal {
        Principal {
            key: key.into(),
            kind: PrincipalKind::Reader(grant),
        }
    }

    /// Stable and unique per identity: `local`, `sa:<namespace>/<pod>/<pod uid>`,
    /// `spiffe://…`, `reader:<name>`.
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
