//! Who is looking: sign-in with a reader credential, sessions held in memory and named by a
//! random id in an HttpOnly SameSite=Strict cookie, and the [`Viewer`] every page is
//! rendered for. A viewer limited to some namespaces sees nothing of the others: every
//! question the console asks carries [`Viewer::namespaces_for`].
//!
//! Today's credential is the aggregator's bearer token, which grants everything (an admin);
//! [`sign_in`] is the one place that turns a credential into a viewer, so the reader roles
//! of issue 20 replace it there.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::aggregator::auth::{Authenticator, NamespaceScope, Principal};
use ring::rand::{SecureRandom, SystemRandom};

/// The reader the console renders for: a verified [`Principal`] allowed to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    principal: Principal,
    scope: NamespaceScope,
}

impl Viewer {
    /// `None` for a principal that may not read (a writer).
    pub fn new(principal: Principal) -> Option<Viewer> {
        let scope = principal.read_scope().ok()?;
        Some(Viewer { principal, scope })
    }

    pub fn name(&self) -> &str {
        self.principal.key()
    }

    pub fn sees(&self, namespace: &str) -> bool {
        self.scope.allows(namespace)
    }

    /// The namespace list of a store question: the ones asked for (empty: all) within the
    /// grant. `None` when that is nothing (an empty store filter would mean "everything", so
    /// the caller answers with nothing instead of asking).
    pub fn namespaces_for(&self, asked: &[String]) -> Option<Vec<String>> {
        self.scope.restrict(asked.to_vec()).ok()
    }

    /// Everything this viewer may see as a store or hub filter (empty: all); `None`: nothing.
    pub fn visible(&self) -> Option<Vec<String>> {
        self.namespaces_for(&[])
    }

    pub fn describe(&self) -> String {
        match (&self.scope, self.principal.require_admin().is_ok()) {
            (NamespaceScope::All, true) => "admin, all namespaces".into(),
            (NamespaceScope::All, false) => "viewer, all namespaces".into(),
            (NamespaceScope::Only(set), _) => format!(
                "viewer of {}",
                set.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

/// What a presented credential is checked against: the aggregator's own authentication,
/// as a reader.
#[derive(Clone)]
pub struct Credentials {
    auth: Arc<Authenticator>,
}

impl Credentials {
    pub fn new(auth: Arc<Authenticator>) -> Credentials {
        Credentials { auth }
    }

    /// The shared token alone (as on a loopback aggregator): whoever presents it is the
    /// local principal. An empty token configures nothing.
    pub fn bearer_token(token: Option<&str>) -> Credentials {
        let shared = token.and_then(|t| crate::transport::Token::new(t).ok());
        Credentials::new(Arc::new(Authenticator::new(shared, None, None, None, true)))
    }

    /// No credential is configured, so nobody can sign in.
    pub fn is_empty(&self) -> bool {
        self.auth.is_open()
    }
}

/// The one place a credential becomes a viewer: the gRPC side's authentication, for a
/// reader (tokens compared digest to digest; refusals counted and logged sampled there).
pub async fn sign_in(credentials: &Credentials, presented: &str) -> Option<Viewer> {
    if presented.is_empty() || credentials.is_empty() {
        return None;
    }
    let principal = credentials.auth.reader_for_token(presented).await.ok()?;
    Viewer::new(principal)
}

pub const COOKIE: &str = "procflow_session";
/// Live sessions kept at most; signing in beyond it ends the oldest.
const MAX_SESSIONS: usize = 10_000;

struct Session {
    viewer: Viewer,
    created: Instant,
    last_used: Instant,
}

/// Sessions in memory (a restart signs everyone out), by random id.
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
    idle: Duration,
    absolute: Duration,
    random: SystemRandom,
}

impl Sessions {
    pub fn new(idle: Duration) -> Sessions {
        Sessions {
            by_id: Mutex::new(HashMap::new()),
            idle,
            absolute: idle.max(Duration::from_secs(12 * 3600)),
            random: SystemRandom::new(),
        }
    }

    /// Starts a session; its id (256 random bits, hex) goes in the cookie.
    pub fn start(&self, viewer: Viewer) -> Option<String> {
        let mut raw = [0u8; 32];
        self.random.fill(&mut raw).ok()?;
        let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut map = self.by_id.lock().ok()?;
        map.retain(|_, s| self.alive(s, now));
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            id.clone(),
            Session {
                viewer,
                created: now,
                last_used: now,
            },
        );
        Some(id)
    }

    fn alive(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last_used) < self.idle && now.duration_since(s.created) < self.absolute
    }

    /// The viewer of a live session.
    pub fn viewer(&self, id: &str) -> Option<Viewer> {
        let now = Instant::now();
        let mut map = self.by_id.lock().ok()?;
        let alive = map.get(id).map(|s| self.alive(s, now))?;
        if !alive {
            map.remove(id);
            return None;
        }
        let s = map.get_mut(id)?;
        s.last_used = now;
        Some(s.viewer.clone())
    }

    pub fn end(&self, id: &str) {
        if let Ok(mut map) = self.by_id.lock() {
            map.remove(id);
        }
    }
}

/// The session id in a request's `Cookie` headers.
pub fn session_id(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The `Set-Cookie` value of a session (`secure` when served over TLS).
pub fn session_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

pub fn cleared_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_credential_signs_in() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let sign_in = |c: &Credentials, p: &str| runtime.block_on(sign_in(c, p));
        let creds = Credentials::bearer_token(Some("s3cret"));
        assert!(sign_in(&creds, "s3cret").is_some_and(|v| v.describe() == "admin, all namespaces"));
        for wrong in ["", "s3cre", "s3cret ", "S3CRET", "s3cret\0"] {
            assert!(sign_in(&creds, wrong).is_none(), "{wrong:?}");
        }
        // No credential configured: nobody signs in, not even with an empty one.
        let none = Credentials::bearer_token(Some(""));
        assert!(none.is_empty());
        assert!(sign_in(&none, "").is_none());
    }

