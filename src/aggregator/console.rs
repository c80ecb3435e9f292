//! The web console (`--ui-listen`): server-rendered HTML over the same store and the same
//! Investigate answers as the gRPC API ([`Investigator`]), for an analyst who would rather
//! look than compose flags. Every page has a scope time and a baseline in its URL
//! ([`scope`]), is rendered for a signed-in [`auth::Viewer`] who sees only its namespaces,
//! and works without JavaScript; htmx keeps the alerts page live, uPlot draws the time
//! series and Cytoscape.js the service map, all embedded ([`assets`]).
//!
//! One file per page or concern: `overview`, `alerts`, `entities` (pod, process, remote
//! endpoint), `map`, `search`, `rules_page`; `render` is the shell and the value rendering.

pub mod alerts;
pub mod assets;
pub mod auth;
pub mod entities;
pub mod map;
pub mod overview;
pub mod render;
pub mod rules_page;
pub mod scope;
pub mod search;
pub mod tables;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use maud::{html, Markup, DOCTYPE};
use thiserror::Error;

use crate::aggregator::detect::LoadedRules;
use crate::aggregator::investigate::{Investigator, Question};
use crate::aggregator::store::{EventQuery, StoreError};
use crate::aggregator::Hub;
use crate::model::{now_ns, RecordKind};
use crate::telemetry::aggregator::{ConsoleBusy, ConsolePageFailed, ConsoleSigninRejected};
use crate::telemetry::InternalEvent;
use auth::{Credentials, Sessions, Viewer};
use render::Page;
use scope::{ScopeParams, TimeScope};

/// The Content-Security-Policy of every response: scripts and styles only from the console
/// itself, no inline script or style, no framing, forms only to itself.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// Page computations (store scans) running at once; more wait, then get "busy".
const CONCURRENT_PAGES: usize = 4;
const BUSY_AFTER: Duration = Duration::from_secs(20);

pub struct ConsoleConfig {
    pub credentials: Credentials,
    pub session_idle: Duration,
    /// Set the cookie's `Secure` attribute (served over TLS, or behind a TLS proxy).
    pub secure_cookies: bool,
    pub default_baseline_hours: u64,
}

/// What every handler shares.
pub struct Console {
    investigator: Investigator,
    hub: Arc<Hub>,
    rules: Option<LoadedRules>,
    sessions: Sessions,
    config: ConsoleConfig,
    pages: tokio::sync::Semaphore,
}

#[derive(Debug, Error)]
pub enum PageError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("reading the store: {0}")]
    Store(#[from] StoreError),
    #[error("the console is busy with other questions; try again in a moment")]
    Busy,
    #[error("the page failed: {0}")]
    Failed(String),
}

