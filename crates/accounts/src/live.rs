//! The operator's run-time changes to the limits, the services and the
//! file's values after a reload, kept durably in the store's
//! `admin_settings` so that a restart keeps them.

use std::sync::atomic::Ordering;

use chatmail_config::live::LIVE_LIMITS;
use chatmail_config::{Service, SettingError};
use chatmail_store::StoreError;

use crate::{Accounts, QUOTA_KEY, REGISTRATION_KEY};

/// Why a limit was not changed.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error(transparent)]
    Setting(#[from] SettingError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The `admin_settings` key of an overridden `[limits]` key (the default
/// quota keeps the key the quota resource has always used).
fn limit_key(key: &str) -> String {
    match key {
        "max_mailbox_size" => QUOTA_KEY.to_owned(),
        _ => format!("limit.{key}"),
    }
}

fn service_key(service: Service) -> String {
    format!("service.{}", service.name())
}

impl Accounts {
    /// Overrides the `[limits]` key `key` with `value` durably, or forgets
    /// the override (`None`); the next use reads the new value.
    pub async fn set_limit(&self, key: &str, value: Option<u64>) -> Result<(), LimitError> {
        // Check first, so that a refused value is never stored.
        self.settings.limits_cell().clone().set(key, value)?;
        let stored = value.map(|v| v.to_string());
        self.store
            .set_admin_setting(&limit_key(key), stored.as_deref())
            .await?;
        self.settings.limits_cell().set(key, value)?;
        self.apply_quota();
        Ok(())
    }

    /// Takes a reloaded file's `[limits]`: the operator's override of a
    /// key whose file value changed is forgotten, durably. Returns the
    /// changed keys.
    pub async fn replace_file_limits(
        &self,
        file: chatmail_config::schema::LimitsConfig,
    ) -> Result<Vec<String>, LimitError> {
        let mut trial = self.settings.limits_cell().clone();
        let changed = trial.replace_file(file.clone())?;
        for key in &changed {
            self.store.set_admin_setting(&limit_key(key), None).await?;
        }
        self.settings.limits_cell().replace_file(file)?;
        self.apply_quota();
        Ok(changed)
    }

    /// Sets registration to the reloaded file's value, forgetting the
    /// operator's switch.
    pub async fn reset_registration(&self, open: bool) -> Result<(), StoreError> {
        self.store.set_admin_setting(REGISTRATION_KEY, None).await?;
        self.operator
            .registration_open
            .store(open, Ordering::Relaxed);
        Ok(())
    }

    /// Switches a configured service on or off, durably. Returns whether
    /// it changed.
    pub async fn set_service(&self, service: Service, on: bool) -> Result<bool, StoreError> {
        let value = if on { "on" } else { "off" };
        let key = service_key(service);
        self.store.set_admin_setting(&key, Some(value)).await?;
        Ok(self.settings.services().set(service, on))
    }

    /// Loads the stored overrides of limits and services (at start).
    pub(crate) async fn load_live_state(&self) -> Result<(), StoreError> {
        for key in LIVE_LIMITS {
            let Some(value) = self.store.admin_setting(&limit_key(key)).await? else {
                continue;
            };
            let applied = value
                .parse::<u64>()
                .map_err(|e| e.to_string())
                .and_then(|v| {
                    self.settings
                        .limits_cell()
                        .set(key, Some(v))
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = applied {
                tracing::warn!("ignoring the stored value {value:?} of limits.{key}: {e}");
            }
        }
        self.apply_quota();
        for service in Service::ALL {
            let stored = self.store.admin_setting(&service_key(service)).await?;
            let configured = service.configured(&self.settings.config);
            if let Some(value) = stored {
                self.settings
                    .services()
                    .set(service, configured && value == "on");
            }
        }
        Ok(())
    }

    /// The store's default quota follows `limits.max_mailbox_size`.
    fn apply_quota(&self) {
        let bytes = self.settings.limits().max_mailbox_size;
        self.store.set_quota(Some(bytes));
    }
}