    fn viewer_of(namespaces: &[&str]) -> Viewer {
        use crate::aggregator::auth::{ReaderGrant, Role};
        Viewer::new(Principal::reader(
            "reader:ana",
            ReaderGrant {
                role: Role::Viewer,
                namespaces: NamespaceScope::only(namespaces.iter().copied()),
            },
        ))
        .expect("a reader reads")
    }

    #[test]
    fn a_viewer_asks_only_for_its_namespaces() {
        let viewer = viewer_of(&["a"]);
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(viewer.visible(), Some(s(&["a"])));
        assert_eq!(viewer.namespaces_for(&s(&["a"])), Some(s(&["a"])));
        assert_eq!(
            viewer.namespaces_for(&s(&["b"])),
            None,
            "nothing, not everything"
        );
        assert!(viewer.sees("a") && !viewer.sees("b"));
        assert_eq!(viewer_of(&[]).visible(), None);
        let local = Viewer::new(Principal::local()).expect("reads");
        assert_eq!(local.visible(), Some(Vec::new()));
        assert_eq!(local.namespaces_for(&s(&["b"])), Some(s(&["b"])));
        assert_eq!(viewer.describe(), "viewer of a");
    }

    #[test]
    fn sessions_expire_and_ids_are_random_and_checked() {
        let sessions = Sessions::new(Duration::from_millis(200));
        let viewer = Viewer::new(Principal::local()).expect("reads");
        let a = sessions.start(viewer.clone()).expect("id");
        let b = sessions.start(viewer.clone()).expect("id");
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(sessions.viewer(&a), Some(viewer));
        sessions.end(&a);
        assert_eq!(sessions.viewer(&a), None);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(sessions.viewer(&b), None, "idle session expired");

        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            axum::http::header::COOKIE,
            format!("other=1; {COOKIE}={b}").parse().expect("header"),
        );
        assert_eq!(session_id(&headers), Some(b));
        headers.insert(
            axum::http::header::COOKIE,
            format!("{COOKIE}=../../etc").parse().expect("header"),
        );
        assert_eq!(session_id(&headers), None);
        let cookie = session_cookie("ab", false);
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(session_cookie("ab", true).ends_with("; Secure"));
    }
}