impl PageError {
    fn status(&self) -> StatusCode {
        match self {
            PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PageError::NotFound(_) => StatusCode::NOT_FOUND,
            PageError::Store(_) | PageError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            PageError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// A request's query parameters (the last of repeated names wins).
#[derive(Debug, Clone, Default)]
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn scope(&self) -> ScopeParams {
        let owned = |k: &str| self.get(k).map(str::to_owned);
        ScopeParams {
            last: owned("last"),
            from: owned("from"),
            to: owned("to"),
            baseline: owned("baseline"),
        }
    }

    pub fn page(&self) -> Result<usize, PageError> {
        match self.get("page") {
            None => Ok(0),
            Some(p) => p
                .parse::<usize>()
                .ok()
                .filter(|n| *n < 100_000)
                .ok_or_else(|| PageError::BadRequest(format!("page {p:?} is not a page number"))),
        }
    }
}

/// What a page is computed from (on a blocking thread).
pub struct Ctx {
    pub investigator: Investigator,
    pub viewer: Viewer,
    pub scope: TimeScope,
    pub params: Params,
    pub rules: Option<LoadedRules>,
    pub now: u64,
}

impl Ctx {
    /// A question over the scope for this viewer, or `None` when it may see nothing asked.
    pub fn question(&self, pods: &[String], namespaces: &[String]) -> Option<Question> {
        let namespaces = self.viewer.namespaces_for(namespaces)?;
        Some(Question {
            query: EventQuery {
                kinds: Vec::new(),
                pods: pods.to_vec(),
                namespaces,
                since: self.scope.start,
                until: self.scope.until(),
                limit: 0,
            },
            flows: Default::default(),
            peer_namespaces: self.viewer.visible().unwrap_or_default(),
        })
    }

    /// The pod and namespace a page names (both required), checked against the viewer.
    pub fn pod(&self) -> Result<(String, String), PageError> {
        let (Some(ns), Some(pod)) = (self.params.get("ns"), self.params.get("pod")) else {
            return Err(PageError::BadRequest("ns and pod are required".into()));
        };
        if !self.viewer.sees(ns) {
            // The same answer as for a pod that does not exist: no probing of other namespaces.
            return Err(PageError::NotFound(
                "no such pod among the namespaces you may see".to_string(),
            ));
        }
        Ok((ns.to_owned(), pod.to_owned()))
    }

    /// Alerts of the scope the viewer may see (optionally of some pods), oldest first.
    pub fn alerts(
        &self,
        pods: &[String],
        namespaces: &[String],
    ) -> Result<Vec<(u64, crate::model::AlertRecord)>, PageError> {
        let Some(q) = self.question(pods, namespaces) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        self.investigator.store().scan(
            &EventQuery {
                kinds: vec![RecordKind::Alert],
                ..q.query
            },
            &mut |e| {
                if let crate::model::Record::Alert(a) = e.record {
                    // Alerts are stored under their pod's identity; checked again all the same.
                    if self.viewer.sees(&a.pod_namespace) {
                        out.push((e.received_at, a));
                    }
                }
                out.len() < 100_000
            },
        )?;
        Ok(out)
    }
}

impl Console {
    pub fn new(
        investigator: Investigator,
        hub: Arc<Hub>,
        rules: Option<LoadedRules>,
        config: ConsoleConfig,
    ) -> Console {
        Console {
            investigator,
            hub,
            rules,
            sessions: Sessions::new(config.session_idle),
            config,
            pages: tokio::sync::Semaphore::new(CONCURRENT_PAGES),
        }
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/", page_route(overview::build))
            .route("/alerts", page_route(alerts::groups_page))
            .route("/alerts/live", get(alerts::live_handler))
            .route("/alerts/group", page_route(alerts::group_page))
            .route("/alert", page_route(alerts::alert_page))
            .route("/pod", page_route(entities::pod_page))
            .route("/process", page_route(entities::process_page))
            .route("/endpoint", page_route(entities::endpoint_page))
            .route("/map", page_route(map::build))
            .route("/search", page_route(search::build))
            .route("/rules", page_route(rules_page::build))
            .route("/signin", get(signin_page).post(signin))
            .route("/signout", post(signout))
            .route("/static/{digest}/{name}", get(asset))
            .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
            .fallback(not_found)
            .layer(axum::middleware::map_response(security_headers))
            .with_state(self)
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Starts a session for a principal verified elsewhere (sign-in with a credential goes
    /// through [`auth::sign_in`]); `None` for a principal that may not read.
    pub fn start_session(&self, principal: crate::aggregator::auth::Principal) -> Option<String> {
        self.sessions.start(Viewer::new(principal)?)
    }

    fn viewer(&self, headers: &HeaderMap) -> Option<Viewer> {
        self.sessions.viewer(&auth::session_id(headers)?)
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Not no-referrer: with it a browser sends `Origin: null` on same-origin form posts,
    // which the sign-in's origin check must refuse.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// A request checked: who asks, over which scope.
pub struct Prepared {
    pub viewer: Viewer,
    pub scope: TimeScope,
    pub params: Params,
    pub now: u64,
}

/// Checks the session and the scope. `Err` is the response to send instead: the sign-in
/// page for a page request, 401 for a fragment, or the scope's error.
fn prepare(
    console: &Console,
    headers: &HeaderMap,
    uri: &Uri,
    params: HashMap<String, String>,
    whole_page: bool,
) -> Result<Prepared, Box<Response>> {
    let Some(viewer) = console.viewer(headers) else {
        return Err(Box::new(if whole_page {
            to_signin(uri)
        } else {
            (StatusCode::UNAUTHORIZED, "signed out: reload the page").into_response()
        }));
    };
    let params = Params(params);
    let now = now_ns();
    match TimeScope::parse(&params.scope(), now) {
        Ok(mut scope) => {
            if params.get("baseline").is_none() {
                scope.baseline_hours = console.config.default_baseline_hours;
            }
            Ok(Prepared {
                viewer,
                scope,
                params,
                now,
            })
        }
        Err(e) => {
            let fallback = TimeScope::parse(&ScopeParams::default(), now).unwrap_or(TimeScope {
                start: 0,
                end: scope::HOUR_NS,
                last_hours: None,
                baseline_hours: scope::DEFAULT_BASELINE_HOURS,
            });
            Err(Box::new(error_page(
                &viewer,
                &fallback,
                PageError::BadRequest(e.to_string()),
            )))
        }
    }
}

/// Runs `work` on a blocking thread, at most [`CONCURRENT_PAGES`] at once.
pub async fn compute<T: Send + 'static>(
    console: &Console,
    prepared: &Prepared,
    work: impl FnOnce(&Ctx) -> Result<T, PageError> + Send + 'static,
) -> Result<T, PageError> {
    let Ok(Ok(permit)) = tokio::time::timeout(BUSY_AFTER, console.pages.acquire()).await else {
        ConsoleBusy.emit();
        return Err(PageError::Busy);
    };
    let ctx = Ctx {
        investigator: console.investigator.clone(),
        viewer: prepared.viewer.clone(),
        scope: prepared.scope,
        params: prepared.params.clone(),
        rules: console.rules.clone(),
        now: prepared.now,
    };
    let result = tokio::task::spawn_blocking(move || work(&ctx)).await;
    drop(permit);
    result.map_err(|join| PageError::Failed(join.to_string()))?
}

/// The route of a whole page: `build` runs for the signed-in viewer, through [`page`].
fn page_route(build: fn(&Ctx) -> Result<Page, PageError>) -> MethodRouter<Arc<Console>> {
    get(
        move |State(console): State<Arc<Console>>,
              headers: HeaderMap,
              uri: Uri,
              Query(q): Query<HashMap<String, String>>| {
            page(console, headers, uri, q, build)
        },
    )
}

/// Renders a page for the signed-in viewer, with the server time in `Server-Timing`.
pub async fn page(
    console: Arc<Console>,
    headers: HeaderMap,
    uri: Uri,
    params: HashMap<String, String>,
    work: impl FnOnce(&Ctx) -> Result<Page, PageError> + Send + 'static,
) -> Response {
    let started = Instant::now();
    let prepared = match prepare(&console, &headers, &uri, params, true) {
        Ok(p) => p,
        Err(response) => return *response,
    };
    let mut response = match compute(&console, &prepared, work).await {
        Ok(page) => Html(render::shell(page, &prepared.viewer, &prepared.scope).into_string())
            .into_response(),
        Err(e) => error_page(&prepared.viewer, &prepared.scope, e),
    };
    server_timing(&mut response, started);
    response
}

/// Renders part of a page (for htmx) for the signed-in viewer.
pub async fn fragment(
    console: Arc<Console>,
    headers: HeaderMap,
    uri: Uri,
    params: HashMap<String, String>,
    work: impl FnOnce(&Ctx) -> Result<Markup, PageError> + Send + 'static,
) -> Response {
    let started = Instant::now();
    let prepared = match prepare(&console, &headers, &uri, params, false) {
        Ok(p) => p,
        Err(response) => return *response,
    };
    let mut response = match compute(&console, &prepared, work).await {
        Ok(markup) => Html(markup.into_string()).into_response(),
        Err(e) => (
            e.status(),
            Html(html! { p.error role="alert" { (e.to_string()) } }.into_string()),
        )
            .into_response(),
    };
    server_timing(&mut response, started);
    response
}

pub fn server_timing(response: &mut Response, started: Instant) {
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={ms:.1}")) {
        response.headers_mut().insert("server-timing", v);
    }
}

fn error_page(viewer: &Viewer, scope: &TimeScope, e: PageError) -> Response {
    if matches!(e, PageError::Store(_) | PageError::Failed(_)) {
        ConsolePageFailed { error: &e }.emit();
    }
    let status = e.status();
    let body = render::shell(
        Page {
            title: match status {
                StatusCode::NOT_FOUND => "Not found".into(),
                StatusCode::BAD_REQUEST => "Cannot show this".into(),
                _ => "Something went wrong".into(),
            },
            nav: render::Nav::Entity,
            path: "/",
            keep: Vec::new(),
            body: html! { p.error role="alert" { (e.to_string()) } },
            scripts: &[],
        },
        viewer,
        scope,
    );
    (status, Html(body.into_string())).into_response()
}

fn to_signin(uri: &Uri) -> Response {
    let next = uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| p.starts_with('/') && !p.starts_with("//"))
        .unwrap_or("/");
    let mut target = String::from("/signin?next=");
    render::percent_encode(&mut target, next);
    Redirect::to(&target).into_response()
}

/// A `next` target that stays on this console (a path, not `//host` or a scheme).
fn local_target(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/",
    }
}

fn signin_form(next: &str, failed: bool) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Sign in · procflow" }
                link rel="stylesheet" href=(assets::url("app.css"));
            }
            body {
                main.signin #main {
                    h1 { "procflow" }
                    p { "Sign in with your reader credential." }
                    @if failed { p.error role="alert" { "That credential was not accepted." } }
                    form method="post" action="/signin" {
                        input type="hidden" name="next" value=(next);
                        label for="credential" { "Credential" }
                        input #credential type="password" name="credential" autocomplete="current-password" required autofocus;
                        button type="submit" { "Sign in" }
                    }
                }
            }
        }
    }
}

