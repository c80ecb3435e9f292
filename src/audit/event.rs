//! The one decoder of `audit.k8s.io/v1` events, shared by the webhook, Firehose and import
//! adapters. Pure: bytes in, [`AuditRecord`]s out, no I/O.
//!
//! What is checked and what is repaired: the event's structure (required fields, types,
//! stage and level names, timestamps) is the API server's and a violation rejects the
//! event with the JSON path of the field. Fields a *client* of the API server chooses (the
//! user agent, `X-Forwarded-For` addresses, the request URI, object names, an exec command)
//! are kept but bounded — long text truncated, an address that does not parse left out —
//! because rejecting the event would let that client hide its own request. Bodies
//! (`requestObject`, `responseObject`) are read only for pod specs and RBAC objects and
//! then dropped; one that does not read leaves those facts absent and is counted.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::model::{
    AuditLevel, AuditObject, AuditRecord, AuditStage, AuditUser, BindingFacts, ExecParams,
    PodSpecFacts, RoleFacts, UnixNanos,
};

/// Deepest JSON nesting accepted anywhere in a request (Kubernetes objects stay far below).
pub const MAX_DEPTH: usize = 100;
/// Longest client-controlled text kept (user agent, names, command arguments).
pub const MAX_TEXT: usize = 4096;
const MAX_URI: usize = 16 * 1024;
/// Most items kept of a client-controlled list (addresses, groups, arguments, images).
pub const MAX_ITEMS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or JSON of the wrong shape: `path` names the field (`items[3].stage`).
    #[error("{path}: {msg}")]
    Json { path: String, msg: String },
    #[error("JSON nested deeper than {limit} levels (at byte {at})")]
    TooDeep { limit: usize, at: usize },
    #[error("{field}: {msg}")]
    Invalid { field: &'static str, msg: String },
}

/// What decoding repaired or could not read, counted per request by the adapters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Notes {
    /// Client-controlled text or lists cut to their bound.
    pub truncated: u64,
    /// Source addresses that did not parse, left out.
    pub bad_addresses: u64,
    /// Request or response bodies of pods, workloads or RBAC objects that did not read.
    pub unreadable_bodies: u64,
}

impl Notes {
    pub fn add(&mut self, other: Notes) {
        self.truncated += other.truncated;
        self.bad_addresses += other.bad_addresses;
        self.unreadable_bodies += other.unreadable_bodies;
    }
}

/// Rejects JSON nested deeper than `limit`, in one pass that skips strings: a nesting bomb
/// gets a clear error before any parser walks it.
pub fn check_depth(json: &[u8], limit: usize) -> Result<(), DecodeError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (at, &b) in json.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return Err(DecodeError::TooDeep { limit, at });
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Decodes one `Event` object of `cluster`.
pub fn decode_event(
    json: &[u8],
    cluster: &str,
    notes: &mut Notes,
) -> Result<AuditRecord, DecodeError> {
    check_depth(json, MAX_DEPTH)?;
    let raw: RawEvent = parse(json, "")?;
    convert(raw, cluster, notes)
}

/// A webhook `EventList`: the list's own shape is checked whole; each item decodes on its
/// own, so one bad item is reported without losing the others.
pub fn decode_event_list(
    json: &[u8],
    cluster: &str,
    notes: &mut Notes,
) -> Result<Vec<Result<AuditRecord, DecodeError>>, DecodeError> {
    check_depth(json, MAX_DEPTH)?;
    let list: RawList = parse(json, "")?;
    if let Some(kind) = list.kind.as_deref().filter(|k| *k != "EventList") {
        return Err(DecodeError::Invalid {
            field: "kind",
            msg: format!("{kind:?} is not an EventList"),
        });
    }
    check_version(list.api_version.as_deref(), "apiVersion")?;
    Ok(list
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let raw: RawEvent = parse(item.get().as_bytes(), &format!("items[{i}]"))?;
            convert(raw, cluster, notes).map_err(|e| at_item(i, e))
        })
        .collect())
}

fn at_item(i: usize, e: DecodeError) -> DecodeError {
    match e {
        DecodeError::Invalid { field, msg } => DecodeError::Json {
            path: format!("items[{i}].{field}"),
            msg,
        },
        other => other,
    }
}

