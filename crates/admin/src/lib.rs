//! chatmail-admin: the one admin core behind every operator surface
//! (docs/admin-api.md). The HTTPS admin API, the `madmail` CLI (over the
//! control socket) and the admin web UI all send the same [`Request`]
//! envelope to [`Admin::handle`], so they cannot disagree.
//!
//! Flow: a surface builds a [`Request`] (`method`, `resource`, `headers`,
//! `body`) → [`Api::handle`] (HTTPS only: size cap, bearer token, failure
//! rate per client address) → [`Admin::handle`] dispatches on the exact
//! `resource` and `method` → a [`Reply`] with the real status inside
//! (`status`, `resource`, `body`, `error`, `version`), as Madmail's tools
//! expect.
//!
//! Invariants:
//! - a reply never carries a password hash, a message or a secret other
//!   than the credentials of an account created by that very request;
//! - an unexpected store failure is logged and answered `500` with a
//!   generic text, never with the database's message;
//! - every change takes effect at once in the running relay (the
//!   registration switch, bans and quotas live in `chatmail_accounts` and
//!   `chatmail_store`, which the protocol servers read).

mod api;
mod checks;
mod operations;
mod resources;

/// A resource's answer: the status and body of the reply, or the error.
type Outcome = Result<(u16, serde_json::Value), AdminError>;

pub use api::{Api, MAX_REQUEST, TOKEN_FILE, load_token};
pub use operations::{ReloadError, Reloaded};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chatmail_accounts::Accounts;
use chatmail_config::Settings;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The version every reply names.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One admin request: the envelope of `POST /api/admin`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Request {
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE` (any case; empty: `GET`).
    #[serde(default)]
    pub method: String,
    /// The exact resource, e.g. `/admin/accounts`.
    #[serde(default)]
    pub resource: String,
    /// `Authorization: Bearer <token>` for the HTTPS API.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The resource's arguments.
    #[serde(default)]
    pub body: Value,
}

impl Request {
    /// A request without headers.
    pub fn new(method: &str, resource: &str, body: Value) -> Self {
        Self {
            method: method.into(),
            resource: resource.into(),
            headers: BTreeMap::new(),
            body,
        }
    }
}

/// The reply envelope; the HTTP status around it is always 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub status: u16,
    pub resource: String,
    pub body: Value,
    pub error: Option<String>,
    pub version: String,
}

impl Reply {
    fn ok(status: u16, resource: &str, body: Value) -> Self {
        Self {
            status,
            resource: resource.into(),
            body,
            error: None,
            version: VERSION.into(),
        }
    }

    /// A refusal with `status` and `error`.
    pub fn error(status: u16, resource: &str, error: impl Into<String>) -> Self {
        Self {
            status,
            resource: resource.into(),
            body: Value::Null,
            error: Some(error.into()),
            version: VERSION.into(),
        }
    }

    /// Whether the status is 2xx.
    pub fn is_ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why a request failed; each maps to one envelope status.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("method {0} not allowed")]
    Method(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("internal error")]
    Store(#[from] chatmail_store::StoreError),
}

impl AdminError {
    fn status(&self) -> u16 {
        match self {
            AdminError::BadRequest(_) => 400,
            AdminError::NotFound(_) => 404,
            AdminError::Conflict(_) => 409,
            AdminError::Method(_) => 405,
            AdminError::Unsupported(_) => 501,
            AdminError::Store(_) => 500,
        }
    }
}

/// Which optional services started with the relay (only those can be
/// switched on and off at run time).
#[derive(Debug, Clone, Copy, Default)]
pub struct Services {
    pub turn: bool,
    pub iroh: bool,
    pub shadowsocks: bool,
}

impl Services {
    pub fn runs(self, service: chatmail_config::Service) -> bool {
        use chatmail_config::Service::*;
        match service {
            Turn => self.turn,
            Iroh => self.iroh,
            Shadowsocks => self.shadowsocks,
        }
    }
}

/// The admin core of one relay.
pub struct Admin {
    settings: Arc<Settings>,
    accounts: Accounts,
    services: Services,
    /// Where `dcaccount:` invite links point (`https://host[:port]`).
    base_url: String,
    started: Instant,
    /// The configuration file `reload` reads; `None`: no reload.
    config_path: Option<PathBuf>,
    /// The file's contents as last applied (reloads compare against it;
    /// the lock makes them one at a time).
    file: tokio::sync::Mutex<chatmail_config::Config>,
    /// The outbound queue, woken by a flush; `None`: the store alone.
    queue: Option<chatmail_queue::Queue>,
    /// Held while `/admin/doctor` runs (one run at a time).
    doctor: tokio::sync::Mutex<()>,
}

impl Admin {
    pub fn new(
        settings: Arc<Settings>,
        accounts: Accounts,
        services: Services,
        base_url: String,
    ) -> Self {
        Self {
            file: tokio::sync::Mutex::new(settings.config.clone()),
            settings,
            accounts,
            services,
            base_url,
            started: Instant::now(),
            config_path: None,
            queue: None,
            doctor: tokio::sync::Mutex::new(()),
        }
    }

    /// Lets `reload` read `path` (the file the relay started from).
    pub fn with_config_file(mut self, path: PathBuf) -> Self {
        self.config_path = Some(path);
        self
    }

    /// Flushes go through `queue`, which wakes its workers.
    pub fn with_queue(mut self, queue: chatmail_queue::Queue) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Whether `service` runs now.
    fn service_on(&self, service: chatmail_config::Service) -> bool {
        self.services.runs(service) && self.settings.services().is_on(service)
    }

    /// Runs a trusted request (the control socket's, or one [`Api`]
    /// authenticated).
    pub async fn handle(&self, request: Request) -> Reply {
        let method = match request.method.trim() {
            "" => "GET".to_owned(),
            m => m.to_ascii_uppercase(),
        };
        let resource = request.resource.as_str();
        match self.dispatch(&method, resource, request.body).await {
            Ok((status, body)) => Reply::ok(status, resource, body),
            Err(e) => {
                if let AdminError::Store(cause) = &e {
                    tracing::error!(error = %cause, resource, "admin request failed");
                }
                Reply::error(e.status(), resource, e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests;
