//! Who a CONNECT belongs to: JWT verification with pinned algorithms.
//!
//! The token comes from the CONNECT `auth` object (`{"token": "…"}`) or, for
//! clients that cannot set `auth`, from an `Authorization: Bearer` header on the
//! handshake request. `sub` becomes the user id; a configurable claim lists rooms
//! the socket joins at once. The algorithm is taken from configuration, never
//! from the token: a token whose header names another algorithm (`none`, or
//! HS256 signed with an RSA public key as the secret) is refused.

use std::fmt;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// The longest token accepted; anything longer is refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Key material and checks for JWTs.
#[derive(Clone, Default)]
pub struct JwtConfig {
    /// HS256 shared secret.
    pub hs256_secret: Option<Vec<u8>>,
    /// RS256 public key, PEM.
    pub rs256_public_pem: Option<Vec<u8>>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Claim listing rooms to join at CONNECT.
    pub rooms_claim: String,
    /// Clock skew allowed on `exp`/`nbf`, in seconds.
    pub leeway_secs: u64,
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("rs256_public_pem", &self.rs256_public_pem.is_some())
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("rooms_claim", &self.rooms_claim)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

/// Why the verifier could not be built from configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid RS256 public key")]
    InvalidRsaKey(#[source] jsonwebtoken::errors::Error),
    #[error("jwt configuration has no key: give an HS256 secret or an RS256 public key")]
    NoKey,
}

/// The identity a CONNECT was authenticated as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Empty for anonymous sockets.
    pub user_id: String,
    /// Rooms to join at CONNECT.
    pub rooms: Vec<String>,
    /// When the token stops being valid, leeway included (Unix seconds).
    pub expires_at: Option<u64>,
}

/// Why a CONNECT is refused; the message is what the client's `connect_error` shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing token")]
    MissingToken,
    #[error("invalid token: token is too long")]
    TooLong,
    #[error("invalid token: token expired")]
    Expired,
    #[error("invalid token: bad signature")]
    BadSignature,
    #[error("invalid token: algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("invalid token: wrong audience")]
    WrongAudience,
    #[error("invalid token: wrong issuer")]
    WrongIssuer,
    #[error("invalid token: missing claim {0}")]
    MissingClaim(String),
    #[error("invalid token: token not yet valid")]
    NotYetValid,
    #[error("invalid token: claim {0} must be a list of room names")]
    BadRoomsClaim(String),
    #[error("invalid token: malformed")]
    Malformed,
}

impl AuthError {
    /// The metrics label of this cause.
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::TooLong | AuthError::Malformed => "malformed_token",
            AuthError::Expired | AuthError::NotYetValid => "expired_token",
            AuthError::BadSignature => "bad_signature",
            AuthError::AlgorithmNotAllowed => "algorithm_not_allowed",
            AuthError::WrongAudience | AuthError::WrongIssuer => "wrong_audience_or_issuer",
            AuthError::MissingClaim(_) | AuthError::BadRoomsClaim(_) => "bad_claims",
        }
    }
}

struct Key {
    alg: Algorithm,
    key: DecodingKey,
}

/// Verifies tokens; cheap to clone behind an `Arc`.
pub struct Authenticator {
    keys: Vec<Key>,
    audience: Option<String>,
    issuer: Option<String>,
    rooms_claim: String,
    leeway_secs: u64,
    allow_anonymous: bool,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field(
                "algorithms",
                &self.keys.iter().map(|k| k.alg).collect::<Vec<_>>(),
            )
            .field("allow_anonymous", &self.allow_anonymous)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// `jwt: None` means no tokens are verified; then only anonymous sockets can
    /// connect, and only if `allow_anonymous`.
    pub fn new(jwt: Option<&JwtConfig>, allow_anonymous: bool) -> Result<Self, ConfigError> {
        let mut keys = Vec::new();
        let mut this = Self {
            keys: Vec::new(),
            audience: None,
            issuer: None,
            rooms_claim: String::new(),
            leeway_secs: 0,
            allow_anonymous,
        };
        if let Some(jwt) = jwt {
            if let Some(secret) = &jwt.hs256_secret {
                keys.push(Key {
                    alg: Algorithm::HS256,
                    key: DecodingKey::from_secret(secret),
                });
            }
            if let Some(pem) = &jwt.rs256_public_pem {
                keys.push(Key {
                    alg: Algorithm::RS256,
                    key: DecodingKey::from_rsa_pem(pem).map_err(ConfigError::InvalidRsaKey)?,
                });
            }
            if keys.is_empty() {
                return Err(ConfigError::NoKey);
            }
            this.audience = jwt.audience.clone();
            this.issuer = jwt.issuer.clone();
            this.rooms_claim = jwt.rooms_claim.clone();
            this.leeway_secs = jwt.leeway_secs;
        }
        this.keys = keys;
        Ok(this)
    }

