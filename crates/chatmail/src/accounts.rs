//! `madmail accounts ...`, `registration`, `registration-tokens`,
//! `blocklist`, `status`: operator verbs, each one admin request to the
//! running relay over the control socket (`crate::control`), so a change
//! applies at once and the CLI, the API and the web UI cannot disagree.

use std::path::PathBuf;
use std::process::ExitCode;

use chatmail_admin::{Reply, Request};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// What every verb takes.
#[derive(Args)]
pub struct Target {
    /// Configuration file (the control socket is in its state directory).
    #[arg(
        long,
        short,
        global = true,
        default_value = "/etc/madmail/chatmail.toml"
    )]
    pub config: PathBuf,
    /// Print the reply's JSON body instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum AccountsCommand {
    /// List accounts (address, storage used, quota, last login day, ban).
    List {
        /// Only addresses containing this.
        #[arg(long)]
        search: Option<String>,
        #[arg(long, default_value_t = 0)]
        offset: u64,
        #[arg(long, default_value_t = 1000)]
        limit: u64,
    },
    /// Show one account.
    Info { address: String },
    /// Create an account; prints the password when none is given.
    Add {
        /// Full address (`name@domain`).
        address: String,
        /// Password (at least `registration.password_min_length` long);
        /// generated when absent.
        #[arg(long, env = "MADMAIL_PASSWORD")]
        password: Option<String>,
    },
    /// Delete an account and all its mail; the name stays blocked.
    Delete { address: String },
    /// Block an address: its sessions end at once, it cannot log in, and
    /// its mail stays until `unban` or `delete`.
    Ban {
        address: String,
        /// Why (shown in `ban-list`).
        reason: Option<String>,
    },
    /// Take an address off the blocklist.
    Unban { address: String },
    /// List blocked addresses with their reasons.
    BanList,
    /// Show or set a quota: of one account, or with no address the default.
    Quota {
        address: Option<String>,
        /// New quota in bytes.
        #[arg(long)]
        set: Option<u64>,
        /// Back to the default (with an address).
        #[arg(long, conflicts_with = "set")]
        reset: bool,
    },
}

#[derive(Subcommand)]
pub enum RegistrationCommand {
    /// Let first logins create accounts.
    Open,
    /// Only invite tokens create accounts; existing ones keep working.
    Close,
    /// Print `open` or `closed`.
    Status,
}

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Create an invite token; prints it and its `dcaccount:` link.
    Create {
        /// The token (letters, digits, `-`, `_`); random when absent.
        #[arg(long)]
        token: Option<String>,
        /// Accounts it may create.
        #[arg(long, default_value_t = 1)]
        max_uses: u64,
        #[arg(long)]
        comment: Option<String>,
        /// Lifetime: seconds, or like `72h`, `30m`, `7d`.
        #[arg(long)]
        expires: Option<String>,
    },
    /// List invite tokens with their uses and status.
    List,
    /// Show one invite token.
    Status { token: String },
    /// Delete an invite token.
    Delete { token: String },
}

#[derive(Subcommand)]
pub enum BlocklistCommand {
    /// List blocked addresses.
    List,
    /// Block an address (as `accounts ban`).
    Add {
        address: String,
        reason: Option<String>,
    },
    /// Unblock an address (as `accounts unban`).
    Remove { address: String },
}

#[derive(Subcommand)]
pub enum FederationCommand {
    /// Show the policy and the domains it lists.
    List,
    /// Set the policy: `open` (every domain), `allow` (only the listed
    /// ones) or `block` (all but the listed ones).
    Policy { policy: String },
    /// Let mail from and to DOMAIN through (under `allow`: list it; under
    /// `block`: unlist it).
    Allow { domain: String },
    /// Refuse mail from and to DOMAIN (under `block`: list it; under
    /// `allow`: unlist it; under `open`: the policy becomes `block`).
    Block { domain: String },
    /// Take DOMAIN off the list.
    Remove { domain: String },
    /// Delivery figures per peer relay since start: queued messages,
    /// attempts accepted and refused by transport, inbound messages,
    /// latency.
    Status,
}

