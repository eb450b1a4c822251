//! What changes while the relay runs, and the rule for what may.
//!
//! - The `[limits]` keys that every use reads afresh ([`LIVE_LIMITS`]):
//!   the operator overrides them at run time ([`Limits::set`]), and a
//!   reload of the file replaces their file values.
//! - The on/off switches of the optional services ([`Switches`]); a
//!   service that the file does not configure stays off.
//! - [`restart_needed`]: which keys of a reloaded file may differ from the
//!   running ones. A reload that changes any other key is refused whole.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::schema::{Config, LimitsConfig};

/// `[limits]` keys read at every use, so a change applies to the next
/// connection, command or message.
pub const LIVE_LIMITS: [&str; 4] = [
    "max_message_size",
    "max_recipients",
    "login_deadline",
    "max_mailbox_size",
];

/// Keys outside `[limits]` that a reload applies at once.
const LIVE_KEYS: [&str; 3] = [
    "registration.open",
    "federation.policy",
    "federation.domains",
];

/// One `[limits]` key as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Setting {
    pub key: String,
    /// The value in force.
    pub value: u64,
    /// The configuration file's value.
    pub default: u64,
    /// Whether the operator set a value of their own at run time.
    pub is_set: bool,
    /// Whether it can change without a restart.
    pub live: bool,
}

/// Why a setting was not changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("unknown setting: {0}")]
    Unknown(String),
    #[error(
        "{0} cannot change while the relay runs: edit [limits] in the configuration file and restart"
    )]
    NotLive(String),
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

/// The `[limits]` in force: the file's values with the operator's
/// overrides on top.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The values at start: some sized budgets then, so they bound what a
    /// live change may do (`max_message_size` may only go down).
    start: LimitsConfig,
    file: LimitsConfig,
    overrides: BTreeMap<String, u64>,
    effective: LimitsConfig,
}

impl Limits {
    pub(crate) fn new(file: LimitsConfig) -> Self {
        Self {
            start: file.clone(),
            effective: file.clone(),
            file,
            overrides: BTreeMap::new(),
        }
    }

    /// The values in force.
    pub fn effective(&self) -> &LimitsConfig {
        &self.effective
    }

    /// Every `[limits]` key, by name.
    pub fn settings(&self) -> Vec<Setting> {
        let effective = numbers(&self.effective);
        numbers(&self.file)
            .into_iter()
            .map(|(key, default)| Setting {
                value: effective.get(&key).copied().unwrap_or(default),
                is_set: self.overrides.contains_key(&key),
                live: LIVE_LIMITS.contains(&key.as_str()),
                default,
                key,
            })
            .collect()
    }

    /// Overrides `key` with `value`, or forgets the override (`None`).
    pub fn set(&mut self, key: &str, value: Option<u64>) -> Result<(), SettingError> {
        if !numbers(&self.file).contains_key(key) {
            return Err(SettingError::Unknown(key.to_owned()));
        }
        if !LIVE_LIMITS.contains(&key) {
            return Err(SettingError::NotLive(key.to_owned()));
        }
        let mut overrides = self.overrides.clone();
        match value {
            Some(value) => overrides.insert(key.to_owned(), value),
            None => overrides.remove(key),
        };
        self.effective = self.resolve(&self.file, &overrides)?;
        self.overrides = overrides;
        Ok(())
    }

    /// Takes a reloaded file's limits; an override of a key whose file
    /// value changed is dropped (the file's new value wins). Returns the
    /// keys whose file value changed.
    pub fn replace_file(&mut self, file: LimitsConfig) -> Result<Vec<String>, SettingError> {
        let (old, new) = (numbers(&self.file), numbers(&file));
        let changed: Vec<String> = new
            .iter()
            .filter(|(key, value)| old.get(*key) != Some(value))
            .map(|(key, _)| key.clone())
            .collect();
        let mut overrides = self.overrides.clone();
        overrides.retain(|key, _| !changed.contains(key));
        self.effective = self.resolve(&file, &overrides)?;
        self.file = file;
        self.overrides = overrides;
        Ok(changed)
    }

