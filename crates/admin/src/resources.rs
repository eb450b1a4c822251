//! The resources of the admin core, dispatched by exact name and method
//! (docs/admin-api.md lists each with an example).

use std::time::{SystemTime, UNIX_EPOCH};

use chatmail_config::FederationRules;
use chatmail_config::schema::FederationPolicy;
use chatmail_metrics::Protocol;
use chatmail_store::{AccountSummary, Invite, NewInvite};
use rand::Rng;
use serde_json::{Value, json};

use crate::{Admin, AdminError, Outcome};

/// Longest page of `/admin/accounts`.
const MAX_PAGE: u64 = 1_000;
/// Page size when none is asked for.
const DEFAULT_PAGE: u64 = 100;
/// Length of generated invite tokens (36^24 ≈ 2^124).
const TOKEN_LEN: usize = 24;
/// Longest invite token, comment or ban reason accepted.
const MAX_TEXT: usize = 256;
/// The `admin_settings` key of the federation rules set at run time.
pub(crate) const FEDERATION_KEY: &str = "federation";

fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(secs).unwrap_or(i64::MAX)
}

pub(crate) fn bad(text: impl Into<String>) -> AdminError {
    AdminError::BadRequest(text.into())
}

pub(crate) fn method(m: &str) -> AdminError {
    AdminError::Method(m.into())
}

/// An optional string field (JSON `null` counts as absent).
fn text<'a>(body: &'a Value, name: &str) -> Result<Option<&'a str>, AdminError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_TEXT => Ok(Some(s)),
        Some(Value::String(_)) => Err(bad(format!("{name} is longer than {MAX_TEXT} bytes"))),
        Some(_) => Err(bad(format!("{name} must be a string"))),
    }
}

pub(crate) fn required<'a>(body: &'a Value, name: &str) -> Result<&'a str, AdminError> {
    text(body, name)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad(format!("{name} is required")))
}

/// An optional non-negative integer field.
pub(crate) fn number(body: &Value, name: &str) -> Result<Option<u64>, AdminError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(format!("{name} must be a non-negative integer"))),
    }
}

/// `90`, `"90s"`, `"30m"`, `"72h"` or `"7d"`, in seconds.
fn duration(body: &Value, name: &str) -> Result<Option<u64>, AdminError> {
    let Some(value) = body.get(name).filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    if let Some(secs) = value.as_u64() {
        return Ok(Some(secs));
    }
    let invalid = || {
        bad(format!(
            "{name} must be seconds or a duration like 72h, 30m, 7d"
        ))
    };
    let text = value.as_str().ok_or_else(invalid)?.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits.parse().map_err(|_| invalid())?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    n.checked_mul(scale).map(Some).ok_or_else(invalid)
}

