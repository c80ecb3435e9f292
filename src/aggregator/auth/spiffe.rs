//! Workload identity from a client certificate: its SPIFFE ID (the one URI SAN of an
//! X.509-SVID, `spiffe://<trust domain>/<path>`), for collectors without Kubernetes
//! service-account tokens (ECS, generic hosts) and for readers. The chain was already
//! verified by TLS against `--tls-client-ca`; this reads who the certificate names.
//!
//! Paths procflow understands:
//! - `/ns/<namespace>/pod/<pod>`: one workload (a pod, an ECS task): a writer bound to it;
//! - `/ns/<namespace>/sa/<name>`: the workloads of a service account (or ECS service): a
//!   writer bound to the namespace, its pod name its own to say; as a reader, matched by
//!   the readers file.

use thiserror::Error;
use x509_parser::extensions::{GeneralName, ParsedExtension};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SpiffeError {
    #[error("the client certificate does not parse: {0}")]
    Certificate(String),
    #[error("the client certificate carries no SPIFFE ID (URI SAN)")]
    Missing,
    #[error("the client certificate carries {0} URI SANs; an SVID has exactly one")]
    Several(usize),
    #[error("malformed SPIFFE ID {0:?}")]
    Malformed(String),
    #[error("SPIFFE ID {id:?} is outside the trust domain {trust_domain:?}")]
    ForeignTrustDomain { id: String, trust_domain: String },
}

/// What a SPIFFE ID names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    Pod {
        namespace: String,
        pod: String,
    },
    ServiceAccount {
        namespace: String,
        name: String,
    },
    /// Any other path: usable as a reader identity only.
    Other,
}

/// The SPIFFE ID of a DER certificate.
pub fn spiffe_id(der: &[u8]) -> Result<String, SpiffeError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| SpiffeError::Certificate(e.to_string()))?;
    let mut uris = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                if let GeneralName::URI(uri) = name {
                    uris.push(uri.to_string());
                }
            }
        }
    }
    match uris.len() {
        0 => Err(SpiffeError::Missing),
        1 => Ok(uris.remove(0)),
        n => Err(SpiffeError::Several(n)),
    }
}

/// Checks `id` against the SPIFFE ID rules and `trust_domain`, and reads its path.
pub fn parse(id: &str, trust_domain: &str) -> Result<Workload, SpiffeError> {
    let malformed = || SpiffeError::Malformed(id.to_owned());
    let rest = id.strip_prefix("spiffe://").ok_or_else(malformed)?;
    let (domain, path) = rest.split_once('/').ok_or_else(malformed)?;
    let domain_ok = !domain.is_empty()
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
    if !domain_ok {
        return Err(malformed());
    }
    if domain != trust_domain {
        return Err(SpiffeError::ForeignTrustDomain {
            id: id.to_owned(),
            trust_domain: trust_domain.to_owned(),
        });
    }
    let segments: Vec<&str> = path.split('/').collect();
    let segment_ok = |s: &&str| {
        !s.is_empty()
            && *s != "."
            && *s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    };
    if !segments.iter().all(segment_ok) {
        return Err(malformed());
    }
    Ok(match segments.as_slice() {
        ["ns", namespace, "pod", pod] => Workload::Pod {
            namespace: (*namespace).to_owned(),
            pod: (*pod).to_owned(),
        },
        ["ns", namespace, "sa", name] => Workload::ServiceAccount {
            namespace: (*namespace).to_owned(),
            name: (*name).to_owned(),
        },
        _ => Workload::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with_uris(uris: &[&str]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        for uri in uris {
            params.subject_alt_names.push(rcgen::SanType::URI(
                rcgen::string::Ia5String::try_from(*uri).expect("ia5"),
            ));
        }
        params.subject_alt_names.push(rcgen::SanType::DnsName(
            "collector".try_into().expect("dns"),
        ));
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn the_one_uri_san_is_the_identity() {
        let der = cert_with_uris(&["spiffe://prod.example/ns/shop/pod/web-1"]);
        let id = spiffe_id(&der).expect("id");
        assert_eq!(id, "spiffe://prod.example/ns/shop/pod/web-1");
        assert_eq!(
            parse(&id, "prod.example").expect("parses"),
            Workload::Pod {
                namespace: "shop".into(),
                pod: "web-1".into()
            }
        );
        assert_eq!(spiffe_id(&cert_with_uris(&[])), Err(SpiffeError::Missing));
        assert_eq!(
            spiffe_id(&cert_with_uris(&["spiffe://a/x", "spiffe://a/y"])),
            Err(SpiffeError::Several(2))
        );
    }

    #[test]
    fn foreign_and_malformed_ids_are_refused() {
        assert!(matches!(
            parse("spiffe://other.example/ns/shop/pod/web-1", "prod.example"),
            Err(SpiffeError::ForeignTrustDomain { .. })
        ));
        for bad in [
            "https://prod.example/ns/shop/pod/web-1",
            "spiffe://prod.example",
            "spiffe://prod.example/ns//pod/web-1",
            "spiffe://prod.example/ns/../pod/web-1",
            "spiffe://Prod.Example/ns/shop/pod/web-1",
            "spiffe://prod.example/ns/shop/pod/web 1",
        ] {
            assert!(
                matches!(parse(bad, "prod.example"), Err(SpiffeError::Malformed(_))),
                "{bad}"
            );
        }
        assert_eq!(
            parse("spiffe://prod.example/ns/sec/sa/oncall", "prod.example"),
            Ok(Workload::ServiceAccount {
                namespace: "sec".into(),
                name: "oncall".into()
            })
        );
        assert_eq!(
            parse("spiffe://prod.example/team/oncall", "prod.example"),
            Ok(Workload::Other)
        );
    }
}
