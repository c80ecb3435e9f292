//! The Falco-compatible JSON payload for webhooks that expect Falco's alerts.

use crate::model::{display_bytes, rfc3339_utc, AlertRecord, Severity};

/// Falco-compatible JSON payload (for falcosidekick).
pub fn falco_payload(a: &AlertRecord) -> serde_json::Value {
    let priority = match a.severity {
        Severity::Info => "Informational",
        Severity::Low => "Notice",
        Severity::Medium => "Warning",
        Severity::High => "Error",
        Severity::Critical => "Critical",
    };
    let secs = a.time / 1_000_000_000;
    let time = rfc3339_utc(secs, a.time % 1_000_000_000);
    serde_json::json!({
        "output": a.output,
        "priority": priority,
        "rule": a.rule_name,
        "time": time,
        "source": "procflow",
        "tags": a.tags,
        "hostname": a.node_name,
        "output_fields": {
            "procflow.rule_id": a.rule_id,
            "procflow.count": a.count,
            "k8s.pod.name": a.pod_name,
            "k8s.ns.name": a.pod_namespace,
            "container.id": a.container_id,
            "proc.pid": a.process.as_ref().map(|p| p.pid),
            "proc.name": a.process.as_ref().map(|p| display_bytes(&p.comm)),
            "proc.exepath": a.process.as_ref().and_then(|p| p.exe.as_deref().map(display_bytes)),
        },
    })
}