async fn signin_page(Query(q): Query<HashMap<String, String>>) -> Response {
    Html(signin_form(local_target(q.get("next").map(String::as_str)), false).into_string())
        .into_response()
}

#[derive(serde::Deserialize)]
struct SignIn {
    credential: String,
    #[serde(default)]
    next: String,
}

/// A cross-site form post carries another origin: refused (the session cookie is
/// SameSite=Strict too; this also stops logging a victim into someone else's session).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((origin_host, host), (Some(o), Some(h)) if o == h)
}

async fn signin(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    if !same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-origin sign-in refused").into_response();
    }
    let next = local_target(Some(&form.next)).to_owned();
    match auth::sign_in(&console.config.credentials, &form.credential).await {
        Some(viewer) => {
            tracing::info!(viewer = %viewer.name(), "console sign-in");
            let Some(id) = console.sessions.start(viewer) else {
                return (StatusCode::INTERNAL_SERVER_ERROR, "no session").into_response();
            };
            let mut response = Redirect::to(&next).into_response();
            if let Ok(v) =
                HeaderValue::from_str(&auth::session_cookie(&id, console.config.secure_cookies))
            {
                response.headers_mut().insert(header::SET_COOKIE, v);
            }
            response
        }
        None => {
            ConsoleSigninRejected.emit();
            (
                StatusCode::UNAUTHORIZED,
                Html(signin_form(&next, true).into_string()),
            )
                .into_response()
        }
    }
}

