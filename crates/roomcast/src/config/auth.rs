//! Client authentication: JWTs, a backend's connect hook, or anonymous access.

use anyhow::{bail, Context};
use roomcast_edge::hook::HookConfig;
use roomcast_edge::{Authenticator, JwtConfig};

use super::{ms, Defaults, Role, Settings};

impl Settings {
    /// The backend that authorizes every CONNECT instead of JWTs, if any.
    pub(super) fn connect_hook(&self, d: &Defaults) -> anyhow::Result<Option<HookConfig>> {
        let Some(url) = &self.connect_hook_url else {
            return Ok(None);
        };
        if !url.starts_with("http://") {
            bail!("connect-hook-url {url:?} must be an http:// address");
        }
        Ok(Some(HookConfig {
            url: url.clone(),
            timeout: ms(
                self.connect_hook_timeout_ms,
                d.connect_hook_timeout_ms,
                "connect-hook-timeout-ms",
            )?,
        }))
    }

    /// How client JWTs are verified; `None` when no key is given.
    pub(super) fn jwt(&self, d: &Defaults) -> anyhow::Result<Option<JwtConfig>> {
        let rs256 = match &self.jwt_public_key_file {
            Some(p) => Some(
                std::fs::read(p)
                    .with_context(|| format!("cannot read jwt public key file {}", p.display()))?,
            ),
            None => None,
        };
        let jwt = (self.jwt_secret.is_some() || rs256.is_some()).then(|| JwtConfig {
            hs256_secret: self.jwt_secret.clone().map(String::into_bytes),
            rs256_public_pem: rs256,
            audience: self.jwt_audience.clone(),
            issuer: self.jwt_issuer.clone(),
            rooms_claim: self
                .jwt_rooms_claim
                .clone()
                .unwrap_or_else(|| d.jwt_rooms_claim.clone()),
            leeway_secs: self.jwt_leeway_secs.unwrap_or(d.jwt_leeway_secs),
        });
        if matches!(&self.jwt_secret, Some(s) if s.len() < 16) {
            bail!("jwt-secret must be at least 16 bytes");
        }
        Ok(jwt)
    }

    /// The authenticator of a role with a client port (`None` for a control
    /// plane): exactly one way in, the hook or tokens and anonymous access.
    pub(super) fn auth(
        &self,
        d: &Defaults,
        role: Role,
        has_connect_hook: bool,
    ) -> anyhow::Result<Option<Authenticator>> {
        let jwt = self.jwt(d)?;
        if !role.has_edge() {
            return Ok(None);
        }
        let allow_anonymous = self.allow_anonymous.unwrap_or(d.allow_anonymous);
        if has_connect_hook && (jwt.is_some() || allow_anonymous) {
            bail!(
                "with --connect-hook-url the hook decides every connect: drop the jwt \
                 settings and --allow-anonymous"
            );
        }
        if jwt.is_none() && !allow_anonymous && !has_connect_hook {
            bail!(
                "clients could not authenticate: give --jwt-secret or --jwt-public-key-file, \
                 or --connect-hook-url, or pass --allow-anonymous"
            );
        }
        Authenticator::new(jwt.as_ref(), allow_anonymous)
            .context("invalid jwt configuration")
            .map(Some)
    }
}