    pub fn verifies_tokens(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Authenticates a CONNECT from its token (from `auth.token` or the
    /// handshake's bearer header).
    pub fn authenticate(&self, token: Option<&str>) -> Result<Identity, AuthError> {
        match token {
            Some(t) if self.verifies_tokens() => self.verify(t),
            _ if self.allow_anonymous => Ok(Identity::default()),
            _ => Err(AuthError::MissingToken),
        }
    }

    fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::TooLong);
        }
        // Reads the header only to pick our key; the algorithm it names must be one
        // we pinned. `none` and unknown algorithms fail to parse here.
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            if names_an_algorithm(token) {
                // `none`, or one jsonwebtoken does not know: say so.
                AuthError::AlgorithmNotAllowed
            } else {
                AuthError::Malformed
            }
        })?;
        let key = self
            .keys
            .iter()
            .find(|k| k.alg == header.alg)
            .ok_or(AuthError::AlgorithmNotAllowed)?;
        let mut validation = Validation::new(key.alg);
        validation.leeway = self.leeway_secs;
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm => AuthError::AlgorithmNotAllowed,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(c.clone()),
                _ => AuthError::Malformed,
            })?;
        let claims = data.claims;
        // jsonwebtoken checks `aud` and `iss` only when the token has them: a
        // configured audience or issuer is required, so an absent or null claim
        // is as wrong as a different one.
        if let Some(aud) = &self.audience {
            let listed = match claims.get("aud") {
                Some(Value::String(s)) => s == aud,
                Some(Value::Array(items)) => items.iter().any(|v| v.as_str() == Some(aud)),
                _ => false,
            };
            if !listed {
                return Err(AuthError::WrongAudience);
            }
        }
        if let Some(iss) = &self.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(iss.as_str()) {
                return Err(AuthError::WrongIssuer);
            }
        }
        let user_id = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(AuthError::MissingClaim("sub".into())),
        };
        let rooms = match claims.get(&self.rooms_claim) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) if roomcast_bus::names::valid_room(s) => Ok(s.clone()),
                    _ => Err(AuthError::BadRoomsClaim(self.rooms_claim.clone())),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(AuthError::BadRoomsClaim(self.rooms_claim.clone())),
        };
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_u64)
            .map(|exp| exp.saturating_add(self.leeway_secs));
        Ok(Identity {
            user_id,
            rooms,
            expires_at,
        })
    }
}

