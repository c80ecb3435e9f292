//! Kubernetes API server audit events (`audit.k8s.io/v1`) as the aggregator keeps them, and
//! the exec attribution an alert carries once an exec request was joined with the process
//! tree it started.
//!
//! An [`AuditRecord`] holds what rules, joins and investigations read. The request and
//! response bodies of an event are read for a pod spec or an RBAC object ([`PodSpecFacts`],
//! [`RoleFacts`], [`BindingFacts`]) and then dropped: a secret's data is never kept.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::UnixNanos;

/// The stage of a request an event was written at; an audit ID repeats across stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuditStage {
    RequestReceived,
    /// Only for long-running requests (exec, attach, port-forward, watch).
    ResponseStarted,
    ResponseComplete,
    Panic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuditLevel {
    None,
    Metadata,
    Request,
    RequestResponse,
}

impl AuditStage {
    pub const VARIANTS: &'static [AuditStage] = &[
        AuditStage::RequestReceived,
        AuditStage::ResponseStarted,
        AuditStage::ResponseComplete,
        AuditStage::Panic,
    ];
    /// What the stage serializes to (JSON and the rule language), by ordinal.
    pub const NAMES: &'static [&'static str] = &[
        "REQUEST_RECEIVED",
        "RESPONSE_STARTED",
        "RESPONSE_COMPLETE",
        "PANIC",
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES[usize::from(self.ordinal())]
    }

    pub fn ordinal(self) -> u8 {
        self as u8
    }

    /// The API server's own spelling (`ResponseComplete`).
    pub fn from_k8s(name: &str) -> Option<AuditStage> {
        Some(match name {
            "RequestReceived" => AuditStage::RequestReceived,
            "ResponseStarted" => AuditStage::ResponseStarted,
            "ResponseComplete" => AuditStage::ResponseComplete,
            "Panic" => AuditStage::Panic,
            _ => return None,
        })
    }
}

impl AuditLevel {
    pub fn from_k8s(name: &str) -> Option<AuditLevel> {
        Some(match name {
            "None" => AuditLevel::None,
            "Metadata" => AuditLevel::Metadata,
            "Request" => AuditLevel::Request,
            "RequestResponse" => AuditLevel::RequestResponse,
            _ => return None,
        })
    }
}

/// An authenticated (or impersonated) user.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AuditUser {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// The object a request was about.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AuditObject {
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub api_group: Option<String>,
    pub api_version: Option<String>,
}

/// The parameters of a `pods/exec` or `pods/attach` request, from its request URI.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExecParams {
    pub container: String,
    pub command: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
}

/// What a created or changed pod (or a workload's pod template) asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodSpecFacts {
    /// Any container, init or ephemeral container privileged.
    pub privileged: bool,
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    pub host_paths: Vec<String>,
    pub images: Vec<String>,
}

/// A Role or ClusterRole created or changed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RoleFacts {
    /// A rule with `*` among its verbs, resources or API groups.
    pub wildcard: bool,
    /// A rule that allows creating `pods/exec` or `pods/attach` (or every pod subresource).
    pub pod_exec: bool,
}

/// A RoleBinding or ClusterRoleBinding created or changed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BindingFacts {
    pub role_kind: String,
    pub role_name: String,
    /// `Kind:namespace/name` of each subject (namespace empty for users and groups).
    pub subjects: Vec<String>,
}

/// One audit event of one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The cluster whose credential delivered the event (events carry no cluster identity).
    pub cluster: String,
    pub audit_id: String,
    pub stage: AuditStage,
    pub level: AuditLevel,
    pub verb: String,
    pub request_uri: String,
    pub user: AuditUser,
    pub impersonated_user: Option<AuditUser>,
    pub source_ips: Vec<IpAddr>,
    pub user_agent: Option<String>,
    pub object: Option<AuditObject>,
    pub response_code: Option<u32>,
    pub response_reason: Option<String>,
    /// The `authorization.k8s.io/decision` annotation (`allow`, `forbid`).
    pub decision: Option<String>,
    pub decision_reason: Option<String>,
    pub request_received: UnixNanos,
    pub stage_time: UnixNanos,
    pub exec: Option<ExecParams>,
    pub pod: Option<PodSpecFacts>,
    pub role: Option<RoleFacts>,
    pub binding: Option<BindingFacts>,
}

