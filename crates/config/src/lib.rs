//! Configuration of madmail: the TOML schema ([`schema`]) and its conversion
//! into validated runtime [`Settings`].
//!
//! Invariants:
//! - the schema is the single place where keys, their documentation and
//!   their defaults are written; `docs/config.md` is generated from it;
//! - [`load`] reports every problem of a file at once, each with its key
//!   path, and returns settings only when there is none.

pub mod domain;
pub mod live;
pub mod reference;
pub mod schema;
pub mod secret;

use std::path::{Path, PathBuf};

pub use domain::{MailDomain, MailDomainError};
pub use live::{Service, Setting, SettingError};
pub use schema::{Config, TlsMode};

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path (`limits.max_message_size`), empty for the whole file.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file was read but has problems.
    #[error("{} problem(s) in the configuration:\n{}", .0.len(), list(.0))]
    Invalid(Vec<Problem>),
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Validated runtime settings: what the servers read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The schema values as written (after defaults).
    pub config: Config,
    /// The parsed mail domain.
    pub domain: MailDomain,
    /// Absolute path of the SQLite database.
    pub sqlite_path: PathBuf,
    /// Whether the certificate is generated instead of read from files.
    pub self_signed: bool,
    /// The federation policy in force: the file's `[federation] policy`
    /// and `domains` until the operator changes them at run time (every
    /// clone of these settings sees the change).
    federation: std::sync::Arc<std::sync::RwLock<FederationRules>>,
    /// The `[limits]` in force (file values and the operator's overrides).
    limits: std::sync::Arc<std::sync::RwLock<live::Limits>>,
    /// Which optional services run.
    services: std::sync::Arc<live::Switches>,
}

/// A federation policy and the domains it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationRules {
    pub policy: schema::FederationPolicy,
    /// Lower case, without duplicates, in the order added.
    pub domains: Vec<String>,
}

impl FederationRules {
    /// Domains lower-cased, trimmed and without duplicates or empties.
    fn normalized(mut self) -> Self {
        let mut seen = std::collections::HashSet::new();
        self.domains = self
            .domains
            .into_iter()
            .map(|d| d.trim().to_ascii_lowercase())
            .filter(|d| !d.is_empty() && seen.insert(d.clone()))
            .collect();
        self
    }
}

impl Settings {
    /// Registration rules.
    pub fn registration(&self) -> &schema::RegistrationConfig {
        &self.config.registration
    }

    /// The limits in force: the file's `[limits]`, as last reloaded, with
    /// the operator's overrides (read them at each use).
    pub fn limits(&self) -> schema::LimitsConfig {
        let limits = self.limits.read();
        limits
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .effective()
            .clone()
    }

    /// The `[limits]` in force, to inspect or change them (hold the guard
    /// only briefly: every connection reads the limits).
    pub fn limits_cell(&self) -> std::sync::RwLockWriteGuard<'_, live::Limits> {
        self.limits
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The services' on/off switches.
    pub fn services(&self) -> &live::Switches {
        &self.services
    }

    /// The peer ranges `[turn] allowed_peers` lists (validated at load).
    pub fn turn_allowed_peers(&self) -> Vec<ipnet::IpNet> {
        let ranges = self.config.turn.allowed_peers.iter();
        ranges.filter_map(|range| range.parse().ok()).collect()
    }

    /// The relayed addresses of the TURN server: `[turn] relay_addresses`,
    /// else the specific `listen` addresses, else an IP-address mail
    /// domain; empty if none of these gives one.
    pub fn turn_relay_addresses(&self) -> Vec<std::net::IpAddr> {
        let turn = &self.config.turn;
        if !turn.relay_addresses.is_empty() {
            return turn.relay_addresses.clone();
        }
        let mut addresses: Vec<_> = turn
            .listen
            .iter()
            .map(|addr| addr.ip())
            .filter(|ip| !ip.is_unspecified())
            .collect();
        if let (true, MailDomain::Ip(ip)) = (addresses.is_empty(), &self.domain) {
            addresses.push((*ip).into());
        }
        addresses.dedup();
        addresses
    }