    /// The operator's overrides (to persist them).
    pub fn overrides(&self) -> &BTreeMap<String, u64> {
        &self.overrides
    }

    fn resolve(
        &self,
        file: &LimitsConfig,
        overrides: &BTreeMap<String, u64>,
    ) -> Result<LimitsConfig, SettingError> {
        let mut map = match serde_json::to_value(file) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => unreachable!("LimitsConfig serialises to an object"),
        };
        for (key, value) in overrides {
            map.insert(key.clone(), (*value).into());
        }
        let limits: LimitsConfig =
            serde_json::from_value(map.into()).map_err(|e| SettingError::Invalid {
                key: overrides.keys().cloned().collect::<Vec<_>>().join(", "),
                message: e.to_string(),
            })?;
        if limits.max_message_size > self.start.max_message_size {
            return Err(SettingError::Invalid {
                key: "max_message_size".into(),
                message: format!(
                    "can only be lowered while the relay runs (the memory budget was sized for {} bytes at start); restart to raise it",
                    self.start.max_message_size
                ),
            });
        }
        let problems = crate::validate_limits(&limits);
        match problems.into_iter().next() {
            Some(problem) => Err(SettingError::Invalid {
                key: problem.key.trim_start_matches("limits.").to_owned(),
                message: problem.message,
            }),
            None => Ok(limits),
        }
    }
}

/// The numeric keys of `limits`.
fn numbers(limits: &LimitsConfig) -> BTreeMap<String, u64> {
    let Ok(serde_json::Value::Object(map)) = serde_json::to_value(limits) else {
        unreachable!("LimitsConfig serialises to an object")
    };
    map.into_iter()
        .filter_map(|(key, value)| Some((key, value.as_u64()?)))
        .collect()
}

/// The keys (dotted paths) whose values differ between `running` and
/// `new`; arrays count as one value.
pub fn changed_keys(running: &Config, new: &Config) -> Vec<String> {
    let (Ok(a), Ok(b)) = (toml::Value::try_from(running), toml::Value::try_from(new)) else {
        return vec![String::new()];
    };
    let mut changed = Vec::new();
    diff("", &a, &b, &mut changed);
    changed
}

fn diff(path: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
    let join = |key: &str| match path {
        "" => key.to_owned(),
        _ => format!("{path}.{key}"),
    };
    match (a, b) {
        (toml::Value::Table(a), toml::Value::Table(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => diff(&join(key), x, y, out),
                    _ => out.push(join(key)),
                }
            }
        }
        _ if a != b => out.push(path.to_owned()),
        _ => {}
    }
}

/// Of `changed` keys, those that only a restart can apply.
pub fn restart_needed(changed: &[String]) -> Vec<String> {
    changed
        .iter()
        .filter(|key| {
            let limit = key.strip_prefix("limits.");
            !(limit.is_some_and(|k| LIVE_LIMITS.contains(&k)) || LIVE_KEYS.contains(&key.as_str()))
        })
        .cloned()
        .collect()
}

/// An optional service that the operator can switch off and on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Turn,
    Iroh,
    Shadowsocks,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::Turn, Service::Iroh, Service::Shadowsocks];

    /// The name in the admin API and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Service::Turn => "turn",
            Service::Iroh => "iroh",
            Service::Shadowsocks => "shadowsocks",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether the configuration file turns it on (only then can it run).
    pub fn configured(self, config: &Config) -> bool {
        match self {
            Service::Turn => config.turn.enabled,
            Service::Iroh => config.iroh.enabled && !config.listen.https.is_empty(),
            Service::Shadowsocks => config.shadowsocks.enabled,
        }
    }
}

