//! Which cluster may write audit events, and with what: a file of per-cluster credentials
//! (`--audit-clusters`). Audit events carry no cluster identity, so the credential is the
//! identity: the endpoint path names a cluster and the request must carry that cluster's
//! secret; a secret of another cluster, or of the other adapter, is refused.
//!
//! ```toml
//! [clusters.prod-eks]
//! webhook_token_file = "/etc/procflow/audit/prod-webhook.token"  # kube-apiserver webhook (Bearer)
//! firehose_access_key_file = "/etc/procflow/audit/prod-firehose.key"  # X-Amz-Firehose-Access-Key
//! eks_cluster = "prod"  # the CloudWatch log group's cluster, when it differs from the name
//! ```
//!
//! Secret files are read as the gRPC side reads its token (`transport::TokenSource`: an
//! empty file is an error, never "no credential") and kept as SHA-256 digests, compared
//! digest to digest as the gRPC side compares tokens. The check is [`Credentials::verify`],
//! one function: the aggregator's `Principal` names pods and readers, and an audit source
//! (a cluster) would join it there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::aggregator::auth::{digest, digests_equal};
use crate::transport::TokenSource;

/// The two adapters that write audit events over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Adapter {
    Webhook,
    Firehose,
}

impl Adapter {
    pub fn as_str(self) -> &'static str {
        match self {
            Adapter::Webhook => "webhook",
            Adapter::Firehose => "firehose",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
}

/// Why a request was refused (all answered alike: the endpoint reveals no cluster names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no credential presented")]
    Missing,
    #[error("the credential is not this cluster's for this endpoint")]
    Wrong,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    clusters: BTreeMap<String, ClusterSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterSpec {
    #[serde(default)]
    webhook_token_file: Option<PathBuf>,
    #[serde(default)]
    firehose_access_key_file: Option<PathBuf>,
    #[serde(default)]
    eks_cluster: Option<String>,
}

/// One cluster's secrets, as digests.
#[derive(Clone)]
struct Cluster {
    webhook_token: Option<[u8; 32]>,
    firehose_key: Option<[u8; 32]>,
    eks_cluster: String,
}

/// The loaded file.
#[derive(Clone, Default)]
pub struct Credentials {
    clusters: BTreeMap<String, Cluster>,
    /// The secret files read, watched for rotation.
    files: Vec<PathBuf>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        f.debug_struct("Credentials")
            .field("clusters", &self.clusters.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A cluster name as it appears in paths and stored records.
pub fn valid_cluster_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Credentials {
    /// Reads the file and every secret file it names. Errors name the file and the cluster.
    pub fn load(path: &Path) -> Result<Credentials, CredentialsError> {
        let invalid = |msg: String| CredentialsError::Invalid {
            path: path.to_owned(),
            msg,
        };
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
            path: path.to_owned(),
            source,
        })?;
        let spec: FileSpec = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if spec.clusters.is_empty() {
            return Err(invalid("no [clusters.NAME] table".into()));
        }
        let mut clusters = BTreeMap::new();
        let mut files = Vec::new();
        let mut secrets: Vec<([u8; 32], String)> = Vec::new();
        for (name, c) in spec.clusters {
            if !valid_cluster_name(&name) {
                return Err(invalid(format!(
                    "cluster name {name:?}: 1 to 100 of A-Z a-z 0-9 - _ ."
                )));
            }
            let read = |file: &Option<PathBuf>| -> Result<Option<[u8; 32]>, CredentialsError> {
                let Some(file) = file else { return Ok(None) };
                let invalid = |msg: String| CredentialsError::Invalid {
                    path: file.clone(),
                    msg: format!("cluster {name}: {msg}"),
                };
                let token = TokenSource::File(file.clone())
                    .read()
                    .map_err(|e| invalid(e.to_string()))?
                    .ok_or_else(|| invalid("no secret".into()))?;
                let secret = token.secret();
                if secret.len() < 16 {
                    return Err(invalid(format!(
                        "a secret of {} bytes; at least 16 are needed",
                        secret.len()
                    )));
                }
                Ok(Some(digest(secret.as_bytes())))
            };
            files.extend(c.webhook_token_file.iter().cloned());
            files.extend(c.firehose_access_key_file.iter().cloned());
            let cluster = Cluster {
                webhook_token: read(&c.webhook_token_file)?,
                firehose_key: read(&c.firehose_access_key_file)?,
                eks_cluster: c.eks_cluster.unwrap_or_else(|| name.clone()),
            };
            if cluster.webhook_token.is_none() && cluster.firehose_key.is_none() {
                return Err(invalid(format!(
                    "cluster {name}: neither webhook_token_file nor firehose_access_key_file"
                )));
            }
            for secret in [&cluster.webhook_token, &cluster.firehose_key]
                .into_iter()
                .flatten()
            {
                // A secret must name one cluster and one adapter, or it could write as another.
                if let Some((_, other)) = secrets.iter().find(|(s, _)| s == secret) {
                    return Err(invalid(format!(
                        "cluster {name} reuses a secret of cluster {other}: each needs its own"
                    )));
                }
                secrets.push((*secret, name.clone()));
            }
            clusters.insert(name, cluster);
        }
        Ok(Credentials { clusters, files })
    }