    /// The federation policy in force.
    pub fn federation_rules(&self) -> FederationRules {
        self.federation
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the federation policy in force (domains are lower-cased
    /// and deduplicated); every clone of these settings applies it to the
    /// next message.
    pub fn set_federation_rules(&self, rules: FederationRules) {
        *self
            .federation
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = rules.normalized();
    }

    /// Whether the federation policy lets this relay exchange mail with
    /// `domain` (the part after `@`, brackets included for IP literals).
    pub fn federation_allows(&self, domain: &str) -> bool {
        use schema::FederationPolicy::*;
        let federation = self
            .federation
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bare = domain.trim_start_matches('[').trim_end_matches(']');
        let listed = federation
            .domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain) || d.eq_ignore_ascii_case(bare));
        match federation.policy {
            Open => true,
            Allow => listed,
            Block => !listed,
        }
    }
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text)
}

/// Parses and validates configuration text, collecting every problem.
pub fn parse(text: &str) -> Result<Settings, ConfigError> {
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        ConfigError::Invalid(vec![Problem {
            key: String::new(),
            message: e.message().trim().to_owned() + &line_of(text, e.span()),
        }])
    })?;
    let mut problems = Vec::new();
    // serde stops at the first error: record it, drop the offending key and
    // try again, so that one run reports every bad key.
    let config = loop {
        match serde_path_to_error::deserialize::<_, Config>(toml::Value::Table(table.clone())) {
            Ok(config) => break Some(config),
            Err(e) => {
                let mut key: Vec<String> = e.path().iter().map(|s| s.to_string()).collect();
                let message = e.inner().message().trim().to_owned();
                // A missing key has no path of its own: the error sits on its table.
                if let Some(name) = message.strip_prefix("missing field `") {
                    key.push(name.trim_end_matches('`').to_owned());
                }
                problems.push(Problem {
                    key: key.join("."),
                    message,
                });
                if key.is_empty() || !remove_key(&mut table, &key) || problems.len() > 100 {
                    break None;
                }
            }
        }
    };
    if let Some(config) = &config {
        problems.extend(validate(config));
    }
    match config {
        Some(config) if problems.is_empty() => Ok(settings(config)),
        _ => Err(ConfigError::Invalid(problems)),
    }
}

fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) => format!(
            " (line {})",
            text[..span.start.min(text.len())].lines().count().max(1)
        ),
        None => String::new(),
    }
}

fn remove_key(table: &mut toml::Table, path: &[String]) -> bool {
    match path {
        [] => false,
        [last] => table.remove(last).is_some(),
        [first, rest @ ..] => match table.get_mut(first) {
            Some(toml::Value::Table(inner)) => remove_key(inner, rest),
            _ => false,
        },
    }
}

/// The `[turn]` rules.
fn validate_turn(turn: &schema::TurnConfig, bad: &mut impl FnMut(&str, String)) {
    if turn.relay_port_min < 1024 || turn.relay_port_min > turn.relay_port_max {
        bad(
            "turn.relay_port_min",
            "must be at least 1024 and at most turn.relay_port_max".into(),
        );
    }
    for (i, range) in turn.allowed_peers.iter().enumerate() {
        if range.parse::<ipnet::IpNet>().is_err() {
            bad(
                &format!("turn.allowed_peers[{i}]"),
                format!("{range:?} is not a CIDR range such as \"10.0.0.0/8\""),
            );
        }
    }
    let v4 = turn
        .relay_addresses
        .iter()
        .filter(|ip| ip.is_ipv4())
        .count();
    let v6 = turn.relay_addresses.len() - v4;
    if v4 > 1 || v6 > 1 {
        bad(
            "turn.relay_addresses",
            "at most one IPv4 and one IPv6 address".into(),
        );
    }
    if turn.max_allocations == 0 || turn.max_allocations_per_client == 0 {
        bad(
            "turn.max_allocations",
            "turn.max_allocations and turn.max_allocations_per_client must be at least 1".into(),
        );
    }
}

/// The `[limits]` rules (also for values the operator sets at run time).
pub(crate) fn validate_limits(limits: &schema::LimitsConfig) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut bad = |key: &str, message: String| {
        problems.push(Problem {
            key: key.into(),
            message,
        })
    };
    if limits.max_message_size < 1024 {
        bad("limits.max_message_size", "must be at least 1024".into());
    }
    if limits.max_recipients == 0 {
        bad("limits.max_recipients", "must be at least 1".into());
    }
    if limits.max_user_send_per_minute == 0 {
        bad(
            "limits.max_user_send_per_minute",
            "must be at least 1".into(),
        );
    }
    if limits.max_user_send_burst == 0 {
        bad("limits.max_user_send_burst", "must be at least 1".into());
    }
    if limits.login_failure_window == 0 {
        bad("limits.login_failure_window", "must be at least 1".into());
    }
    if limits.login_deadline == 0 {
        bad("limits.login_deadline", "must be at least 1".into());
    }
    if limits.new_accounts_per_minute > 0 && limits.new_accounts_burst == 0 {
        bad("limits.new_accounts_burst", "must be at least 1".into());
    }
    if limits.max_spool_size < limits.max_message_size {
        bad(
            "limits.max_spool_size",
            "must be at least limits.max_message_size".into(),
        );
    }
    problems
}