fn secs(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Admin {
    pub(crate) async fn dispatch(&self, method: &str, resource: &str, body: Value) -> Outcome {
        match resource {
            "/admin/status" => match method {
                "GET" => self.status().await,
                m => Err(self::method(m)),
            },
            "/admin/storage" => match method {
                "GET" => self.storage().await,
                m => Err(self::method(m)),
            },
            "/admin/registration" => self.registration(method, &body).await,
            "/admin/registration-token" => self.invites(method, &body).await,
            "/admin/accounts" => self.accounts(method, &body).await,
            "/admin/blocklist" => self.blocklist(method, &body).await,
            "/admin/quota" => self.quota(method, &body).await,
            "/admin/queue" => self.queue(method, &body).await,
            "/admin/federation" => self.federation(method, &body).await,
            "/admin/federation/rules" => self.federation_rules(method, &body).await,
            "/admin/federation/servers" => self.federation_servers(method).await,
            "/admin/dns" => self.dns_resource(method),
            "/admin/doctor" => self.doctor_resource(method).await,
            "/admin/reload" => self.reload_resource(method).await,
            "/admin/settings" => self.settings_resource(method, None, &body).await,
            "/admin/services" => self.services_resource(method, None, &body).await,
            other if other.starts_with("/admin/settings/") => {
                let name = &other["/admin/settings/".len()..];
                self.settings_resource(method, Some(name), &body).await
            }
            other if other.starts_with("/admin/services/") => {
                let name = &other["/admin/services/".len()..];
                self.services_resource(method, Some(name), &body).await
            }
            other => Err(AdminError::NotFound(format!("unknown resource: {other}"))),
        }
    }

    async fn status(&self) -> Outcome {
        let store = self.accounts.store();
        let registered = store.account_summaries(None, 0, 0).await?.total;
        let queue = store.queue_counts().await?;
        let sessions = self.accounts.sessions();
        let smtp = chatmail_metrics::open_connections(Protocol::Smtp)
            + chatmail_metrics::open_connections(Protocol::Submission);
        Ok((
            200,
            json!({
                "version": crate::VERSION,
                "domain": self.settings.domain.host(),
                "uptime": { "seconds": self.started.elapsed().as_secs() },
                "users": { "registered": registered, "online": sessions.accounts() },
                "imap": {
                    "connections": chatmail_metrics::open_connections(Protocol::Imap),
                    "sessions": sessions.count(),
                },
                "smtp": { "connections": smtp },
                "queue": { "messages": queue.messages, "recipients": queue.recipients },
                "registration": self.registration_word(),
                "services": {
                    "turn": self.service_on(chatmail_config::Service::Turn),
                    "iroh": self.service_on(chatmail_config::Service::Iroh),
                    "shadowsocks": self.service_on(chatmail_config::Service::Shadowsocks),
                },
            }),
        ))
    }

    async fn storage(&self) -> Outcome {
        let state_dir = &self.settings.config.state_dir;
        let disk = rustix::fs::statvfs(state_dir)
            .map(|s| {
                let block = s.f_frsize;
                let total = s.f_blocks.saturating_mul(block);
                let available = s.f_bavail.saturating_mul(block);
                let free = s.f_bfree.saturating_mul(block);
                json!({
                    "total_bytes": total,
                    "available_bytes": available,
                    "used_bytes": total.saturating_sub(free),
                })
            })
            .unwrap_or(Value::Null);
        let database = |suffix: &str| {
            let mut path = self.settings.sqlite_path.clone().into_os_string();
            path.push(suffix);
            std::fs::metadata(path).map_or(0, |m| m.len())
        };
        let size = database("") + database("-wal");
        Ok((
            200,
            json!({
                "disk": disk,
                "state_dir": { "path": state_dir },
                "database": { "driver": "sqlite", "size_bytes": size },
            }),
        ))
    }

    fn registration_word(&self) -> &'static str {
        if self.accounts.registration_open() {
            "open"
        } else {
            "closed"
        }
    }

    async fn registration(&self, method: &str, body: &Value) -> Outcome {
        match method {
            "GET" => {}
            "POST" => {
                let open = match required(body, "action")? {
                    "open" => true,
                    "close" => false,
                    other => {
                        return Err(bad(format!(
                            "invalid action: {other} (expected open|close)"
                        )));
                    }
                };
                self.accounts.set_registration_open(open).await?;
            }
            m => return Err(self::method(m)),
        }
        Ok((200, json!({ "status": self.registration_word() })))
    }

    fn invite_json(&self, invite: &Invite) -> Value {
        let at = now();
        json!({
            "token": invite.token,
            "max_uses": invite.max_uses,
            "used_count": invite.uses,
            "pending_reservations": invite.pending,
            "comment": invite.comment,
            "created_at": invite.created,
            "expires_at": invite.expires,
            "status": invite.status(at),
            "link": format!("dcaccount:{}/new?token={}", self.base_url, invite.token),
        })
    }

    async fn invites(&self, method: &str, body: &Value) -> Outcome {
        let store = self.accounts.store();
        match method {
            "GET" => {
                if let Some(token) = text(body, "token")? {
                    let invite = store.invite(token).await?;
                    let invite =
                        invite.ok_or_else(|| AdminError::NotFound("token not found".into()))?;
                    return Ok((200, self.invite_json(&invite)));
                }
                let invites = store.invites().await?;
                let tokens: Vec<Value> = invites.iter().map(|i| self.invite_json(i)).collect();
                Ok((200, json!({ "total": tokens.len(), "tokens": tokens })))
            }
            "POST" => {
                let token = match text(body, "token")? {
                    Some(t)
                        if t.is_empty()
                            || !t
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
                    {
                        return Err(bad("token may only hold letters, digits, - and _"));
                    }
                    Some(t) => t.to_owned(),
                    None => random_token(),
                };
                let max_uses = number(body, "max_uses")?.unwrap_or(1).max(1);
                let max_uses = u32::try_from(max_uses).map_err(|_| bad("max_uses is too large"))?;
                let at = now();
                let expires = match (number(body, "expires_at")?, duration(body, "expires_in")?) {
                    (Some(at), _) => Some(secs(at)),
                    (None, Some(after)) => Some(at.saturating_add(secs(after))),
                    (None, None) => None,
                };
                if expires.is_some_and(|e| e <= at) {
                    return Err(bad("the token would expire at once"));
                }
                if store.invite(&token).await?.is_some() {
                    return Err(AdminError::Conflict("token exists".into()));
                }
                let comment = text(body, "comment")?.unwrap_or("").to_owned();
                let new = NewInvite {
                    token,
                    max_uses,
                    expires,
                    comment,
                };
                let invite = store.create_invite(new, at).await?;
                Ok((201, self.invite_json(&invite)))
            }
            "DELETE" => {
                let token = required(body, "token")?;
                if !store.delete_invite(token).await? {
                    return Err(AdminError::NotFound("token not found".into()));
                }
                Ok((200, json!({ "deleted": token })))
            }
            m => Err(self::method(m)),
        }
    }

    /// The account's address, normalised; 400 unless it is one of ours.
    fn username(&self, body: &Value) -> Result<String, AdminError> {
        let given = required(body, "username")?;
        self.accounts
            .local_address(given)
            .ok_or_else(|| bad(format!("{given} is not an address of this relay")))
    }

    fn account_json(&self, a: &AccountSummary) -> Value {
        let default = self.accounts.store().quota();
        json!({
            "username": a.address,
            "used_bytes": a.used,
            "max_bytes": a.quota.or(default),
            "is_default_quota": a.quota.is_none(),
            "created_at": a.created_day * 86_400,
            "last_login_at": a.last_login_day.map(|d| d * 86_400),
            "banned": a.banned.is_some(),
            "ban_reason": a.banned,
        })
    }

    async fn account(&self, address: &str) -> Result<AccountSummary, AdminError> {
        let account = self.accounts.store().account_summary(address).await?;
        account.ok_or_else(|| AdminError::NotFound(format!("no account {address}")))
    }

    async fn accounts(&self, method: &str, body: &Value) -> Outcome {
        let store = self.accounts.store();
        match method {
            "GET" => {
                if body.get("username").is_some_and(|v| !v.is_null()) {
                    let address = self.username(body)?;
                    let account = self.account(&address).await?;
                    let mut reply = self.account_json(&account);
                    let sessions = self.accounts.sessions().count_of(&address);
                    reply["sessions"] = json!(sessions);
                    return Ok((200, reply));
                }
                let offset = number(body, "offset")?.unwrap_or(0);
                let limit = number(body, "limit")?.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE);
                let search = text(body, "search")?.map(str::to_ascii_lowercase);
                let page = store
                    .account_summaries(search.as_deref(), offset, limit)
                    .await?;
                let accounts: Vec<Value> =
                    page.accounts.iter().map(|a| self.account_json(a)).collect();
                Ok((
                    200,
                    json!({ "total": page.total, "offset": offset, "limit": limit, "accounts": accounts }),
                ))
            }
            "POST" => {
                let (address, password) = match text(body, "username")? {
                    Some(_) => {
                        let address = self.username(body)?;
                        let password = match text(body, "password")? {
                            Some(p) => p.to_owned(),
                            None => self.accounts.generate().1,
                        };
                        (address, password)
                    }
                    None => self.accounts.generate(),
                };
                match self.accounts.add(&address, &password).await {
                    Ok(true) => Ok((201, json!({ "email": address, "password": password }))),
                    Ok(false) => Err(AdminError::Conflict(format!("{address} exists already"))),
                    Err(chatmail_accounts::LoginError::Temporary(e)) => Err(e.into()),
                    Err(_) => Err(bad(
                        "refused: the local part must follow the registration rules, the password must be long enough and the name must not be blocked",
                    )),
                }
            }
            "DELETE" => {
                let address = self.username(body)?;
                let deleted = match self.accounts.delete(&address).await {
                    Ok(deleted) => deleted,
                    Err(chatmail_accounts::LoginError::Temporary(e)) => return Err(e.into()),
                    Err(_) => false,
                };
                if !deleted {
                    return Err(AdminError::NotFound(format!("no account {address}")));
                }
                Ok((200, json!({ "deleted": address })))
            }
            m => Err(self::method(m)),
        }
    }

    async fn blocklist(&self, method: &str, body: &Value) -> Outcome {
        match method {
            "GET" => {
                let blocked = self.accounts.store().blocklist().await?;
                let entries: Vec<Value> = blocked
                    .iter()
                    .map(|b| json!({ "username": b.address, "reason": b.reason, "blocked_at": b.created }))
                    .collect();
                Ok((200, json!({ "total": entries.len(), "blocked": entries })))
            }
            "POST" => {
                let address = self.username(body)?;
                let reason = text(body, "reason")?
                    .filter(|r| !r.is_empty())
                    .unwrap_or("manually blocked");
                let sessions = self.accounts.sessions().count_of(&address);
                self.accounts.ban(&address, reason).await?;
                Ok((200, json!({ "blocked": address, "disconnected": sessions })))
            }
            "DELETE" => {
                let address = self.username(body)?;
                if !self.accounts.unban(&address).await? {
                    return Err(AdminError::NotFound(format!("{address} is not blocked")));
                }
                Ok((200, json!({ "unblocked": address })))
            }
            m => Err(self::method(m)),
        }
    }

    async fn quota(&self, method: &str, body: &Value) -> Outcome {
        let store = self.accounts.store();
        let named = body.get("username").is_some_and(|v| !v.is_null());
        match (method, named) {
            ("GET", true) => {
                let account = self.account(&self.username(body)?).await?;
                Ok((200, self.quota_json(&account)))
            }
            ("GET", false) => {
                let accounts = store.account_summaries(None, 0, 0).await?.total;
                Ok((
                    200,
                    json!({ "default_quota_bytes": store.quota(), "accounts_count": accounts }),
                ))
            }
            ("PUT", _) => {
                let bytes =
                    number(body, "max_bytes")?.ok_or_else(|| bad("max_bytes is required"))?;
                if !named {
                    self.accounts.set_default_quota(Some(bytes)).await?;
                    return Ok((200, json!({ "default_quota_bytes": bytes })));
                }
                let address = self.username(body)?;
                if !store.set_account_quota(&address, Some(bytes)).await? {
                    return Err(AdminError::NotFound(format!("no account {address}")));
                }
                Ok((200, self.quota_json(&self.account(&address).await?)))
            }
            ("DELETE", true) => {
                let address = self.username(body)?;
                if !store.set_account_quota(&address, None).await? {
                    return Err(AdminError::NotFound(format!("no account {address}")));
                }
                Ok((200, json!({ "reset": address })))
            }
            ("DELETE", false) => Err(bad("username is required")),
            (m, _) => Err(self::method(m)),
        }
    }

    fn quota_json(&self, a: &AccountSummary) -> Value {
        json!({
            "username": a.address,
            "used_bytes": a.used,
            "max_bytes": a.quota.or(self.accounts.store().quota()),
            "is_default": a.quota.is_none(),
        })
    }

    async fn queue(&self, method: &str, body: &Value) -> Outcome {
        let store = self.accounts.store();
        match method {
            "GET" => {
                let entries = store.queue_entries().await?;
                let counts = store.queue_counts().await?;
                let list: Vec<Value> = entries
                    .iter()
                    .map(|e| {
                        json!({
                            "id": e.id,
                            "recipient": e.recipient,
                            "state": format!("{:?}", e.state).to_ascii_lowercase(),
                            "attempts": e.attempts,
                            "last_error": e.last_error,
                        })
                    })
                    .collect();
                Ok((
                    200,
                    json!({ "messages": counts.messages, "recipients": counts.recipients, "entries": list }),
                ))
            }
            "POST" => {
                let action = required(body, "action")?;
                let count = match (action, &self.queue) {
                    // Through the queue, so that its workers wake at once.
                    ("flush", Some(queue)) => queue.flush().await.map_err(queue_error)?,
                    ("flush", None) => store.queue_flush().await?,
                    ("purge", _) => store.queue_purge().await?,
                    (other, _) => {
                        return Err(bad(format!(
                            "invalid action: {other} (expected flush|purge)"
                        )));
                    }
                };
                Ok((200, json!({ "action": action, "count": count })))
            }
            m => Err(self::method(m)),
        }
    }
}

