//! The resources that change how the running relay behaves as a whole:
//! `/admin/reload` (the configuration file, read again), `/admin/settings`
//! (limits set at run time), `/admin/services` (optional services on and
//! off) and `/admin/federation/servers` (per-peer statistics).

use chatmail_accounts::LimitError;
use chatmail_config::live::{changed_keys, restart_needed};
use chatmail_config::{FederationRules, Service, SettingError};
use serde_json::{Value, json};

use crate::resources::{FEDERATION_KEY, bad, method, number, required};
use crate::{Admin, AdminError, Outcome};

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The keys whose values changed (and now apply).
    pub changed: Vec<String>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("reload is not available: the relay was not started from a configuration file")]
    NoFile,
    #[error("not applied: {0}")]
    Invalid(#[from] chatmail_config::ConfigError),
    #[error("not applied: these settings need a restart: {}", .0.join(", "))]
    NeedsRestart(Vec<String>),
    #[error("not applied: {0}")]
    Limit(String),
    #[error("internal error")]
    Store(#[from] chatmail_store::StoreError),
}

impl From<ReloadError> for AdminError {
    fn from(e: ReloadError) -> Self {
        match e {
            ReloadError::NoFile => AdminError::Unsupported(e.to_string()),
            ReloadError::Store(cause) => AdminError::Store(cause),
            ReloadError::Invalid(_) | ReloadError::Limit(_) => {
                AdminError::BadRequest(e.to_string())
            }
            ReloadError::NeedsRestart(_) => AdminError::Conflict(e.to_string()),
        }
    }
}

impl From<LimitError> for AdminError {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::Store(cause) => AdminError::Store(cause),
            LimitError::Setting(e @ SettingError::Unknown(_)) => {
                AdminError::NotFound(e.to_string())
            }
            LimitError::Setting(e @ SettingError::NotLive(_)) => {
                AdminError::Conflict(e.to_string())
            }
            LimitError::Setting(e) => AdminError::BadRequest(e.to_string()),
        }
    }
}

impl Admin {
    /// Reads the configuration file again and applies what changed, or
    /// nothing at all when a changed key needs a restart or the file is
    /// invalid (SIGHUP, `madmail reload`, `/admin/reload`).
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let path = self.config_path.as_ref().ok_or(ReloadError::NoFile)?;
        let new = chatmail_config::load(path)?.config;
        let mut running = self.file.lock().await;
        let changed = changed_keys(&running, &new);
        let restart = restart_needed(&changed);
        if !restart.is_empty() {
            return Err(ReloadError::NeedsRestart(restart));
        }
        if changed.iter().any(|k| k.starts_with("limits.")) {
            let limits = self.accounts.replace_file_limits(new.limits.clone());
            limits.await.map_err(|e| match e {
                LimitError::Store(cause) => ReloadError::Store(cause),
                LimitError::Setting(e) => ReloadError::Limit(e.to_string()),
            })?;
        }
        if changed.iter().any(|k| k == "registration.open") {
            self.accounts
                .reset_registration(new.registration.open)
                .await?;
        }
        if changed.iter().any(|k| k.starts_with("federation.")) {
            let store = self.accounts.store();
            store.set_admin_setting(FEDERATION_KEY, None).await?;
            self.settings.set_federation_rules(FederationRules {
                policy: new.federation.policy,
                domains: new.federation.domains.clone(),
            });
        }
        *running = new;
        Ok(Reloaded { changed })
    }

    pub(crate) async fn reload_resource(&self, method: &str) -> Outcome {
        if method != "POST" {
            return Err(self::method(method));
        }
        let Reloaded { changed } = self.reload().await?;
        let message = match changed.len() {
            0 => "the configuration file has not changed".to_owned(),
            _ => format!("applied: {}", changed.join(", ")),
        };
        Ok((
            200,
            json!({ "status": "reloaded", "changed": changed, "message": message }),
        ))
    }

    pub(crate) async fn settings_resource(
        &self,
        method: &str,
        name: Option<&str>,
        body: &Value,
    ) -> Outcome {
        let list = || self.settings.limits_cell().settings();
        let Some(name) = name else {
            return match method {
                "GET" => Ok((200, json!({ "settings": list() }))),
                m => Err(self::method(m)),
            };
        };
        let value = match method {
            "GET" => None,
            "POST" | "PUT" => Some(match required(body, "action")? {
                "set" => Some(number(body, "value")?.ok_or_else(|| bad("value is required"))?),
                "reset" => None,
                other => return Err(bad(format!("invalid action: {other} (expected set|reset)"))),
            }),
            m => return Err(self::method(m)),
        };
        if let Some(value) = value {
            self.accounts.set_limit(name, value).await?;
        }
        let setting = list().into_iter().find(|s| s.key == name);
        let setting =
            setting.ok_or_else(|| AdminError::NotFound(format!("unknown setting: {name}")))?;
        Ok((
            200,
            json!({
                "key": setting.key,
                "value": setting.value,
                "default": setting.default,
                "is_set": setting.is_set,
                "live": setting.live,
                "restart_required": !setting.live,
            }),
        ))
    }

    fn service_json(&self, service: Service) -> Value {
        let configured = self.services.runs(service);
        let on = configured && self.settings.services().is_on(service);
        json!({
            "name": service.name(),
            "status": if on { "enabled" } else { "disabled" },
            "configured": configured,
        })
    }

    pub(crate) async fn services_resource(
        &self,
        method: &str,
        name: Option<&str>,
        body: &Value,
    ) -> Outcome {
        let Some(name) = name else {
            return match method {
                "GET" => {
                    let list: Vec<Value> = Service::ALL.map(|s| self.service_json(s)).into();
                    Ok((200, json!({ "services": list })))
                }
                m => Err(self::method(m)),
            };
        };
        let service = Service::parse(name).ok_or_else(|| {
            AdminError::NotFound(format!(
                "unknown service: {name} (expected turn|iroh|shadowsocks)"
            ))
        })?;
        match method {
            "GET" => {}
            "POST" => {
                let on = match required(body, "action")? {
                    "enable" => true,
                    "disable" => false,
                    other => {
                        return Err(bad(format!(
                            "invalid action: {other} (expected enable|disable)"
                        )));
                    }
                };
                if on && !self.services.runs(service) {
                    return Err(AdminError::Conflict(format!(
                        "{name} is not configured: enable [{name}] in the configuration file and restart"
                    )));
                }
                self.accounts.set_service(service, on).await?;
            }
            m => return Err(self::method(m)),
        }
        Ok((200, self.service_json(service)))
    }

    pub(crate) async fn federation_servers(&self, method: &str) -> Outcome {
        if method != "GET" {
            return Err(self::method(method));
        }
        let entries = self.accounts.store().queue_entries().await?;
        let mut queued = std::collections::BTreeMap::<String, u64>::new();
        for entry in &entries {
            if let Some((_, domain)) = entry.recipient.rsplit_once('@') {
                *queued.entry(domain.to_ascii_lowercase()).or_default() += 1;
            }
        }
        let mut servers: Vec<Value> = Vec::new();
        for peer in chatmail_metrics::peers::peers() {
            let mut value = serde_json::to_value(&peer).unwrap_or(Value::Null);
            value["queued_messages"] = queued.remove(&peer.domain).unwrap_or(0).into();
            servers.push(value);
        }
        // Peers with mail waiting but no attempt since start.
        for (domain, count) in queued {
            servers
                .push(json!({ "domain": domain, "queued_messages": count, "last_active": null }));
        }
        Ok((200, json!({ "total": servers.len(), "servers": servers })))
    }
}