    /// The secret files the credentials came from.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Accepts the request when `presented` is `cluster`'s secret for `adapter`. An unknown
    /// cluster or an adapter the cluster has no secret for is refused like a wrong secret.
    pub fn verify(
        &self,
        cluster: &str,
        adapter: Adapter,
        presented: Option<&[u8]>,
    ) -> Result<(), Refused> {
        let presented = presented
            .filter(|p| !p.is_empty())
            .ok_or(Refused::Missing)?;
        let expected = self.clusters.get(cluster).and_then(|c| match adapter {
            Adapter::Webhook => c.webhook_token.as_ref(),
            Adapter::Firehose => c.firehose_key.as_ref(),
        });
        match expected {
            Some(secret) if digests_equal(&digest(presented), secret) => Ok(()),
            _ => Err(Refused::Wrong),
        }
    }

    /// The EKS cluster whose log group (`/aws/eks/<name>/cluster`) this cluster's Firehose
    /// records must come from.
    pub fn eks_cluster(&self, cluster: &str) -> Option<&str> {
        self.clusters.get(cluster).map(|c| c.eks_cluster.as_str())
    }

    pub fn cluster_names(&self) -> impl Iterator<Item = &str> {
        self.clusters.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn each_secret_opens_one_cluster_and_one_adapter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        write(d, "a-hook", "a-webhook-token-0123456789\n");
        write(d, "a-fire", "a-firehose-key-0123456789");
        write(d, "b-hook", "b-webhook-token-0123456789");
        let file = write(
            d,
            "clusters.toml",
            &format!(
                "[clusters.a]\nwebhook_token_file = {:?}\nfirehose_access_key_file = {:?}\neks_cluster = \"prod\"\n[clusters.b]\nwebhook_token_file = {:?}\n",
                d.join("a-hook"),
                d.join("a-fire"),
                d.join("b-hook")
            ),
        );
        let c = Credentials::load(&file).expect("loads");
        assert_eq!(
            c.verify("a", Adapter::Webhook, Some(b"a-webhook-token-0123456789")),
            Ok(())
        );
        assert_eq!(
            c.verify("a", Adapter::Firehose, Some(b"a-firehose-key-0123456789")),
            Ok(())
        );
        let refused = [
            (
                "a",
                Adapter::Webhook,
                Some(&b"a-firehose-key-0123456789"[..]),
                Refused::Wrong,
            ),
            (
                "b",
                Adapter::Webhook,
                Some(b"a-webhook-token-0123456789"),
                Refused::Wrong,
            ),
            (
                "b",
                Adapter::Firehose,
                Some(b"b-webhook-token-0123456789"),
                Refused::Wrong,
            ),
            (
                "c",
                Adapter::Webhook,
                Some(b"a-webhook-token-0123456789"),
                Refused::Wrong,
            ),
            (
                "a",
                Adapter::Webhook,
                Some(b"a-webhook-token-012345678"),
                Refused::Wrong,
            ),
            (
                "a",
                Adapter::Webhook,
                Some(b"a-webhook-token-01234567890"),
                Refused::Wrong,
            ),
            ("a", Adapter::Webhook, Some(b""), Refused::Missing),
            ("a", Adapter::Webhook, None, Refused::Missing),
        ];
        for (cluster, adapter, presented, why) in refused {
            assert_eq!(
                c.verify(cluster, adapter, presented),
                Err(why),
                "{cluster} {adapter:?} {presented:?}"
            );
        }
        assert_eq!(c.eks_cluster("a"), Some("prod"));
        assert_eq!(c.eks_cluster("b"), Some("b"));
        assert!(!format!("{c:?}").contains("token"), "{c:?}");
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        write(d, "short", "tiny\n");
        write(d, "one", "shared-secret-0123456789");
        let cases = [
            ("[clusters]\n".to_owned(), "no [clusters.NAME]"),
            (
                format!("[clusters.\"a/b\"]\nwebhook_token_file = {:?}\n", d.join("one")),
                "cluster name",
            ),
            (
                format!("[clusters.a]\nwebhook_token_file = {:?}\n", d.join("short")),
                "at least 16",
            ),
            ("[clusters.a]\neks_cluster = \"x\"\n".to_owned(), "neither"),
            (
                format!(
                    "[clusters.a]\nwebhook_token_file = {0:?}\n[clusters.b]\nfirehose_access_key_file = {0:?}\n",
                    d.join("one")
                ),
                "reuses a secret",
            ),
            (
                format!("[clusters.a]\nwebhook_token_file = {:?}\n", d.join("missing")),
                "missing",
            ),
            ("[clusters.a]\ntoken = \"inline\"\n".to_owned(), "unknown field"),
        ];
        for (text, wanted) in cases {
            let file = write(d, "c.toml", &text);
            let e = Credentials::load(&file).expect_err(&text).to_string();
            assert!(e.contains(wanted), "{e} (wanted {wanted})");
        }
    }
}