fn queue_error(e: chatmail_queue::QueueError) -> AdminError {
    match e {
        chatmail_queue::QueueError::Store(cause) => AdminError::Store(cause),
        other => AdminError::BadRequest(other.to_string()),
    }
}

fn policy_word(policy: FederationPolicy) -> &'static str {
    match policy {
        FederationPolicy::Open => "open",
        FederationPolicy::Allow => "allow",
        FederationPolicy::Block => "block",
    }
}

fn policy_of(word: &str) -> Result<FederationPolicy, AdminError> {
    match word {
        "open" => Ok(FederationPolicy::Open),
        "allow" => Ok(FederationPolicy::Allow),
        "block" => Ok(FederationPolicy::Block),
        other => Err(bad(format!(
            "invalid policy: {other} (expected open|allow|block)"
        ))),
    }
}

/// A peer domain as rules list it: lower case, brackets off IP literals.
fn domain_of(body: &Value) -> Result<String, AdminError> {
    let given = required(body, "domain")?.trim().to_ascii_lowercase();
    let bare = given.trim_start_matches('[').trim_end_matches(']');
    let plausible = !bare.is_empty()
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    if !plausible {
        return Err(bad(format!("{given} is not a domain")));
    }
    Ok(bare.to_owned())
}

impl Admin {
    fn federation_json(&self) -> Value {
        let rules = self.settings.federation_rules();
        json!({
            "policy": policy_word(rules.policy),
            "domains": rules.domains,
            "total": rules.domains.len(),
        })
    }