/// Semantic checks that the types alone cannot express.
fn validate(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut bad = |key: &str, message: String| {
        problems.push(Problem {
            key: key.into(),
            message,
        })
    };
    if let Err(e) = MailDomain::parse(&config.mail_domain) {
        bad("mail_domain", e.to_string());
    }
    let admin_path = &config.admin.path;
    let reserved = ["/", "/new", "/mxdeliv", "/relay"];
    let web_path = &config.admin.web_path;
    if !web_path.is_empty()
        && (!web_path.starts_with('/')
            || web_path.ends_with('/')
            || web_path.contains(['?', '#', ' ', '{', '}', '*', ':'])
            || reserved.contains(&web_path.as_str())
            || web_path == admin_path)
    {
        bad(
            "admin.web_path",
            "must be empty or an absolute path without a trailing slash, query or spaces, other than admin.path and the relay's own pages".into(),
        );
    }
    if !admin_path.starts_with('/')
        || admin_path.contains(['?', '#', ' '])
        || reserved.contains(&admin_path.as_str())
    {
        bad(
            "admin.path",
            "must be an absolute path without query, fragment or spaces, other than the relay's own pages".into(),
        );
    }
    let reg = &config.registration;
    if reg.username_min_length == 0 || reg.username_min_length > reg.username_max_length {
        bad(
            "registration.username_min_length",
            "must be at least 1 and at most registration.username_max_length".into(),
        );
    }
    if reg.username_max_length > 64 {
        bad(
            "registration.username_max_length",
            "must be at most 64 (RFC 5321 §4.5.3.1.1)".into(),
        );
    }
    problems.extend(validate_limits(&config.limits));
    let mut bad = |key: &str, message: String| {
        problems.push(Problem {
            key: key.into(),
            message,
        })
    };
    if config.federation.max_parallel_deliveries == 0 {
        bad(
            "federation.max_parallel_deliveries",
            "must be at least 1".into(),
        );
    }
    for domain in config.federation.static_routes.keys() {
        if MailDomain::parse(domain).is_err() {
            bad(
                &format!("federation.static_routes.{domain}"),
                "not a domain name or IPv4 address".into(),
            );
        }
    }
    let selector = &config.dkim.selector;
    if selector.is_empty()
        || !selector
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        bad(
            "dkim.selector",
            "must be letters, digits, `-` or `_`".into(),
        );
    }
    validate_turn(&config.turn, &mut bad);
    if let Some(url) = &config.iroh.url {
        let host = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .unwrap_or_default();
        if host.is_empty() || host.starts_with('/') || url.chars().any(char::is_whitespace) {
            bad(
                "iroh.url",
                "must be an http:// or https:// URL with a host".into(),
            );
        }
    }
    let proxy = &config.shadowsocks;
    if proxy.enabled && proxy.listen.is_empty() {
        bad(
            "shadowsocks.listen",
            "must name at least one address".into(),
        );
    }
    if proxy.max_connections == 0 {
        bad("shadowsocks.max_connections", "must be at least 1".into());
    }
    if proxy.host.as_deref().is_some_and(|host| {
        host.is_empty() || host.contains(|c: char| c.is_whitespace() || "/@:#?".contains(c))
    }) {
        bad(
            "shadowsocks.host",
            "must be a host name or IPv4 address".into(),
        );
    }
    if config.storage.max_commit_batch == 0 {
        bad("storage.max_commit_batch", "must be at least 1".into());
    }
    if config.tls.mode == TlsMode::Files
        || (config.tls.mode == TlsMode::Auto && !needs_self_signed(config))
    {
        if config.tls.cert_path.is_none() {
            bad(
                "tls.cert_path",
                "required when TLS certificates come from files".into(),
            );
        }
        if config.tls.key_path.is_none() {
            bad(
                "tls.key_path",
                "required when TLS certificates come from files".into(),
            );
        }
    }
    if config.tls.mode == TlsMode::Acme && needs_self_signed(config) {
        bad(
            "tls.mode",
            "ACME needs a public DNS name: IP-address and `_`-prefixed domains use self-signed"
                .into(),
        );
    }
    problems
}

