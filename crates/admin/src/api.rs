//! The HTTPS admin API in front of [`Admin`]: the bearer token, the
//! request size cap and the failure rate per client address.
//!
//! Order of checks, before anything reaches the core: the body is at most
//! [`MAX_REQUEST`] bytes (the HTTP layer stops reading beyond it) → it
//! parses as a [`Request`] → the client address has not failed too often
//! lately (`429`, without comparing the token) → `Authorization: Bearer`
//! matches the token in constant time (`401` otherwise, counted; a
//! request without a bearer token tries nothing and is not counted).
//!
//! Invariants: the token is never logged; an unauthenticated reply names
//! no resource, so a caller without the token learns nothing.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chatmail_config::secret::{self, SecretError};
use chatmail_limits::{ClientKey, Gcra};
use subtle::ConstantTimeEq;

use crate::{Admin, Reply, Request};

/// The token's file in the state directory (32 random bytes, mode 0600);
/// the token is their hex form (`madmail admin-token`).
pub const TOKEN_FILE: &str = "admin.key";
/// Largest request body read.
pub const MAX_REQUEST: usize = 1 << 20;
/// Failed attempts one client address may make per minute.
const FAILURES_PER_MINUTE: u32 = 10;
/// Client addresses tracked at once by the failure rate.
const CLIENTS: usize = 16_384;

/// The token of the relay at `state_dir`, creating it when `create`.
pub fn load_token(state_dir: &Path, create: bool) -> Result<String, SecretError> {
    let bytes = if create {
        secret::load_or_create(state_dir, TOKEN_FILE)?
    } else {
        secret::load(state_dir, TOKEN_FILE)?
    };
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The authenticated front of the admin core.
pub struct Api {
    admin: Arc<Admin>,
    token: String,
    failures: Gcra<ClientKey>,
}

impl Api {
    pub fn new(admin: Arc<Admin>, token: String) -> Self {
        let failures = Gcra::new(FAILURES_PER_MINUTE, FAILURES_PER_MINUTE, CLIENTS);
        Self {
            admin,
            token,
            failures,
        }
    }

    /// The reply to a body over [`MAX_REQUEST`].
    pub fn too_large() -> Reply {
        Reply::error(413, "", "request body too large")
    }

    /// The reply to an HTTP method other than POST.
    pub fn post_only() -> Reply {
        Reply::error(405, "", "only POST is accepted")
    }

    /// Answers one request body from `peer`.
    pub async fn handle(&self, body: &[u8], peer: Option<IpAddr>) -> Reply {
        if body.len() > MAX_REQUEST {
            return Self::too_large();
        }
        let Ok(request) = serde_json::from_slice::<Request>(body) else {
            return Reply::error(400, "", "invalid JSON request body");
        };
        let client = ClientKey::of_opt(peer);
        if !self.failures.check(&client, Instant::now()) {
            return Reply::error(429, "", "too many failed attempts, try again later");
        }
        match self.bearer_matches(&request) {
            Some(true) => self.admin.handle(request).await,
            Some(false) => {
                self.failures.allow(client, Instant::now());
                Reply::error(401, "", "unauthorized")
            }
            // No token tried: nothing guessed, nothing counted.
            None => Reply::error(401, "", "unauthorized"),
        }
    }

    /// Whether the bearer token matches; `None` without one.
    fn bearer_matches(&self, request: &Request) -> Option<bool> {
        let header = request
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
            .map(|(_, value)| value.as_str());
        let given = header.and_then(|h| h.strip_prefix("Bearer "))?;
        Some(given.trim().as_bytes().ct_eq(self.token.as_bytes()).into())
    }
}