    /// Applies and stores new rules.
    async fn set_federation(&self, rules: FederationRules) -> Result<(), AdminError> {
        self.settings.set_federation_rules(rules);
        let stored = self.settings.federation_rules();
        let value = json!({ "policy": policy_word(stored.policy), "domains": stored.domains });
        let store = self.accounts.store();
        store
            .set_admin_setting(FEDERATION_KEY, Some(&value.to_string()))
            .await?;
        Ok(())
    }

    /// Loads what the operator changed at run time that lives here (the
    /// federation rules); servers call it once at start.
    pub async fn load_state(&self) -> Result<(), chatmail_store::StoreError> {
        let Some(stored) = self.accounts.store().admin_setting(FEDERATION_KEY).await? else {
            return Ok(());
        };
        let value: Value = serde_json::from_str(&stored).unwrap_or(Value::Null);
        let policy = value["policy"].as_str().map(policy_of);
        let domains = value["domains"].as_array().map(|list| {
            list.iter()
                .filter_map(|d| d.as_str().map(str::to_owned))
                .collect()
        });
        match (policy, domains) {
            (Some(Ok(policy)), Some(domains)) => {
                self.settings
                    .set_federation_rules(FederationRules { policy, domains });
            }
            _ => tracing::warn!("ignoring the stored federation rules: unreadable"),
        }
        Ok(())
    }