/// How a request ended, in Detective's four classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// 1xx (an upgraded exec stream) and 2xx.
    Success,
    /// 401.
    Unauthorized,
    /// 403.
    Forbidden,
    /// Any other code, or none (a panic).
    Failed,
}

impl Outcome {
    pub const VARIANTS: &'static [Outcome] = &[
        Outcome::Success,
        Outcome::Unauthorized,
        Outcome::Forbidden,
        Outcome::Failed,
    ];
    /// What the outcome serializes to (JSON and the rule language), by ordinal.
    pub const NAMES: &'static [&'static str] = &["success", "unauthorized", "forbidden", "failed"];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[usize::from(self.ordinal())]
    }

    pub fn ordinal(self) -> u8 {
        self as u8
    }
}

impl AuditRecord {
    /// The request's outcome from its response code.
    pub fn outcome(&self) -> Outcome {
        match self.response_code {
            Some(100..=299) => Outcome::Success,
            Some(401) => Outcome::Unauthorized,
            Some(403) => Outcome::Forbidden,
            _ => Outcome::Failed,
        }
    }

    /// `resource` or `resource/subresource`, or the request path for a non-resource URL.
    pub fn resource_path(&self) -> String {
        match &self.object {
            Some(o) => match &o.subresource {
                Some(sub) => format!("{}/{sub}", o.resource),
                None => o.resource.clone(),
            },
            None => self
                .request_uri
                .split('?')
                .next()
                .unwrap_or_default()
                .to_owned(),
        }
    }

    /// The first source address: the client's own, before any proxies it went through.
    pub fn source_ip(&self) -> Option<IpAddr> {
        self.source_ips.first().copied()
    }

    /// Whether this is an exec or attach into a pod.
    pub fn is_pod_exec(&self) -> bool {
        self.object.as_ref().is_some_and(|o| {
            o.resource == "pods"
                && o.api_group.as_deref().unwrap_or("").is_empty()
                && matches!(o.subresource.as_deref(), Some("exec" | "attach"))
        })
    }
}

/// The API request that started a process tree, as every alert on that tree carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecAttribution {
    pub cluster: String,
    pub audit_id: String,
    pub user: String,
    pub impersonated_user: Option<String>,
    /// The request's source addresses: the client's own first (it may come from the
    /// client's `X-Forwarded-For`), the address the API server saw last.
    pub source_ips: Vec<IpAddr>,
    pub user_agent: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub command: Vec<String>,
    /// The request's requestReceivedTimestamp.
    pub time: UnixNanos,
}

impl ExecAttribution {
    /// From an exec or attach event; `None` for any other event.
    pub fn of(a: &AuditRecord) -> Option<ExecAttribution> {
        let object = a.object.as_ref().filter(|_| a.is_pod_exec())?;
        let exec = a.exec.clone().unwrap_or_default();
        Some(ExecAttribution {
            cluster: a.cluster.clone(),
            audit_id: a.audit_id.clone(),
            user: a.user.username.clone(),
            impersonated_user: a.impersonated_user.as_ref().map(|u| u.username.clone()),
            source_ips: a.source_ips.clone(),
            user_agent: a.user_agent.clone().unwrap_or_default(),
            namespace: object.namespace.clone().unwrap_or_default(),
            pod: object.name.clone().unwrap_or_default(),
            container: exec.container,
            command: exec.command,
            time: a.request_received,
        })
    }

    /// The evidence line: `started by kubectl exec by USER from IP (user agent)`.
    pub fn evidence(&self) -> String {
        let who = match &self.impersonated_user {
            Some(as_user) => format!("{} (as {as_user})", self.user),
            None => self.user.clone(),
        };
        let from = match (self.source_ips.first(), self.source_ips.last()) {
            (None, _) => "an unknown address".to_owned(),
            (Some(first), Some(last)) if first != last => {
                format!("{first} (forwarded; the API server saw {last})")
            }
            (Some(first), _) => first.to_string(),
        };
        // Every part is client-controlled text: escaped for terminals and logs.
        super::display_bytes(
            format!(
                "started by kubectl exec by {who} from {from} ({}) into {}/{} container {:?} command {:?} (cluster {}, audit ID {})",
                self.user_agent,
                self.namespace,
                self.pod,
                self.container,
                self.command.join(" "),
                self.cluster,
                self.audit_id
            )
            .as_bytes(),
        )
    }
}