async fn signout(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-origin sign-out refused").into_response();
    }
    if let Some(id) = auth::session_id(&headers) {
        console.sessions.end(&id);
    }
    let mut response = Redirect::to("/signin").into_response();
    if let Ok(v) = HeaderValue::from_str(&auth::cleared_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

async fn asset(Path((digest, name)): Path<(String, String)>) -> Response {
    match assets::get(&digest, &name) {
        Some((content_type, body)) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

/// Binds and serves the console on `addr` until `shutdown`.
pub async fn start(
    console: Arc<Console>,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let warmer = tokio::spawn(warm_default_baseline(console.clone()));
    let handle = tokio::spawn(async move {
        if let Err(error) = console.serve(listener, shutdown).await {
            tracing::error!(%error, "console stopped");
        }
        warmer.abort();
    });
    Ok((local, handle))
}

/// Computes the overview's default question (every namespace, the last 24 hours, the
/// default baseline) at start and just after each hour turns, so the first analyst of the
/// hour finds its baseline summarized (`Investigator` keeps it for the hour). Runs one
/// question at a time on a blocking thread, under the same bound as the pages.
async fn warm_default_baseline(console: Arc<Console>) {
    loop {
        let now = now_ns();
        if let Ok(mut scope) = TimeScope::parse(&ScopeParams::default(), now) {
            scope.baseline_hours = console.config.default_baseline_hours;
            if let Ok(permit) = console.pages.acquire().await {
                let investigator = console.investigator.clone();
                let started = Instant::now();
                let question = Question {
                    query: EventQuery {
                        since: scope.start,
                        until: scope.until(),
                        ..EventQuery::default()
                    },
                    ..Question::default()
                };
                let done = tokio::task::spawn_blocking(move || {
                    investigator.compare(&question, scope.baseline_start(), 10, &mut |_| {})
                })
                .await;
                drop(permit);
                match done {
                    Ok(Ok(_)) => tracing::debug!(
                        ms = started.elapsed().as_millis() as u64,
                        "console: default baseline summarized"
                    ),
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "console: summarizing the default baseline failed")
                    }
                    Err(_) => {}
                }
            }
        }
        // A minute into the next hour: the scope has moved and its baseline with it.
        let into_hour = now_ns() % scope::HOUR_NS;
        let wait = scope::HOUR_NS - into_hour + 60_000_000_000;
        tokio::time::sleep(Duration::from_nanos(wait)).await;
    }
}