    async fn federation(&self, method: &str, body: &Value) -> Outcome {
        match method {
            "GET" => {}
            "POST" => {
                let mut rules = self.settings.federation_rules();
                if let Some(policy) = text(body, "policy")? {
                    rules.policy = policy_of(policy)?;
                }
                if let Some(list) = body.get("domains").filter(|v| !v.is_null()) {
                    let list = list
                        .as_array()
                        .ok_or_else(|| bad("domains must be a list"))?;
                    rules.domains = list
                        .iter()
                        .map(|d| domain_of(&json!({ "domain": d })))
                        .collect::<Result<_, _>>()?;
                }
                self.set_federation(rules).await?;
            }
            m => return Err(self::method(m)),
        }
        Ok((200, self.federation_json()))
    }

    async fn federation_rules(&self, method: &str, body: &Value) -> Outcome {
        let mut rules = self.settings.federation_rules();
        match method {
            "GET" => return Ok((200, self.federation_json())),
            "POST" => {
                let domain = domain_of(body)?;
                let listed = |rules: &FederationRules| rules.domains.contains(&domain);
                // `allow` and `block` say what should happen to the domain's
                // mail; without one the domain joins the policy's list.
                let listing = match (text(body, "action")?, rules.policy) {
                    (None, _) => true,
                    (Some("allow"), FederationPolicy::Allow) => true,
                    (Some("allow"), FederationPolicy::Block) => false,
                    (Some("allow"), FederationPolicy::Open) => {
                        return Ok((200, self.federation_json()));
                    }
                    (Some("block"), FederationPolicy::Open) => {
                        rules.policy = FederationPolicy::Block;
                        rules.domains.clear();
                        true
                    }
                    (Some("block"), FederationPolicy::Allow) => false,
                    (Some("block"), FederationPolicy::Block) => true,
                    (Some(other), _) => {
                        return Err(bad(format!(
                            "invalid action: {other} (expected allow|block)"
                        )));
                    }
                };
                if listing && !listed(&rules) {
                    rules.domains.push(domain);
                } else if !listing {
                    rules.domains.retain(|d| *d != domain);
                }
            }
            "DELETE" => {
                let domain = domain_of(body)?;
                if !rules.domains.contains(&domain) {
                    return Err(AdminError::NotFound(format!("{domain} is not listed")));
                }
                rules.domains.retain(|d| *d != domain);
            }
            m => return Err(self::method(m)),
        }
        self.set_federation(rules).await?;
        Ok((200, self.federation_json()))
    }
}

fn random_token() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..TOKEN_LEN)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}