fn check_version(version: Option<&str>, field: &'static str) -> Result<(), DecodeError> {
    match version {
        None | Some("audit.k8s.io/v1") => Ok(()),
        Some(other) => Err(DecodeError::Invalid {
            field,
            msg: format!("{other:?} is not audit.k8s.io/v1"),
        }),
    }
}

/// serde with the path of the field that failed; `prefix` names where `json` sits. The
/// document must be an object (serde would read a struct from an array by position).
pub(crate) fn parse<'a, T: Deserialize<'a>>(
    json: &'a [u8],
    prefix: &str,
) -> Result<T, DecodeError> {
    if json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(DecodeError::Json {
            path: if prefix.is_empty() {
                "(document)".into()
            } else {
                prefix.to_owned()
            },
            msg: "an array where an object belongs".into(),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.path().to_string();
        DecodeError::Json {
            path: match (prefix.is_empty(), inner.as_str()) {
                (true, ".") => "(document)".into(),
                (true, _) => inner,
                (false, ".") => prefix.to_owned(),
                (false, _) => format!("{prefix}.{inner}"),
            },
            msg: e.into_inner().to_string(),
        }
    })?;
    de.end().map_err(|e| DecodeError::Json {
        path: "(document)".into(),
        msg: e.to_string(),
    })?;
    Ok(value)
}

