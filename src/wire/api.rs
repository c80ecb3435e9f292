//! The Kubernetes API answer (`investigate::api`) to and from `procflow.v1`; inbound, as the
//! rest of `wire`, validating what the peer controls (addresses, the audit records of
//! `changes`).

use super::audit::{audit_from_proto, audit_to_proto};
use super::fields::addr;
use super::{Limits, WireError};
use crate::investigate::api::{ApiActivity, ApiCall, NewApiCall, OutcomeCounts, SubjectIncrease};
use crate::proto::v1 as pb;

fn counts_to_proto(c: &OutcomeCounts) -> pb::OutcomeCounts {
    pb::OutcomeCounts {
        success: c.success,
        failed: c.failed,
        unauthorized: c.unauthorized,
        forbidden: c.forbidden,
    }
}

fn counts_from_proto(c: Option<pb::OutcomeCounts>) -> OutcomeCounts {
    let c = c.unwrap_or_default();
    OutcomeCounts {
        success: c.success,
        failed: c.failed,
        unauthorized: c.unauthorized,
        forbidden: c.forbidden,
    }
}

pub fn api_activity_to_proto(a: &ApiActivity) -> pb::ApiActivityReply {
    pb::ApiActivityReply {
        calls: a
            .calls
            .iter()
            .map(|c| pb::ApiCall {
                cluster: c.cluster.clone(),
                verb: c.verb.clone(),
                resource: c.resource.clone(),
                subject: c.subject.clone(),
                impersonated: c.impersonated.clone(),
                source_ip: c.source_ip.map(|ip| ip.to_string()),
                counts: Some(counts_to_proto(&c.counts)),
                first_seen: c.first_seen,
                last_seen: c.last_seen,
            })
            .collect(),
        requests: a.requests,
        total_calls: a.total_calls,
        new_calls: a
            .new_calls
            .iter()
            .map(|n| pb::NewApiCall {
                cluster: n.cluster.clone(),
                subject: n.subject.clone(),
                verb: n.verb.clone(),
                resource: n.resource.clone(),
                counts: Some(counts_to_proto(&n.counts)),
                first_seen: n.first_seen,
                source_ips: n.source_ips.iter().map(|ip| ip.to_string()).collect(),
                user_agent: n.user_agent.clone(),
            })
            .collect(),
        increased: a
            .increased
            .iter()
            .map(|i| pb::SubjectIncrease {
                cluster: i.cluster.clone(),
                subject: i.subject.clone(),
                baseline_per_hour: i.baseline_per_hour,
                window_per_hour: i.window_per_hour,
                calls: i.calls,
            })
            .collect(),
        baseline_requests: a.baseline_requests,
        changes: a.changes.iter().map(audit_to_proto).collect(),
        truncated: a.truncated,
    }
}

pub fn api_activity_from_proto(
    a: pb::ApiActivityReply,
    limits: &Limits,
) -> Result<ApiActivity, WireError> {
    Ok(ApiActivity {
        calls: a
            .calls
            .into_iter()
            .map(|c| {
                Ok(ApiCall {
                    cluster: c.cluster,
                    verb: c.verb,
                    resource: c.resource,
                    subject: c.subject,
                    impersonated: c.impersonated,
                    source_ip: c
                        .source_ip
                        .map(|ip| addr("api_call.source_ip", &ip))
                        .transpose()?,
                    counts: counts_from_proto(c.counts),
                    first_seen: c.first_seen,
                    last_seen: c.last_seen,
                })
            })
            .collect::<Result<_, WireError>>()?,
        requests: a.requests,
        total_calls: a.total_calls,
        new_calls: a
            .new_calls
            .into_iter()
            .map(|n| {
                Ok(NewApiCall {
                    cluster: n.cluster,
                    subject: n.subject,
                    verb: n.verb,
                    resource: n.resource,
                    counts: counts_from_proto(n.counts),
                    first_seen: n.first_seen,
                    source_ips: n
                        .source_ips
                        .iter()
                        .map(|ip| addr("new_api_call.source_ips", ip))
                        .collect::<Result<_, _>>()?,
                    user_agent: n.user_agent,
                })
            })
            .collect::<Result<_, WireError>>()?,
        increased: a
            .increased
            .into_iter()
            .map(|i| SubjectIncrease {
                cluster: i.cluster,
                subject: i.subject,
                baseline_per_hour: i.baseline_per_hour,
                window_per_hour: i.window_per_hour,
                calls: i.calls,
            })
            .collect(),
        baseline_requests: a.baseline_requests,
        changes: a
            .changes
            .into_iter()
            .map(|c| audit_from_proto(c, limits))
            .collect::<Result<_, _>>()?,
        truncated: a.truncated,
    })
}