fn needs_self_signed(config: &Config) -> bool {
    MailDomain::parse(&config.mail_domain).is_ok_and(|d| d.wants_self_signed())
}

fn settings(config: Config) -> Settings {
    let domain = MailDomain::parse(&config.mail_domain).expect("validated");
    let self_signed = match config.tls.mode {
        TlsMode::SelfSigned => true,
        TlsMode::Files | TlsMode::Acme => false,
        TlsMode::Auto => domain.wants_self_signed(),
    };
    let sqlite_path = config.state_dir.join(&config.storage.sqlite_path);
    let federation = FederationRules {
        policy: config.federation.policy,
        domains: config.federation.domains.clone(),
    };
    Settings {
        domain,
        sqlite_path,
        self_signed,
        federation: std::sync::Arc::new(std::sync::RwLock::new(federation.normalized())),
        limits: std::sync::Arc::new(std::sync::RwLock::new(live::Limits::new(
            config.limits.clone(),
        ))),
        services: std::sync::Arc::new(live::Switches::new(&config)),
        config,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid(p)) => p.iter().map(|p| p.to_string()).collect(),
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn minimal_config_takes_relay_defaults() {
        let s = parse("mail_domain = \"127.0.0.1\"").unwrap();
        assert_eq!(s.limits().max_message_size, 31_457_280);
        assert_eq!(s.registration().username_min_length, 9);
        assert!(s.self_signed);
        assert!(s.config.log.no_log);
        assert_eq!(s.sqlite_path, PathBuf::from("/var/lib/madmail/madmail.db"));
    }

    #[test]
    fn reports_every_bad_key_with_its_path() {
        let p = problems(
            "mail_domain = \"_x.test\"\nbogus = 1\n[limits]\nmax_recipients = \"many\"\nfoo = 2\n[registration]\nusername_min_length = 10\n",
        );
        assert!(
            p.iter().any(|p| p.starts_with("bogus: unknown field")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|p| p.starts_with("limits.foo: unknown field")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|p| p.starts_with("limits.max_recipients:")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.starts_with("registration.username_min_length:")),
            "{p:?}"
        );
    }

    #[test]
    fn federation_policy_lists_domains() {
        let s = parse("mail_domain = \"1.2.3.4\"\n[federation]\npolicy = \"allow\"\ndomains = [\"a.test\", \"5.6.7.8\"]\n").unwrap();
        assert!(s.federation_allows("A.test"));
        let shared = s.clone();
        let mut rules = s.federation_rules();
        rules.domains.push("C.test".into());
        s.set_federation_rules(rules);
        assert!(shared.federation_allows("c.test"));
        assert!(s.federation_allows("[5.6.7.8]"));
        assert!(!s.federation_allows("b.test"));
        let s = parse(
            "mail_domain = \"1.2.3.4\"\n[federation]\npolicy = \"block\"\ndomains = [\"a.test\"]\n",
        )
        .unwrap();
        assert!(!s.federation_allows("a.test"));
        assert!(s.federation_allows("b.test"));
    }

    #[test]
    fn login_throttling_and_metrics_have_safe_defaults() {
        let s = parse("mail_domain = \"127.0.0.1\"").unwrap();
        assert_eq!(s.limits().max_login_failures_per_ip, 30);
        assert_eq!(s.limits().login_failure_window, 600);
        assert!(!s.config.metrics.enabled);
        assert!(s.config.metrics.listen.ip().is_loopback());
        let p = problems("mail_domain = \"127.0.0.1\"\n[limits]\nlogin_failure_window = 0\n");
        assert_eq!(p, ["limits.login_failure_window: must be at least 1"]);
    }

    #[test]
    fn missing_domain_is_named() {
        assert_eq!(problems("")[0], "mail_domain: missing field `mail_domain`");
    }

    #[test]
    fn dns_domain_needs_certificate_files() {
        let p = problems("mail_domain = \"chat.example.org\"");
        assert!(p.contains(
            &"tls.cert_path: required when TLS certificates come from files".to_string()
        ));
    }

    #[test]
    fn syntax_error_names_the_line() {
        let p = problems("mail_domain = \"x\"\n[limits\n");
        assert!(p[0].contains("line 2"), "{p:?}");
    }
}