// === The API server's shapes (only what is read) ===

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawList<'a> {
    #[serde(default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    items: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEvent<'a> {
    #[serde(default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    level: Cow<'a, str>,
    #[serde(rename = "auditID", borrow)]
    audit_id: Cow<'a, str>,
    #[serde(borrow)]
    stage: Cow<'a, str>,
    #[serde(rename = "requestURI", borrow)]
    request_uri: Cow<'a, str>,
    #[serde(borrow)]
    verb: Cow<'a, str>,
    #[serde(default)]
    user: RawUser,
    #[serde(default)]
    impersonated_user: Option<RawUser>,
    #[serde(default, rename = "sourceIPs", deserialize_with = "nullable")]
    source_ips: Vec<String>,
    #[serde(default, borrow)]
    user_agent: Option<Cow<'a, str>>,
    #[serde(default)]
    object_ref: Option<RawObjectRef>,
    #[serde(default)]
    response_status: Option<RawStatus>,
    #[serde(default, borrow)]
    request_object: Option<&'a RawValue>,
    #[serde(default, borrow)]
    response_object: Option<&'a RawValue>,
    #[serde(borrow)]
    request_received_timestamp: Cow<'a, str>,
    #[serde(borrow)]
    stage_timestamp: Cow<'a, str>,
    #[serde(default, deserialize_with = "nullable")]
    annotations: HashMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawUser {
    #[serde(deserialize_with = "nullable")]
    username: String,
    #[serde(deserialize_with = "nullable")]
    uid: String,
    #[serde(deserialize_with = "nullable")]
    groups: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawObjectRef {
    resource: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    api_group: Option<String>,
    api_version: Option<String>,
    subresource: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawStatus {
    code: Option<u32>,
    reason: Option<String>,
}

/// `null` reads as the type's default (the API server omits empty fields, other writers
/// may spell them `null`).
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

// === Conversion ===

fn convert(
    raw: RawEvent<'_>,
    cluster: &str,
    notes: &mut Notes,
) -> Result<AuditRecord, DecodeError> {
    if let Some(kind) = raw.kind.as_deref().filter(|k| *k != "Event") {
        return Err(DecodeError::Invalid {
            field: "kind",
            msg: format!("{kind:?} is not an Event"),
        });
    }
    check_version(raw.api_version.as_deref(), "apiVersion")?;
    let invalid = |field: &'static str, msg: String| DecodeError::Invalid { field, msg };
    let stage = AuditStage::from_k8s(&raw.stage)
        .ok_or_else(|| invalid("stage", format!("unknown stage {:?}", clip(&raw.stage))))?;
    let level = AuditLevel::from_k8s(&raw.level)
        .ok_or_else(|| invalid("level", format!("unknown level {:?}", clip(&raw.level))))?;
    // The ID may come from the client's Audit-ID header: bounded, never trusted alone (the
    // store deduplicates on it together with the server's timestamp).
    if raw.audit_id.is_empty() || raw.audit_id.len() > 256 {
        return Err(invalid(
            "auditID",
            format!("{} bytes (1 to 256 expected)", raw.audit_id.len()),
        ));
    }
    let request_received = parse_time(&raw.request_received_timestamp).ok_or_else(|| {
        invalid(
            "requestReceivedTimestamp",
            time_msg(&raw.request_received_timestamp),
        )
    })?;
    let stage_time = parse_time(&raw.stage_timestamp)
        .ok_or_else(|| invalid("stageTimestamp", time_msg(&raw.stage_timestamp)))?;
    let mut text = |s: &str, max: usize| bounded(s, max, notes);
    let verb = text(&raw.verb, MAX_TEXT);
    let request_uri = text(&raw.request_uri, MAX_URI);
    let user_agent = raw.user_agent.as_deref().map(|u| text(u, MAX_TEXT));
    let annotations = raw.annotations;
    let decision = annotations
        .get("authorization.k8s.io/decision")
        .map(|d| text(d, MAX_TEXT));
    let decision_reason = annotations
        .get("authorization.k8s.io/reason")
        .map(|d| text(d, MAX_TEXT));
    let (response_code, response_reason) = match raw.response_status {
        Some(s) => (s.code, s.reason.map(|r| text(&r, MAX_TEXT))),
        None => (None, None),
    };
    let object = raw.object_ref.map(|o| {
        let mut opt = |s: Option<String>| s.filter(|s| !s.is_empty()).map(|s| text(&s, MAX_TEXT));
        AuditObject {
            resource: opt(o.resource).unwrap_or_default(),
            subresource: opt(o.subresource),
            namespace: opt(o.namespace),
            name: opt(o.name),
            api_group: opt(o.api_group),
            api_version: opt(o.api_version),
        }
    });
    let user = user_of(raw.user, notes);
    let impersonated_user = raw.impersonated_user.map(|u| user_of(u, notes));
    let mut source_ips = Vec::with_capacity(raw.source_ips.len().min(4));
    for ip in raw.source_ips.iter().take(MAX_ITEMS) {
        match ip.parse() {
            Ok(ip) => source_ips.push(ip),
            Err(_) => notes.bad_addresses += 1,
        }
    }
    if raw.source_ips.len() > MAX_ITEMS {
        notes.truncated += 1;
    }
    let mut record = AuditRecord {
        cluster: cluster.to_owned(),
        audit_id: raw.audit_id.into_owned(),
        stage,
        level,
        verb,
        request_uri,
        user,
        impersonated_user,
        source_ips,
        user_agent,
        object,
        response_code,
        response_reason,
        decision,
        decision_reason,
        request_received,
        stage_time,
        exec: None,
        pod: None,
        role: None,
        binding: None,
    };
    if record.is_pod_exec() {
        record.exec = Some(exec_params(&record.request_uri, notes));
    }
    let body = raw.request_object.or(raw.response_object);
    if let Some(body) =
        body.filter(|_| matches!(record.verb.as_str(), "create" | "update" | "patch"))
    {
        read_body(&mut record, body.get().as_bytes(), notes);
    }
    Ok(record)
}

fn user_of(u: RawUser, notes: &mut Notes) -> AuditUser {
    if u.groups.len() > MAX_ITEMS {
        notes.truncated += 1;
    }
    AuditUser {
        username: bounded(&u.username, MAX_TEXT, notes),
        uid: bounded(&u.uid, MAX_TEXT, notes),
        groups: u
            .groups
            .iter()
            .take(MAX_ITEMS)
            .map(|g| bounded(g, MAX_TEXT, notes))
            .collect(),
    }
}

/// `s` cut to at most `max` bytes at a character boundary, with a marker when cut.
fn bounded(s: &str, max: usize, notes: &mut Notes) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    notes.truncated += 1;
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…(+{} bytes)", &s[..end], s.len() - end)
}

/// A value for an error message: hostile text is shown short.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

fn time_msg(s: &str) -> String {
    format!("{:?} is not an RFC 3339 time", clip(s))
}

/// Parses an RFC 3339 time (`2024-05-01T12:34:56.123456Z`, any fraction, `Z` or an offset)
/// at or after 1970 into unix nanoseconds.
pub fn parse_time(s: &str) -> Option<UnixNanos> {
    let b = s.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        digits.iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => return None,
    };
    if !(1..=days_in_month).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut at = 19;
    let mut nanos = 0i64;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 9 {
                nanos = nanos * 10 + i64::from(b[at] - b'0');
            }
            at += 1;
        }
        if at == start {
            return None;
        }
        for _ in (at - start)..9 {
            nanos *= 10;
        }
    }
    let offset = match b.get(at)? {
        b'Z' | b'z' if at + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if at + 6 == b.len() && b[at + 3] == b':' => {
            let (h, m) = (num(at + 1..at + 3)?, num(at + 4..at + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if *sign == b'+' {
                minutes
            } else {
                -minutes
            }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset * 60;
    let total = i128::from(secs) * 1_000_000_000 + i128::from(nanos);
    u64::try_from(total).ok()
}

/// Writes unix nanoseconds as the API server does (`2024-05-01T12:34:56.123456Z`,
/// microseconds, UTC): the inverse of [`parse_time`] at that precision.
pub fn format_time(ns: UnixNanos) -> String {
    let text = crate::model::rfc3339_utc(ns / 1_000_000_000, ns % 1_000_000_000);
    // …SS.nnnnnnnnnZ → …SS.uuuuuuZ
    format!("{}Z", &text[..text.len() - 4])
}

/// The parameters of an exec or attach from its request URI's query.
fn exec_params(uri: &str, notes: &mut Notes) -> ExecParams {
    let mut params = ExecParams::default();
    let query = uri.split_once('?').map_or("", |(_, q)| q);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = form_decode(value);
        match form_decode(key).as_str() {
            "command" if params.command.len() < MAX_ITEMS => {
                params.command.push(bounded(&value, MAX_TEXT, notes))
            }
            "command" => notes.truncated += 1,
            "container" => params.container = bounded(&value, MAX_TEXT, notes),
            "tty" => params.tty = value == "true" || value == "1",
            "stdin" => params.stdin = value == "true" || value == "1",
            _ => {}
        }
    }
    params
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn form_decode(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

// === Bodies: pod specs and RBAC objects ===

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PodSpec {
    host_network: Option<bool>,
    #[serde(rename = "hostPID")]
    host_pid: Option<bool>,
    #[serde(rename = "hostIPC")]
    host_ipc: Option<bool>,
    #[serde(deserialize_with = "nullable")]
    containers: Vec<Container>,
    #[serde(deserialize_with = "nullable")]
    init_containers: Vec<Container>,
    #[serde(deserialize_with = "nullable")]
    ephemeral_containers: Vec<Container>,
    #[serde(deserialize_with = "nullable")]
    volumes: Vec<Volume>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Container {
    image: Option<String>,
    security_context: Option<SecurityContext>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SecurityContext {
    privileged: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Volume {
    host_path: Option<HostPath>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct HostPath {
    path: Option<String>,
}

/// `{spec: T}`, the path to a pod spec one level at a time.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Spec<T: Default> {
    spec: Option<T>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Template<T: Default> {
    template: Option<T>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JobTemplate<T: Default> {
    job_template: Option<T>,
}

type PodObject = Spec<PodSpec>;
type WorkloadObject = Spec<Template<Spec<PodSpec>>>;
type CronJobObject = Spec<JobTemplate<Spec<Template<Spec<PodSpec>>>>>;

#[derive(Deserialize, Default)]
#[serde(default)]
struct RoleObject {
    #[serde(deserialize_with = "nullable")]
    rules: Vec<PolicyRule>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PolicyRule {
    #[serde(deserialize_with = "nullable")]
    verbs: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    resources: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    api_groups: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct BindingObject {
    role_ref: Option<RoleRef>,
    #[serde(deserialize_with = "nullable")]
    subjects: Vec<Subject>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RoleRef {
    kind: String,
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Subject {
    kind: String,
    name: String,
    namespace: Option<String>,
}

/// Reads the facts of a pod, workload or RBAC body. A JSON patch (an array) or a body of
/// another shape leaves them absent, counted.
fn read_body(record: &mut AuditRecord, body: &[u8], notes: &mut Notes) {
    let Some(object) = &record.object else { return };
    // serde reads a struct from an array too: a JSON patch must not pass for an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        if read_facts_of(object) {
            notes.unreadable_bodies += 1;
        }
        return;
    }
    let group = object.api_group.as_deref().unwrap_or("");
    let sub = object.subresource.as_deref();
    let pod_spec = |spec: Option<PodSpec>| spec.unwrap_or_default();
    let read: Result<(), serde_json::Error> = match (group, object.resource.as_str(), sub) {
        ("", "pods", None | Some("ephemeralcontainers")) => {
            serde_json::from_slice::<PodObject>(body)
                .map(|o| record.pod = Some(facts(pod_spec(o.spec), notes)))
        }
        ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets", None)
        | ("batch", "jobs", None)
        | ("", "replicationcontrollers", None) => serde_json::from_slice::<WorkloadObject>(body)
            .map(|o| {
                let spec = o.spec.and_then(|s| s.template).and_then(|t| t.spec);
                record.pod = Some(facts(pod_spec(spec), notes));
            }),
        ("batch", "cronjobs", None) => serde_json::from_slice::<CronJobObject>(body).map(|o| {
            let spec = o
                .spec
                .and_then(|s| s.job_template)
                .and_then(|j| j.spec)
                .and_then(|s| s.template)
                .and_then(|t| t.spec);
            record.pod = Some(facts(pod_spec(spec), notes));
        }),
        ("rbac.authorization.k8s.io", "roles" | "clusterroles", None) => {
            serde_json::from_slice::<RoleObject>(body).map(|o| record.role = Some(role_facts(&o)))
        }
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings", None) => {
            serde_json::from_slice::<BindingObject>(body)
                .map(|o| record.binding = Some(binding_facts(o, notes)))
        }
        _ => Ok(()),
    };
    if read.is_err() {
        notes.unreadable_bodies += 1;
    }
}

/// Whether [`read_body`] reads facts from this object's bodies.
fn read_facts_of(object: &AuditObject) -> bool {
    let group = object.api_group.as_deref().unwrap_or("");
    matches!(
        (
            group,
            object.resource.as_str(),
            object.subresource.as_deref()
        ),
        ("", "pods", None | Some("ephemeralcontainers"))
            | (
                "apps",
                "deployments" | "replicasets" | "statefulsets" | "daemonsets",
                None
            )
            | ("batch", "jobs" | "cronjobs", None)
            | ("", "replicationcontrollers", None)
            | (
                "rbac.authorization.k8s.io",
                "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings",
                None
            )
    )
}

fn facts(spec: PodSpec, notes: &mut Notes) -> PodSpecFacts {
    let containers = || {
        spec.containers
            .iter()
            .chain(&spec.init_containers)
            .chain(&spec.ephemeral_containers)
    };
    let mut images: Vec<String> = Vec::new();
    for image in containers().filter_map(|c| c.image.as_deref()) {
        if images.len() < MAX_ITEMS && !images.iter().any(|i| i == image) {
            images.push(bounded(image, MAX_TEXT, notes));
        }
    }
    let host_paths = spec
        .volumes
        .iter()
        .filter_map(|v| v.host_path.as_ref()?.path.as_deref())
        .take(MAX_ITEMS)
        .map(|p| bounded(p, MAX_TEXT, notes))
        .collect();
    PodSpecFacts {
        privileged: containers().any(|c| {
            c.security_context
                .as_ref()
                .is_some_and(|s| s.privileged == Some(true))
        }),
        host_network: spec.host_network == Some(true),
        host_pid: spec.host_pid == Some(true),
        host_ipc: spec.host_ipc == Some(true),
        host_paths,
        images,
    }
}

fn role_facts(role: &RoleObject) -> RoleFacts {
    let has = |list: &[String], wanted: &[&str]| list.iter().any(|v| wanted.contains(&v.as_str()));
    RoleFacts {
        wildcard: role.rules.iter().any(|r| {
            has(&r.verbs, &["*"]) || has(&r.resources, &["*"]) || has(&r.api_groups, &["*"])
        }),
        pod_exec: role.rules.iter().any(|r| {
            has(&r.api_groups, &["", "*"])
                && has(&r.resources, &["pods/exec", "pods/attach", "pods/*", "*"])
                && has(&r.verbs, &["create", "get", "*"])
        }),
    }
}

fn binding_facts(b: BindingObject, notes: &mut Notes) -> BindingFacts {
    let role = b.role_ref.unwrap_or_default();
    BindingFacts {
        role_kind: bounded(&role.kind, MAX_TEXT, notes),
        role_name: bounded(&role.name, MAX_TEXT, notes),
        subjects: b
            .subjects
            .iter()
            .take(MAX_ITEMS)
            .map(|s| {
                let text = format!(
                    "{}:{}/{}",
                    s.kind,
                    s.namespace.as_deref().unwrap_or(""),
                    s.name
                );
                bounded(&text, MAX_TEXT, notes)
            })
            .collect(),
    }
}

#[cfg(test)]
pub(crate) mod tests;
