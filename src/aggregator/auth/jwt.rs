//! Kubernetes service-account tokens: JWTs signed by the cluster's issuer, checked here
//! against the issuer's published keys (a JWKS) with `ring`. Pure: no I/O, no clock.
//!
//! Only what a service-account token needs is accepted: `RS256` (what Kubernetes and EKS
//! sign with) and `ES256`; the algorithm must match the key's type (and the key's own `alg`
//! when it states one), so a token cannot pick how it is checked (`none`, `HS256` with the
//! public key as secret). The issuer must match exactly, the audience must include ours,
//! and `exp` is required.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;
use thiserror::Error;

/// Longest token looked at: projected tokens are about a kilobyte.
pub const MAX_TOKEN_BYTES: usize = 16 << 10;
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("not a JWT: {0}")]
    Malformed(&'static str),
    #[error("token longer than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("unsupported signature algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    #[error("no key {0:?} in the issuer's key set")]
    UnknownKey(Option<String>),
    #[error("key {0:?} does not fit the token's algorithm")]
    KeyMismatch(Option<String>),
    #[error("bad signature")]
    BadSignature,
    #[error("issued by {0:?}, not by the configured issuer")]
    WrongIssuer(String),
    #[error("audience does not include {0:?}")]
    WrongAudience(String),
    #[error("expired at {0} (unix seconds)")]
    Expired(u64),
    #[error("not valid before {0} (unix seconds)")]
    NotYetValid(u64),
    #[error("claim {0} missing or malformed")]
    Claim(&'static str),
    #[error("key set: {0}")]
    KeySet(String),
}

// === Keys ===

/// An issuer's public keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: Vec<Key>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    kid: Option<String>,
    /// The key's `alg`, when it states one.
    alg: Option<String>,
    public: Public,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Public {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed SEC1 point (0x04 ‖ x ‖ y).
    P256(Vec<u8>),
}

#[derive(Deserialize)]
struct RawKeySet {
    keys: Vec<RawKey>,
}

#[derive(Deserialize)]
struct RawKey {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

fn b64(field: &'static str, value: Option<&str>) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(value.ok_or(JwtError::KeySet(format!("key without `{field}`")))?)
        .map_err(|_| JwtError::KeySet(format!("`{field}` is not base64url")))
}

impl KeySet {
    /// Parses a JWKS document. Keys of other types, and encryption keys, are skipped;
    /// a malformed signing key is an error (a half-read key set would reject good tokens
    /// with a misleading reason).
    pub fn parse(json: &[u8]) -> Result<KeySet, JwtError> {
        let raw: RawKeySet =
            serde_json::from_slice(json).map_err(|e| JwtError::KeySet(e.to_string()))?;
        let mut keys = Vec::new();
        for k in raw.keys {
            if k.use_.as_deref().is_some_and(|u| u != "sig") {
                continue;
            }
            let public = match (k.kty.as_str(), k.crv.as_deref()) {
                ("RSA", _) => Public::Rsa {
                    n: b64("n", k.n.as_deref())?,
                    e: b64("e", k.e.as_deref())?,
                },
                ("EC", Some("P-256")) => {
                    let (x, y) = (b64("x", k.x.as_deref())?, b64("y", k.y.as_deref())?);
                    if x.len() != 32 || y.len() != 32 {
                        return Err(JwtError::KeySet("P-256 coordinates of a wrong size".into()));
                    }
                    let mut point = Vec::with_capacity(65);
                    point.push(4);
                    point.extend_from_slice(&x);
                    point.extend_from_slice(&y);
                    Public::P256(point)
                }
                _ => continue,
            };
            keys.push(Key {
                kid: k.kid,
                alg: k.alg,
                public,
            });
        }
        Ok(KeySet { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key a token names: by `kid`, or the only key when the token names none.
    fn find(&self, kid: Option<&str>) -> Result<&Key, JwtError> {
        match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
        .ok_or_else(|| JwtError::UnknownKey(kid.map(str::to_owned)))
    }
}

// === Tokens ===

/// What the token must say.
#[derive(Debug, Clone)]
pub struct Expectations {
    pub issuer: String,
    pub audience: String,
}

/// The verified claims of a service-account token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    /// `system:serviceaccount:<namespace>:<name>`.
    pub subject: String,
    pub namespace: String,
    pub name: String,
    /// The pod the token is bound to (projected tokens mounted into a pod are).
    pub pod: Option<BoundPod>,
    /// Unix seconds.
    pub expires_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundPod {
    pub name: String,
    pub uid: String,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    aud: Option<Audience>,
    exp: Option<u64>,
    nbf: Option<u64>,
    sub: Option<String>,
    #[serde(rename = "kubernetes.io")]
    kubernetes: Option<KubernetesClaims>,
}

#[derive(Deserialize)]
struct KubernetesClaims {
    namespace: String,
    serviceaccount: Named,
    pod: Option<NameUid>,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
struct NameUid {
    name: String,
    uid: String,
}

/// The token's parts, decoded but not verified.
struct Parts<'a> {
    signed: &'a [u8],
    header: Header,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

fn split(token: &str) -> Result<Parts<'_>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge);
    }
    let mut it = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(JwtError::Malformed("not three dot-separated parts"));
    };
    let decode = |part: &str, what| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| JwtError::Malformed(what))
    };
    let header: Header = serde_json::from_slice(&decode(h, "header is not base64url")?)
        .map_err(|_| JwtError::Malformed("header is not JSON"))?;
    Ok(Parts {
        signed: &token.as_bytes()[..h.len() + 1 + p.len()],
        header,
        payload: decode(p, "payload is not base64url")?,
        signature: decode(s, "signature is not base64url")?,
    })
}

/// Whether `token` has the shape of a JWT (three base64url parts), without checking it.
pub fn looks_like_jwt(token: &str) -> bool {
    token.len() <= MAX_TOKEN_BYTES && token.split('.').count() == 3 && token.starts_with("eyJ")
}

/// The key id a token names, unverified: to decide whether the key set is stale.
pub fn key_id(token: &str) -> Option<String> {
    split(token).ok()?.header.kid
}

/// Verifies `token` against `keys` and `expect` at `now` (unix seconds).
pub fn verify(
    token: &str,
    keys: &KeySet,
    expect: &Expectations,
    now: u64,
) -> Result<ServiceAccount, JwtError> {
    let parts = split(token)?;
    let alg = parts.header.alg.as_str();
    if !matches!(alg, "RS256" | "ES256") {
        return Err(JwtError::UnsupportedAlgorithm(alg.to_owned()));
    }
    let key = keys.find(parts.header.kid.as_deref())?;
    if key.alg.as_deref().is_some_and(|a| a != alg) {
        return Err(JwtError::KeyMismatch(key.kid.clone()));
    }
    let verified = match (&key.public, alg) {
        (Public::Rsa { n, e }, "RS256") => RsaPublicKeyComponents { n, e }.verify(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            parts.signed,
            &parts.signature,
        ),
        (Public::P256(point), "ES256") => {
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(parts.signed, &parts.signature)
        }
        _ => return Err(JwtError::KeyMismatch(key.kid.clone())),
    };
    verified.map_err(|_| JwtError::BadSignature)?;

    // Signed by the issuer's key: now the claims can be believed, and checked.
    let claims: Claims = serde_json::from_slice(&parts.payload)
        .map_err(|_| JwtError::Malformed("payload is not the claims JSON"))?;
    let iss = claims.iss.ok_or(JwtError::Claim("iss"))?;
    if iss != expect.issuer {
        return Err(JwtError::WrongIssuer(iss));
    }
    let audience_ok = match &claims.aud {
        Some(Audience::One(a)) => *a == expect.audience,
        Some(Audience::Many(all)) => all.contains(&expect.audience),
        None => false,
    };
    if !audience_ok {
        return Err(JwtError::WrongAudience(expect.audience.clone()));
    }
    let exp = claims.exp.ok_or(JwtError::Claim("exp"))?;
    if exp.saturating_add(LEEWAY_SECS) <= now {
        return Err(JwtError::Expired(exp));
    }
    if let Some(nbf) = claims.nbf {
        if nbf > now.saturating_add(LEEWAY_SECS) {
            return Err(JwtError::NotYetValid(nbf));
        }
    }
    let k8s = claims.kubernetes.ok_or(JwtError::Claim("kubernetes.io"))?;
    let subject = claims.sub.ok_or(JwtError::Claim("sub"))?;
    let expected_subject = format!(
        "system:serviceaccount:{}:{}",
        k8s.namespace, k8s.serviceaccount.name
    );
    if subject != expected_subject || k8s.namespace.is_empty() {
        return Err(JwtError::Claim("sub"));
    }
    Ok(ServiceAccount {
        subject,
        namespace: k8s.namespace,
        name: k8s.serviceaccount.name,
        pod: k8s
            .pod
            .filter(|p| !p.name.is_empty() && !p.uid.is_empty())
            .map(|p| BoundPod {
                name: p.name,
                uid: p.uid,
            }),
        expires_at: exp,
    })
}

/// Signing, for tests: the unit tests here and the integration tests that play the issuer.
#[doc(hidden)]
pub mod testing {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use ring::rand::SystemRandom;
    use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};

    /// A signing key of a test issuer and its public JWK.
    pub enum Signer {
        Es256 { key: EcdsaKeyPair, kid: String },
        Rs256 { key: RsaKeyPair, kid: String },
    }

    impl Signer {
        /// A fresh P-256 key.
        pub fn es256(kid: &str) -> Signer {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .expect("generate P-256 key");
            let key = EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                pkcs8.as_ref(),
                &rng,
            )
            .expect("P-256 key");
            Signer::Es256 {
                key,
                kid: kid.into(),
            }
        }

        /// An RSA key from its PKCS#8 DER (ring cannot generate RSA keys).
        pub fn rs256(pkcs8_der: &[u8], kid: &str) -> Signer {
            Signer::Rs256 {
                key: RsaKeyPair::from_pkcs8(pkcs8_der).expect("RSA key"),
                kid: kid.into(),
            }
        }

        pub fn kid(&self) -> &str {
            match self {
                Signer::Es256 { kid, .. } | Signer::Rs256 { kid, .. } => kid,
            }
        }

        /// The public key as a JWK (JSON object).
        pub fn jwk(&self) -> serde_json::Value {
            let enc = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
            match self {
                Signer::Es256 { key, kid } => {
                    let point = key.public_key().as_ref();
                    serde_json::json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
                        "kid": kid, "x": enc(&point[1..33]), "y": enc(&point[33..65])})
                }
                Signer::Rs256 { key, kid } => {
                    let public: signature::RsaPublicKeyComponents<Vec<u8>> = key.public().into();
                    serde_json::json!({"kty": "RSA", "use": "sig", "alg": "RS256",
                        "kid": kid, "n": enc(&public.n), "e": enc(&public.e)})
                }
            }
        }

        /// A signed token with `claims`.
        pub fn sign(&self, claims: &serde_json::Value) -> String {
            let rng = SystemRandom::new();
            let (alg, kid) = match self {
                Signer::Es256 { kid, .. } => ("ES256", kid),
                Signer::Rs256 { kid, .. } => ("RS256", kid),
            };
            let header = serde_json::json!({"alg": alg, "kid": kid, "typ": "JWT"});
            let signed = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let sig = match self {
                Signer::Es256 { key, .. } => key
                    .sign(&rng, signed.as_bytes())
                    .expect("sign")
                    .as_ref()
                    .to_vec(),
                Signer::Rs256 { key, .. } => {
                    let mut sig = vec![0; key.public().modulus_len()];
                    key.sign(
                        &signature::RSA_PKCS1_SHA256,
                        &rng,
                        signed.as_bytes(),
                        &mut sig,
                    )
                    .expect("sign");
                    sig
                }
            };
            format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
        }
    }

    /// A JWKS document of `signers`.
    pub fn key_set(signers: &[&Signer]) -> String {
        serde_json::json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()}).to_string()
    }

    /// The claims of a projected token for `pod` of `namespace`, valid for `ttl` seconds
    /// from `now` (negative: already expired).
    pub fn pod_claims(
        issuer: &str,
        audience: &str,
        namespace: &str,
        pod: &str,
        pod_uid: &str,
        now: u64,
        ttl: i64,
    ) -> serde_json::Value {
        serde_json::json!({
            "aud": [audience],
            "exp": now.saturating_add_signed(ttl),
            "iat": now.saturating_sub(1),
            "nbf": now.saturating_sub(1),
            "iss": issuer,
            "sub": format!("system:serviceaccount:{namespace}:default"),
            "kubernetes.io": {
                "namespace": namespace,
                "node": {"name": "fargate-ip-10-0-0-1", "uid": "node-uid"},
                "pod": {"name": pod, "uid": pod_uid},
                "serviceaccount": {"name": "default", "uid": "sa-uid"}
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{key_set, pod_claims, Signer};
    use super::*;

    const ISSUER: &str = "https://oidc.eks.eu-west-1.amazonaws.com/id/TEST";
    const NOW: u64 = 1_800_000_000;

    fn expect() -> Expectations {
        Expectations {
            issuer: ISSUER.into(),
            audience: "procflow".into(),
        }
    }

    fn claims(ttl: i64) -> serde_json::Value {
        pod_claims(ISSUER, "procflow", "shop", "web-1", "uid-1", NOW, ttl)
    }

    #[test]
    fn a_pod_bound_token_yields_its_namespace_service_account_and_pod() {
        let signer = Signer::es256("k1");
        let keys = KeySet::parse(key_set(&[&signer]).as_bytes()).expect("jwks");
        let sa = verify(&signer.sign(&claims(600)), &keys, &expect(), NOW).expect("valid");
        assert_eq!(sa.namespace, "shop");
        assert_eq!(sa.subject, "system:serviceaccount:shop:default");
        assert_eq!(
            sa.pod,
            Some(BoundPod {
                name: "web-1".into(),
                uid: "uid-1".into()
            })
        );
        assert_eq!(sa.expires_at, NOW + 600);
    }

    #[test]
    fn expired_wrong_audience_wrong_issuer_and_bad_signature_are_refused() {
        let signer = Signer::es256("k1");
        let keys = KeySet::parse(key_set(&[&signer]).as_bytes()).expect("jwks");
        let check = |token: &str| verify(token, &keys, &expect(), NOW);
        assert!(matches!(
            check(&signer.sign(&claims(-120))),
            Err(JwtError::Expired(_))
        ));
        let mut aud = claims(600);
        aud["aud"] = serde_json::json!(["sts.amazonaws.com"]);
        assert!(matches!(
            check(&signer.sign(&aud)),
            Err(JwtError::WrongAudience(_))
        ));
        let mut iss = claims(600);
        iss["iss"] = serde_json::json!("https://evil.example");
        assert!(matches!(
            check(&signer.sign(&iss)),
            Err(JwtError::WrongIssuer(_))
        ));
        // A payload swapped under a valid signature.
        let good = signer.sign(&claims(600));
        let other = signer.sign(&pod_claims(
            ISSUER,
            "procflow",
            "kube-system",
            "x",
            "u",
            NOW,
            600,
        ));
        let forged: Vec<&str> = good.split('.').collect();
        let swapped: Vec<&str> = other.split('.').collect();
        let token = format!("{}.{}.{}", forged[0], swapped[1], forged[2]);
        assert_eq!(check(&token), Err(JwtError::BadSignature));
        // Signed by a key the issuer does not publish under that id.
        let stranger = Signer::es256("k1");
        assert_eq!(
            check(&stranger.sign(&claims(600))),
            Err(JwtError::BadSignature)
        );
        let unknown = Signer::es256("k9");
        assert_eq!(
            check(&unknown.sign(&claims(600))),
            Err(JwtError::UnknownKey(Some("k9".into())))
        );
    }

    #[test]
    fn the_token_cannot_choose_how_it_is_checked() {
        let signer = Signer::es256("k1");
        let keys = KeySet::parse(key_set(&[&signer]).as_bytes()).expect("jwks");
        let good = signer.sign(&claims(600));
        let parts: Vec<&str> = good.split('.').collect();
        for alg in ["none", "HS256", "RS256"] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","kid":"k1"}}"#));
            let token = format!("{header}.{}.{}", parts[1], parts[2]);
            assert!(
                matches!(
                    verify(&token, &keys, &expect(), NOW),
                    Err(JwtError::UnsupportedAlgorithm(_) | JwtError::KeyMismatch(_))
                ),
                "{alg}"
            );
        }
        assert_eq!(
            verify("a.b", &keys, &expect(), NOW),
            Err(JwtError::Malformed("not three dot-separated parts"))
        );
        assert_eq!(
            verify(&"x".repeat(MAX_TOKEN_BYTES + 1), &keys, &expect(), NOW),
            Err(JwtError::TooLarge)
        );
    }

    #[test]
    fn rs256_tokens_verify_against_an_rsa_key_set() {
        let der = URL_SAFE_NO_PAD
            .decode(TEST_RSA_PKCS8.split_whitespace().collect::<String>())
            .expect("fixture");
        let signer = Signer::rs256(&der, "rsa-1");
        let keys = KeySet::parse(key_set(&[&signer]).as_bytes()).expect("jwks");
        let sa = verify(&signer.sign(&claims(600)), &keys, &expect(), NOW).expect("valid");
        assert_eq!(sa.namespace, "shop");
        // A token without a kid is checked against the only key.
        let rotated = Signer::es256("k2");
        let both = KeySet::parse(key_set(&[&signer, &rotated]).as_bytes()).expect("jwks");
        assert!(verify(&rotated.sign(&claims(600)), &both, &expect(), NOW).is_ok());
        assert!(verify(&signer.sign(&claims(600)), &both, &expect(), NOW).is_ok());
    }

    /// A 2048-bit RSA key for tests only (PKCS#8 DER, base64url), generated with
    /// `openssl genpkey -algorithm RSA`; it protects nothing.
    pub(crate) const TEST_RSA_PKCS8: &str = include_str!("testdata/rsa-2048.pk8.b64");
}