/// Whether a token whose header did not parse still names an algorithm
/// (`{"alg":"none"}`); bounded by [`MAX_TOKEN_LEN`] already.
fn names_an_algorithm(token: &str) -> bool {
    use base64::Engine as _;
    let Some((head, _)) = token.split_once('.') else {
        return false;
    };
    let Ok(json) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head) else {
        return false;
    };
    serde_json::from_slice::<Map<String, Value>>(&json)
        .is_ok_and(|h| matches!(h.get("alg"), Some(Value::String(_))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine as _;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn hs(claims: Value, secret: &[u8]) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .expect("encode")
    }

    fn auth() -> Authenticator {
        Authenticator::new(
            Some(&JwtConfig {
                hs256_secret: Some(b"s3cret".to_vec()),
                rooms_claim: "rooms".into(),
                ..JwtConfig::default()
            }),
            false,
        )
        .expect("config")
    }

    #[test]
    fn accepts_a_valid_token_with_rooms() {
        let t = hs(
            json!({"sub":"u1","exp":now()+60,"rooms":["a","b"]}),
            b"s3cret",
        );
        assert_eq!(
            auth().authenticate(Some(&t)),
            Ok(Identity {
                user_id: "u1".into(),
                rooms: vec!["a".into(), "b".into()],
                expires_at: Some(now() + 60),
            })
        );
    }

    #[test]
    fn refuses_bad_tokens() {
        let a = auth();
        let expired = hs(json!({"sub":"u1","exp":now()-3600}), b"s3cret");
        assert_eq!(a.authenticate(Some(&expired)), Err(AuthError::Expired));
        let wrong = hs(json!({"sub":"u1","exp":now()+60}), b"other");
        assert_eq!(a.authenticate(Some(&wrong)), Err(AuthError::BadSignature));
        let no_exp = hs(json!({"sub":"u1"}), b"s3cret");
        assert_eq!(
            a.authenticate(Some(&no_exp)),
            Err(AuthError::MissingClaim("exp".into()))
        );
        let no_sub = hs(json!({"exp":now()+60}), b"s3cret");
        assert_eq!(
            a.authenticate(Some(&no_sub)),
            Err(AuthError::MissingClaim("sub".into()))
        );
        let bad_rooms = hs(json!({"sub":"u","exp":now()+60,"rooms":"a"}), b"s3cret");
        assert_eq!(
            a.authenticate(Some(&bad_rooms)),
            Err(AuthError::BadRoomsClaim("rooms".into()))
        );
        // alg: none, unsigned.
        let none = format!(
            "{}.{}.",
            B64.encode(br#"{"alg":"none","typ":"JWT"}"#),
            B64.encode(json!({"sub":"u1","exp":now()+60}).to_string())
        );
        assert_eq!(
            a.authenticate(Some(&none)),
            Err(AuthError::AlgorithmNotAllowed)
        );
        assert_eq!(a.authenticate(None), Err(AuthError::MissingToken));
        assert_eq!(a.authenticate(Some("garbage")), Err(AuthError::Malformed));
        assert_eq!(
            a.authenticate(Some(&"a".repeat(MAX_TOKEN_LEN + 1))),
            Err(AuthError::TooLong)
        );
    }

    #[test]
    fn refuses_an_algorithm_that_is_not_pinned() {
        // Only RS256 is configured; an HS256 token (e.g. signed with the public
        // key as the secret) must not be accepted.
        let rs_only = Authenticator {
            keys: vec![],
            audience: None,
            issuer: None,
            rooms_claim: "rooms".into(),
            leeway_secs: 0,
            allow_anonymous: false,
        };
        let t = hs(json!({"sub":"u1","exp":now()+60}), b"public-key-bytes");
        assert_eq!(rs_only.verify(&t), Err(AuthError::AlgorithmNotAllowed));
    }

    /// A public key only: tokens it verifies cannot be minted here, but tokens
    /// that abuse it as an HS256 secret can.
    const RSA_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA0TBOqwmZYz54fBhNstQt\njuAHxvqtaGdNeZWGvj4Z30lsEx+njiS/21HOV5bbrxb8TszPt3LEAXG3D4cl0152\nvtifriZz0Q+Dkx4MjUWsRi5uIL/TGISpzDOI5TvAdlPE8uGnkp6D/DrBxNlE7jmx\nhIJ/WvNvdBZCABycIli2856AHSs6lCauWNUrn1wzUgBZF7u3q3sTqeQhjLDj0HLX\n2/yx5AAIw2AHUQzteYKWPFTI7eSmFplADLLlzicpP7UHm0BzbkCmXk0cbfBi47fq\nJ/QVcEmbX86eGZR+1aZa+PnLZVfqp+TGhdkAK7rW1y+uGjhk4foCVUqoQc2f9zYT\nhQIDAQAB\n-----END PUBLIC KEY-----\n";

    #[test]
    fn refuses_an_rs256_public_key_used_as_an_hs256_secret() {
        let rs_only = Authenticator::new(
            Some(&JwtConfig {
                rs256_public_pem: Some(RSA_PUBLIC_PEM.as_bytes().to_vec()),
                rooms_claim: "rooms".into(),
                ..JwtConfig::default()
            }),
            false,
        )
        .expect("config");
        let forged = hs(
            json!({"sub":"u1","exp":now()+60}),
            RSA_PUBLIC_PEM.as_bytes(),
        );
        assert_eq!(
            rs_only.authenticate(Some(&forged)),
            Err(AuthError::AlgorithmNotAllowed)
        );
    }

    #[test]
    fn expiry_is_checked_with_the_leeway() {
        let a = Authenticator::new(
            Some(&JwtConfig {
                hs256_secret: Some(b"k".to_vec()),
                leeway_secs: 30,
                ..JwtConfig::default()
            }),
            false,
        )
        .expect("config");
        let within = hs(json!({"sub":"u","exp":now()-10}), b"k");
        assert!(a.authenticate(Some(&within)).is_ok(), "within the leeway");
        let beyond = hs(json!({"sub":"u","exp":now()-31}), b"k");
        assert_eq!(a.authenticate(Some(&beyond)), Err(AuthError::Expired));
        assert_eq!(
            AuthError::Expired.to_string(),
            "invalid token: token expired"
        );
    }

    #[test]
    fn a_huge_token_is_refused_before_it_is_decoded() {
        // A validly signed token, only too long: the length alone decides.
        let claims = json!({"sub":"u","exp":now()+60,"pad":"x".repeat(MAX_TOKEN_LEN)});
        let huge = hs(claims, b"s3cret");
        assert!(huge.len() > MAX_TOKEN_LEN);
        assert_eq!(auth().authenticate(Some(&huge)), Err(AuthError::TooLong));
    }

    #[test]
    fn checks_audience_and_issuer() {
        let a = Authenticator::new(
            Some(&JwtConfig {
                hs256_secret: Some(b"k".to_vec()),
                audience: Some("app".into()),
                issuer: Some("idp".into()),
                rooms_claim: "rooms".into(),
                ..JwtConfig::default()
            }),
            false,
        )
        .expect("config");
        let ok = hs(
            json!({"sub":"u","exp":now()+60,"aud":"app","iss":"idp"}),
            b"k",
        );
        assert!(a.authenticate(Some(&ok)).is_ok());
        let aud = hs(
            json!({"sub":"u","exp":now()+60,"aud":"other","iss":"idp"}),
            b"k",
        );
        assert_eq!(a.authenticate(Some(&aud)), Err(AuthError::WrongAudience));
        let iss = hs(
            json!({"sub":"u","exp":now()+60,"aud":"app","iss":"evil"}),
            b"k",
        );
        assert_eq!(a.authenticate(Some(&iss)), Err(AuthError::WrongIssuer));
        let listed = hs(
            json!({"sub":"u","exp":now()+60,"aud":["other","app"],"iss":"idp"}),
            b"k",
        );
        assert!(a.authenticate(Some(&listed)).is_ok());
    }

    #[test]
    fn a_configured_audience_or_issuer_is_required() {
        let hs_config = JwtConfig {
            hs256_secret: Some(b"k".to_vec()),
            audience: Some("app".into()),
            issuer: Some("idp".into()),
            rooms_claim: "rooms".into(),
            ..JwtConfig::default()
        };
        let a = Authenticator::new(Some(&hs_config), false).expect("config");
        let cases = [
            (
                json!({"sub":"u","exp":now()+60,"iss":"idp"}),
                AuthError::WrongAudience,
            ),
            (
                json!({"sub":"u","exp":now()+60,"aud":null,"iss":"idp"}),
                AuthError::WrongAudience,
            ),
            (
                json!({"sub":"u","exp":now()+60,"aud":[],"iss":"idp"}),
                AuthError::WrongAudience,
            ),
            (
                json!({"sub":"u","exp":now()+60,"aud":"app"}),
                AuthError::WrongIssuer,
            ),
            (
                json!({"sub":"u","exp":now()+60,"aud":"app","iss":null}),
                AuthError::WrongIssuer,
            ),
            (json!({"sub":"u","exp":now()+60}), AuthError::WrongAudience),
        ];
        for (claims, want) in cases {
            let token = hs(claims.clone(), b"k");
            let got = a.authenticate(Some(&token));
            assert_eq!(got, Err(want.clone()), "{claims}");
            assert_eq!(want.label(), "wrong_audience_or_issuer");
        }
        // Only the one configured is required.
        let aud_only = Authenticator::new(
            Some(&JwtConfig {
                issuer: None,
                ..hs_config.clone()
            }),
            false,
        )
        .expect("config");
        let no_iss = hs(json!({"sub":"u","exp":now()+60,"aud":"app"}), b"k");
        assert!(aud_only.authenticate(Some(&no_iss)).is_ok());
        let no_aud = hs(json!({"sub":"u","exp":now()+60,"iss":"idp"}), b"k");
        assert_eq!(
            aud_only.authenticate(Some(&no_aud)),
            Err(AuthError::WrongAudience)
        );
    }

    #[test]
    fn anonymous_only_when_allowed() {
        let anon = Authenticator::new(None, true).expect("config");
        assert_eq!(anon.authenticate(None), Ok(Identity::default()));
        let closed = Authenticator::new(None, false).expect("config");
        assert_eq!(closed.authenticate(None), Err(AuthError::MissingToken));
        let jwt_and_anon = Authenticator::new(
            Some(&JwtConfig {
                hs256_secret: Some(b"k".to_vec()),
                ..JwtConfig::default()
            }),
            true,
        )
        .expect("config");
        assert_eq!(jwt_and_anon.authenticate(None), Ok(Identity::default()));
        assert_eq!(
            jwt_and_anon.authenticate(Some("garbage")),
            Err(AuthError::Malformed),
            "a token that is given must be valid even when anonymous is allowed"
        );
    }
}
