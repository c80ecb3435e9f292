//! EKS audit logs through CloudWatch Logs and Kinesis Data Firehose: the envelopes around
//! the audit events, decoded without I/O, and Firehose's response format.
//!
//! The path: EKS writes the control plane's audit log to the log group
//! `/aws/eks/<cluster>/cluster` (streams `kube-apiserver-audit-*`); a subscription filter
//! sends it to a Firehose stream whose destination is an HTTP endpoint (ours). Field names
//! as AWS documents them (Firehose developer guide, "HTTP endpoint delivery request and
//! response specifications"; CloudWatch Logs, "Subscription filters"):
//!
//! - request: headers `X-Amz-Firehose-Request-Id` (the same across retries),
//!   `X-Amz-Firehose-Access-Key`, optional `Content-Encoding: gzip` of the whole body; body
//!   `{"requestId", "timestamp" (ms), "records": [{"data": base64}]}`, at most 10,000
//!   records of at most 1,024,000 bytes each.
//! - each record: a CloudWatch Logs subscription message, gzip-compressed, `{"messageType":
//!   "DATA_MESSAGE" | "CONTROL_MESSAGE", "owner", "logGroup", "logStream",
//!   "subscriptionFilters", "logEvents": [{"id", "timestamp", "message"}]}`; each message one
//!   audit event. A stream set to decompress CloudWatch records sends the same JSON
//!   uncompressed, and with message extraction the bare messages: both are accepted.
//! - response: `application/json`, `{"requestId", "timestamp", "errorMessage"}` (the last on
//!   failures only); 200 is success, 413 a permanent failure, anything else is retried.

use std::borrow::Cow;
use std::io::Read;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::event::{self, DecodeError, Notes};
use crate::model::AuditRecord;

/// Records one request may hold (Firehose's own bound).
pub const MAX_RECORDS: usize = 10_000;
/// A record's data before base64 (Firehose's own bound).
const MAX_RECORD_BYTES: usize = 1_024_000;

/// How far decompression may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// A record's payload after decompression (a CloudWatch message is about 1 MB of JSON).
    pub record: usize,
    /// All of a request's payloads after decompression.
    pub request: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            record: 16 << 20,
            request: 256 << 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FirehoseError {
    /// The body as a whole is not a Firehose request.
    #[error("{0}")]
    Envelope(DecodeError),
    #[error("{records} records exceed Firehose's limit of {MAX_RECORDS}")]
    TooManyRecords { records: usize },
    #[error("the records decompress to more than {0} bytes")]
    TooLarge(usize),
}

/// What one Firehose request held.
#[derive(Debug, Default)]
pub struct Decoded {
    pub request_id: String,
    pub records: Vec<AuditRecord>,
    /// Audit events (or whole records) that could not be used, each with its reason.
    pub rejected: Vec<String>,
    /// CloudWatch control messages (sent when a subscription is set up), skipped.
    pub control_messages: u64,
    /// Log events of other streams of the cluster's log group (authenticator, scheduler…).
    pub other_streams: u64,
    pub notes: Notes,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRequest<'a> {
    #[serde(borrow)]
    request_id: Cow<'a, str>,
    #[serde(borrow)]
    records: Vec<RawRecord<'a>>,
}

#[derive(Deserialize)]
struct RawRecord<'a> {
    #[serde(borrow)]
    data: Cow<'a, str>,
}

/// The top-level keys that tell a CloudWatch message from a bare audit event.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe<'a> {
    #[serde(default, borrow)]
    message_type: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscriptionMessage<'a> {
    #[serde(borrow)]
    message_type: Cow<'a, str>,
    #[serde(default, borrow)]
    log_group: Cow<'a, str>,
    #[serde(default, borrow)]
    log_stream: Cow<'a, str>,
    #[serde(default, borrow)]
    log_events: Vec<LogEvent<'a>>,
}

#[derive(Deserialize)]
struct LogEvent<'a> {
    #[serde(borrow)]
    message: Cow<'a, str>,
}

