//! API keys: `authorization: Bearer <key>` metadata on every call.

use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Checks the bearer API key of each request. With no keys configured every
/// request is let through (development); the binary says so in its log.
#[derive(Clone)]
pub struct ApiKeys {
    keys: Arc<Vec<String>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys, redacted)", self.keys.len())
    }
}

impl ApiKeys {
    pub fn new(keys: Vec<String>) -> Self {
        Self {
            keys: Arc::new(keys),
        }
    }

    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    fn check(&self, header: Option<&str>) -> Result<(), Status> {
        if self.is_open() {
            return Ok(());
        }
        let Some(value) = header else {
            return Err(Status::unauthenticated(
                "missing api key: send metadata 'authorization: Bearer <key>'",
            ));
        };
        let key = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, k)| k.trim())
            .ok_or_else(|| Status::unauthenticated("authorization must be 'Bearer <key>'"))?;
        // Compare every key in full so the time taken says nothing about the key.
        let ok = self.keys.iter().fold(false, |acc, k| {
            acc | constant_time_eq(k.as_bytes(), key.as_bytes())
        });
        if ok {
            Ok(())
        } else {
            Err(Status::unauthenticated("invalid api key"))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Interceptor for ApiKeys {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if let Err(status) = self.check(header) {
            metrics::counter!(crate::metrics::GRPC_UNAUTHENTICATED).increment(1);
            return Err(status);
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_bearer_keys() {
        let keys = ApiKeys::new(vec!["k1".into(), "k2".into()]);
        assert!(keys.check(Some("Bearer k2")).is_ok());
        assert!(keys.check(Some("bearer k1")).is_ok());
        let err = keys.check(None).expect_err("missing");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(keys.check(Some("Bearer nope")).is_err());
        assert!(keys.check(Some("k1")).is_err());
        assert!(keys.check(Some("Basic k1")).is_err());
        assert!(ApiKeys::new(vec![]).check(None).is_ok());
    }
}
