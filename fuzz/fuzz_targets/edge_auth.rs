//! The token of a CONNECT (`auth.token` or a bearer header), verified by the
//! edge's `Authenticator` with both HS256 and RS256 keys configured, an
//! audience, an issuer and a rooms claim.
//!
//! Input: first byte selects the mode.
//! - even: the rest is the token string as a client sends it;
//! - odd: the rest is a JSON claims object, signed here with the HS256 key, so
//!   the claim checks behind the signature are reached as well.
//!
//! Properties: never panics; an accepted token has a non-empty `sub`, and only
//! valid room names.
#![no_main]

use std::sync::OnceLock;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use roomcast_edge::{Authenticator, JwtConfig};

const HS256_SECRET: &[u8] = b"fuzz-secret";
const RS256_PUBLIC: &[u8] = include_bytes!("../fixtures/rs256-public.pem");

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        let config = JwtConfig {
            hs256_secret: Some(HS256_SECRET.to_vec()),
            rs256_public_pem: Some(RS256_PUBLIC.to_vec()),
            audience: Some("roomcast".into()),
            issuer: Some("fuzz".into()),
            rooms_claim: "rooms".into(),
            leeway_secs: 5,
        };
        Authenticator::new(Some(&config), false).expect("fuzz jwt configuration")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode % 2 == 0 {
        let Ok(token) = std::str::from_utf8(rest) else {
            return;
        };
        token.to_owned()
    } else {
        let Ok(claims) = serde_json::from_slice::<serde_json::Value>(rest) else {
            return;
        };
        let Ok(token) = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(HS256_SECRET),
        ) else {
            return;
        };
        token
    };
    if let Ok(identity) = authenticator().authenticate(Some(&token)) {
        assert!(!identity.user_id.is_empty());
        for room in &identity.rooms {
            assert!(
                roomcast_bus::names::valid_room(room),
                "invalid room {room:?}"
            );
        }
    }
});