/// Decodes a (decompressed) Firehose request body for `cluster`, whose CloudWatch records
/// must come from the log group of EKS cluster `eks_cluster`.
pub fn decode(
    body: &[u8],
    cluster: &str,
    eks_cluster: &str,
    bounds: Bounds,
) -> Result<Decoded, FirehoseError> {
    event::check_depth(body, event::MAX_DEPTH).map_err(FirehoseError::Envelope)?;
    let raw: RawRequest = event::parse(body, "").map_err(FirehoseError::Envelope)?;
    if raw.records.len() > MAX_RECORDS {
        return Err(FirehoseError::TooManyRecords {
            records: raw.records.len(),
        });
    }
    let mut out = Decoded {
        request_id: raw.request_id.into_owned(),
        ..Decoded::default()
    };
    let log_group = format!("/aws/eks/{eks_cluster}/cluster");
    let mut budget = bounds.request;
    for (i, record) in raw.records.iter().enumerate() {
        let payload = match payload(&record.data, bounds.record, &mut budget) {
            Ok(p) => p,
            Err(Payload::OverBudget) => return Err(FirehoseError::TooLarge(bounds.request)),
            Err(Payload::Bad(why)) => {
                out.rejected.push(format!("records[{i}]: {why}"));
                continue;
            }
        };
        if let Err(e) = event::check_depth(&payload, event::MAX_DEPTH) {
            out.rejected.push(format!("records[{i}]: {e}"));
            continue;
        }
        // Decompressed streams may put several JSON documents in one record.
        for (j, value) in serde_json::Deserializer::from_slice(&payload)
            .into_iter::<&RawValue>()
            .enumerate()
        {
            let value = match value {
                Ok(v) => v,
                Err(e) => {
                    out.rejected.push(format!("records[{i}]: not JSON: {e}"));
                    break;
                }
            };
            let at = format!("records[{i}][{j}]");
            one_document(value.get().as_bytes(), &at, cluster, &log_group, &mut out);
        }
    }
    Ok(out)
}

enum Payload {
    Bad(String),
    OverBudget,
}

/// A record's data: base64, then gunzipped when it is gzip (CloudWatch's own compression).
fn payload(data: &str, max_record: usize, budget: &mut usize) -> Result<Vec<u8>, Payload> {
    if data.len() > MAX_RECORD_BYTES.div_ceil(3) * 4 + 4 {
        return Err(Payload::Bad(format!(
            "{} base64 characters exceed Firehose's record size",
            data.len()
        )));
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| Payload::Bad(format!("data is not base64: {e}")))?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        *budget = budget.checked_sub(raw.len()).ok_or(Payload::OverBudget)?;
        return Ok(raw);
    }
    let limit = max_record.min(*budget);
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(raw.as_slice())
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Payload::Bad(format!("data is not valid gzip: {e}")))?;
    if out.len() > limit {
        return Err(if limit < max_record {
            Payload::OverBudget
        } else {
            Payload::Bad(format!("data decompresses to more than {max_record} bytes"))
        });
    }
    *budget -= out.len();
    Ok(out)
}

/// One JSON document of a record: a CloudWatch subscription message, or a bare audit event
/// (a stream that extracts messages).
fn one_document(json: &[u8], at: &str, cluster: &str, log_group: &str, out: &mut Decoded) {
    let probe: Result<Probe, _> = serde_json::from_slice(json);
    let Ok(Probe {
        message_type: Some(_),
    }) = probe
    else {
        match event::decode_event(json, cluster, &mut out.notes) {
            Ok(r) => out.records.push(r),
            Err(e) => out.rejected.push(format!("{at}: {e}")),
        }
        return;
    };
    let message: SubscriptionMessage = match serde_json::from_slice(json) {
        Ok(m) => m,
        Err(e) => {
            out.rejected.push(format!(
                "{at}: not a CloudWatch Logs subscription message: {e}"
            ));
            return;
        }
    };
    match message.message_type.as_ref() {
        "DATA_MESSAGE" => {}
        "CONTROL_MESSAGE" => {
            out.control_messages += 1;
            return;
        }
        other => {
            out.rejected.push(format!(
                "{at}: messageType {:?} is neither DATA_MESSAGE nor CONTROL_MESSAGE",
                other.chars().take(64).collect::<String>()
            ));
            return;
        }
    }
    if message.log_group != log_group {
        // The credential names the cluster; a record of another cluster's log group is a
        // misconfiguration or a forgery, never stored under this cluster.
        out.rejected.push(format!(
            "{at}: log group {:?} is not this cluster's ({log_group}): its {} events are not stored",
            message.log_group.chars().take(256).collect::<String>(),
            message.log_events.len()
        ));
        return;
    }
    if !message.log_stream.starts_with("kube-apiserver-audit") {
        out.other_streams += message.log_events.len() as u64;
        return;
    }
    for (k, log_event) in message.log_events.iter().enumerate() {
        match event::decode_event(log_event.message.as_bytes(), cluster, &mut out.notes) {
            Ok(r) => out.records.push(r),
            Err(e) => out.rejected.push(format!("{at}.logEvents[{k}]: {e}")),
        }
    }
}

/// Firehose's response body.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub request_id: String,
    /// Milliseconds since the epoch at which the request was processed.
    pub timestamp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

impl Response {
    pub fn new(request_id: &str, error: Option<String>) -> Response {
        Response {
            request_id: request_id.chars().take(256).collect(),
            timestamp: crate::model::now_ns() / 1_000_000,
            // Firehose keeps at most 8,192 characters of it.
            error_message: error.map(|e| e.chars().take(8192).collect()),
        }
    }
}

#[cfg(test)]
mod tests;