/// The services' switches: on while the file configures them, until the
/// operator switches them off.
#[derive(Debug)]
pub struct Switches {
    on: [AtomicBool; 3],
    /// Bumped at each change, for the tasks that start and stop services.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Switches {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            on: Service::ALL.map(|s| AtomicBool::new(s.configured(config))),
            changed: tokio::sync::watch::channel(0).0,
        }
    }

    pub fn is_on(&self, service: Service) -> bool {
        self.on[service as usize].load(Ordering::Relaxed)
    }

    /// Sets the switch; returns whether it changed.
    pub fn set(&self, service: Service, on: bool) -> bool {
        let was = self.on[service as usize].swap(on, Ordering::Relaxed);
        if was != on {
            self.changed.send_modify(|n| *n += 1);
        }
        was != on
    }

    /// Wakes at every change of any switch.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid file: an IP-address relay needs no certificate files.
    const BASE: &str = "mail_domain = \"127.0.0.1\"\n";

    fn limits() -> Limits {
        Limits::new(LimitsConfig::default())
    }

    #[test]
    fn a_live_limit_is_overridden_and_reset() {
        let mut l = limits();
        l.set("max_recipients", Some(3)).unwrap();
        assert_eq!(l.effective().max_recipients, 3);
        let setting = l
            .settings()
            .into_iter()
            .find(|s| s.key == "max_recipients")
            .unwrap();
        assert!(setting.is_set && setting.live);
        assert_eq!((setting.value, setting.default), (3, 1000));
        l.set("max_recipients", None).unwrap();
        assert_eq!(l.effective().max_recipients, 1000);
    }

    #[test]
    fn other_limits_unknown_keys_and_bad_values_are_refused() {
        let mut l = limits();
        assert!(matches!(
            l.set("max_imap_connections", Some(1)),
            Err(SettingError::NotLive(_))
        ));
        assert!(matches!(
            l.set("nope", Some(1)),
            Err(SettingError::Unknown(_))
        ));
        assert!(matches!(
            l.set("max_recipients", Some(0)),
            Err(SettingError::Invalid { .. })
        ));
        let raise = l.set("max_message_size", Some(u64::from(u32::MAX)));
        assert!(matches!(raise, Err(SettingError::Invalid { .. })));
        l.set("max_message_size", Some(2048)).unwrap();
        assert_eq!(
            l.effective().max_recipients,
            1000,
            "a refused change leaves the rest"
        );
    }

    #[test]
    fn a_reload_replaces_file_values_and_drops_their_overrides() {
        let mut l = limits();
        l.set("max_recipients", Some(3)).unwrap();
        l.set("login_deadline", Some(5)).unwrap();
        let file = LimitsConfig {
            max_recipients: 7,
            ..LimitsConfig::default()
        };
        assert_eq!(l.replace_file(file).unwrap(), ["max_recipients"]);
        assert_eq!(l.effective().max_recipients, 7);
        assert_eq!(
            l.effective().login_deadline,
            5,
            "an unchanged key keeps its override"
        );
    }

    #[test]
    fn only_live_keys_change_without_a_restart() {
        let running = crate::parse(BASE).unwrap().config;
        let text = "mail_domain = \"127.0.0.1\"\n[limits]\nmax_recipients = 5\n\
                    [registration]\nopen = false\n[turn]\nport = 3479\n";
        let new = crate::parse(text).unwrap().config;
        let changed = changed_keys(&running, &new);
        assert_eq!(
            changed,
            ["limits.max_recipients", "registration.open", "turn.port"]
        );
        assert_eq!(restart_needed(&changed), ["turn.port"]);
    }

    #[test]
    fn switches_follow_the_file_and_report_changes() {
        let config = crate::parse(BASE).unwrap().config;
        let switches = Switches::new(&config);
        assert!(!switches.is_on(Service::Turn), "off in the default file");
        let changes = switches.subscribe();
        assert!(switches.set(Service::Turn, true));
        assert!(!switches.set(Service::Turn, true));
        assert!(changes.has_changed().unwrap());
        assert_eq!(Service::parse("iroh"), Some(Service::Iroh));
    }
}