/// Sends one request and prints the outcome with `text` (or the JSON).
pub(crate) fn run(
    target: &Target,
    request: Request,
    text: impl FnOnce(&Value) -> String,
) -> anyhow::Result<ExitCode> {
    let settings = chatmail_config::load(&target.config)?;
    let reply: Reply = crate::control::call(&settings, &request)?;
    if !reply.is_ok() {
        let error = reply.error.as_deref().unwrap_or("failed");
        eprintln!("madmail: {error} ({})", reply.status);
        return Ok(ExitCode::FAILURE);
    }
    if target.json {
        println!("{}", serde_json::to_string_pretty(&reply.body)?);
    } else {
        let out = text(&reply.body);
        if !out.is_empty() {
            println!("{out}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn day(v: &Value) -> String {
    v.as_i64()
        .map_or("-".into(), |secs| format!("day {}", secs / 86_400))
}

fn account_line(a: &Value) -> String {
    let ban = match a["ban_reason"].as_str() {
        Some(reason) => format!("\tbanned: {reason}"),
        None => String::new(),
    };
    format!(
        "{}\t{} / {} bytes\tlast login {}{ban}",
        s(&a["username"]),
        s(&a["used_bytes"]),
        s(&a["max_bytes"]),
        day(&a["last_login_at"]),
    )
}

fn invite_line(t: &Value) -> String {
    format!(
        "{}\t{}\tused {}/{} (+{} pending)\texpires {}\t{}\t{}",
        s(&t["token"]),
        s(&t["status"]),
        s(&t["used_count"]),
        s(&t["max_uses"]),
        s(&t["pending_reservations"]),
        s(&t["expires_at"]),
        s(&t["link"]),
        s(&t["comment"]),
    )
}

pub(crate) fn lines(list: &Value, line: fn(&Value) -> String) -> Vec<String> {
    list.as_array()
        .map(|items| items.iter().map(line).collect())
        .unwrap_or_default()
}

pub fn accounts(target: Target, command: AccountsCommand) -> anyhow::Result<ExitCode> {
    let req = |method: &str, body: Value| Request::new(method, "/admin/accounts", body);
    match command {
        AccountsCommand::List {
            search,
            offset,
            limit,
        } => {
            let body = json!({ "search": search, "offset": offset, "limit": limit });
            run(&target, req("GET", body), |b| {
                let mut out = lines(&b["accounts"], account_line);
                out.push(format!("{} account(s)", s(&b["total"])));
                out.join("\n")
            })
        }
        AccountsCommand::Info { address } => {
            run(&target, req("GET", json!({ "username": address })), |a| {
                format!("{}\tsessions {}", account_line(a), s(&a["sessions"]))
            })
        }
        AccountsCommand::Add { address, password } => {
            let generated = password.is_none();
            let body = json!({ "username": address, "password": password });
            run(&target, req("POST", body), |b| match generated {
                true => format!("{} {}", s(&b["email"]), s(&b["password"])),
                false => s(&b["email"]),
            })
        }
        AccountsCommand::Delete { address } => run(
            &target,
            req("DELETE", json!({ "username": address })),
            |b| format!("deleted {}", s(&b["deleted"])),
        ),
        AccountsCommand::Ban { address, reason } => {
            blocklist(target, BlocklistCommand::Add { address, reason })
        }
        AccountsCommand::Unban { address } => {
            blocklist(target, BlocklistCommand::Remove { address })
        }
        AccountsCommand::BanList => blocklist(target, BlocklistCommand::List),
        AccountsCommand::Quota {
            address,
            set,
            reset,
        } => {
            let method = match (set, reset) {
                (Some(_), _) => "PUT",
                (None, true) => "DELETE",
                (None, false) => "GET",
            };
            let body = json!({ "username": address, "max_bytes": set });
            run(&target, Request::new(method, "/admin/quota", body), |b| {
                if let Some(reset) = b.get("reset") {
                    return format!("{} uses the default quota again", s(reset));
                }
                match b.get("username") {
                    Some(user) => format!(
                        "{}\t{} / {} bytes{}",
                        s(user),
                        s(&b["used_bytes"]),
                        s(&b["max_bytes"]),
                        if b["is_default"] == true {
                            " (default)"
                        } else {
                            ""
                        }
                    ),
                    None => format!("default quota {} bytes", s(&b["default_quota_bytes"])),
                }
            })
        }
    }
}

pub fn registration(target: Target, command: RegistrationCommand) -> anyhow::Result<ExitCode> {
    let request = match command {
        RegistrationCommand::Status => Request::new("GET", "/admin/registration", Value::Null),
        RegistrationCommand::Open | RegistrationCommand::Close => {
            let action = if matches!(command, RegistrationCommand::Open) {
                "open"
            } else {
                "close"
            };
            Request::new("POST", "/admin/registration", json!({ "action": action }))
        }
    };
    run(&target, request, |b| s(&b["status"]))
}

pub fn tokens(target: Target, command: TokensCommand) -> anyhow::Result<ExitCode> {
    let req = |method: &str, body: Value| Request::new(method, "/admin/registration-token", body);
    match command {
        TokensCommand::Create {
            token,
            max_uses,
            comment,
            expires,
        } => {
            let body = json!({
                "token": token, "max_uses": max_uses, "comment": comment, "expires_in": expires,
            });
            run(&target, req("POST", body), |t| {
                format!("{}\n{}", s(&t["token"]), s(&t["link"]))
            })
        }
        TokensCommand::List => run(&target, req("GET", Value::Null), |b| {
            let mut out = lines(&b["tokens"], invite_line);
            out.push(format!("{} token(s)", s(&b["total"])));
            out.join("\n")
        }),
        TokensCommand::Status { token } => {
            run(&target, req("GET", json!({ "token": token })), invite_line)
        }
        TokensCommand::Delete { token } => {
            run(&target, req("DELETE", json!({ "token": token })), |b| {
                format!("deleted {}", s(&b["deleted"]))
            })
        }
    }
}

pub fn blocklist(target: Target, command: BlocklistCommand) -> anyhow::Result<ExitCode> {
    let req = |method: &str, body: Value| Request::new(method, "/admin/blocklist", body);
    match command {
        BlocklistCommand::List => run(&target, req("GET", Value::Null), |b| {
            let mut out = lines(&b["blocked"], |e| {
                format!(
                    "{}\t{}\tsince {}",
                    s(&e["username"]),
                    s(&e["reason"]),
                    s(&e["blocked_at"])
                )
            });
            out.push(format!("{} blocked", s(&b["total"])));
            out.join("\n")
        }),
        BlocklistCommand::Add { address, reason } => {
            let body = json!({ "username": address, "reason": reason });
            run(&target, req("POST", body), |b| {
                format!(
                    "blocked {} ({} session(s) cut)",
                    s(&b["blocked"]),
                    s(&b["disconnected"])
                )
            })
        }
        BlocklistCommand::Remove { address } => run(
            &target,
            req("DELETE", json!({ "username": address })),
            |b| format!("unblocked {}", s(&b["unblocked"])),
        ),
    }
}

pub fn federation(target: Target, command: FederationCommand) -> anyhow::Result<ExitCode> {
    let rules = |method: &str, body: Value| Request::new(method, "/admin/federation/rules", body);
    let request = match command {
        FederationCommand::List => Request::new("GET", "/admin/federation", Value::Null),
        FederationCommand::Policy { policy } => {
            Request::new("POST", "/admin/federation", json!({ "policy": policy }))
        }
        FederationCommand::Allow { domain } => {
            rules("POST", json!({ "domain": domain, "action": "allow" }))
        }
        FederationCommand::Block { domain } => {
            rules("POST", json!({ "domain": domain, "action": "block" }))
        }
        FederationCommand::Remove { domain } => rules("DELETE", json!({ "domain": domain })),
        FederationCommand::Status => return crate::operator::federation_status(target),
    };
    run(&target, request, |b| {
        let mut out = vec![format!("policy: {}", s(&b["policy"]))];
        out.extend(lines(&b["domains"], s));
        out.join("\n")
    })
}

pub fn status(target: Target) -> anyhow::Result<ExitCode> {
    let request = Request::new("GET", "/admin/status", Value::Null);
    run(&target, request, |b| {
        [
            format!("madmail {} on {}", s(&b["version"]), s(&b["domain"])),
            format!("uptime: {} s", s(&b["uptime"]["seconds"])),
            format!(
                "accounts: {} ({} online)",
                s(&b["users"]["registered"]),
                s(&b["users"]["online"])
            ),
            format!(
                "connections: imap {}, smtp {}",
                s(&b["imap"]["connections"]),
                s(&b["smtp"]["connections"])
            ),
            format!(
                "queue: {} message(s), {} recipient(s)",
                s(&b["queue"]["messages"]),
                s(&b["queue"]["recipients"])
            ),
            format!("registration: {}", s(&b["registration"])),
            format!(
                "services: turn {}, iroh {}, shadowsocks {}",
                s(&b["services"]["turn"]),
                s(&b["services"]["iroh"]),
                s(&b["services"]["shadowsocks"])
            ),
        ]
        .join("\n")
    })
}

/// `madmail admin-token`: the admin API's bearer token (read from the
/// state directory; the relay creates it on its first start).
pub fn admin_token(config: &std::path::Path, raw: bool) -> anyhow::Result<ExitCode> {
    let settings = chatmail_config::load(config)?;
    let token = chatmail_admin::load_token(&settings.config.state_dir, false)
        .map_err(|e| anyhow::anyhow!("{e}: the relay writes the token on its first start"))?;
    if raw {
        println!("{token}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{token}");
    let admin = &settings.config.admin;
    if admin.enabled {
        let base = crate::server::base_url(&settings, settings.config.listen.https.first());
        println!("API: POST {base}{}", admin.path);
    } else {
        println!("the HTTPS admin API is off: set [admin] enabled = true to serve it");
    }
    Ok(ExitCode::SUCCESS)
}
