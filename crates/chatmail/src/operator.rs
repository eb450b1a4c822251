//! `madmail reload`, `services`, `settings`, `queue` and `federation
//! status`: like the verbs of `crate::accounts`, each one admin request to
//! the running relay over the control socket.

use std::process::ExitCode;

use chatmail_admin::Request;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::accounts::{Target, lines, run, s};

#[derive(Subcommand)]
pub enum ServicesCommand {
    /// Show each optional service and whether it runs.
    List,
    /// Start a service the configuration file enables (turn, iroh,
    /// shadowsocks).
    Enable { name: String },
    /// Stop a service: its ports close and its sessions end.
    Disable { name: String },
}

#[derive(Subcommand)]
pub enum SettingsCommand {
    /// Show every `[limits]` key: its value, the file's value and whether
    /// it can change without a restart.
    List,
    /// Show one key.
    Get { key: String },
    /// Override a key while the relay runs (kept across restarts).
    Set { key: String, value: u64 },
    /// Go back to the file's value.
    Reset { key: String },
}

#[derive(Subcommand)]
pub enum QueueCommand {
    /// List queued recipients with their state, attempts and last error.
    List,
    /// Make every pending delivery due now and start it.
    Flush,
    /// Drop every queued message without bouncing.
    Purge,
}

/// `madmail reload`: the relay reads its configuration file again (as on
/// SIGHUP) and applies it, or nothing if a change needs a restart.
pub fn reload(target: Target) -> anyhow::Result<ExitCode> {
    let request = Request::new("POST", "/admin/reload", Value::Null);
    run(&target, request, |b| s(&b["message"]))
}

fn service_line(v: &Value) -> String {
    let note = if v["configured"] == json!(false) {
        "\t(not configured)"
    } else {
        ""
    };
    format!("{}\t{}{note}", s(&v["name"]), s(&v["status"]))
}

pub fn services(target: Target, command: ServicesCommand) -> anyhow::Result<ExitCode> {
    let switch = |name: String, action: &str| {
        Request::new(
            "POST",
            &format!("/admin/services/{name}"),
            json!({ "action": action }),
        )
    };
    match command {
        ServicesCommand::List => {
            let request = Request::new("GET", "/admin/services", Value::Null);
            run(&target, request, |b| {
                lines(&b["services"], service_line).join("\n")
            })
        }
        ServicesCommand::Enable { name } => run(&target, switch(name, "enable"), service_line),
        ServicesCommand::Disable { name } => run(&target, switch(name, "disable"), service_line),
    }
}

fn setting_line(v: &Value) -> String {
    let origin = if v["is_set"] == json!(true) {
        "set at run time"
    } else {
        "from the file"
    };
    let live = if v["live"] == json!(true) {
        "live"
    } else {
        "restart to change"
    };
    format!(
        "{}\t{}\t({origin}; file: {}; {live})",
        s(&v["key"]),
        s(&v["value"]),
        s(&v["default"])
    )
}

pub fn settings(target: Target, command: SettingsCommand) -> anyhow::Result<ExitCode> {
    let one = |key: &str, method: &str, body: Value| {
        Request::new(method, &format!("/admin/settings/{key}"), body)
    };
    let request = match command {
        SettingsCommand::List => {
            let request = Request::new("GET", "/admin/settings", Value::Null);
            return run(&target, request, |b| {
                lines(&b["settings"], setting_line).join("\n")
            });
        }
        SettingsCommand::Get { key } => one(&key, "GET", Value::Null),
        SettingsCommand::Set { key, value } => {
            one(&key, "POST", json!({ "action": "set", "value": value }))
        }
        SettingsCommand::Reset { key } => one(&key, "POST", json!({ "action": "reset" })),
    };
    run(&target, request, setting_line)
}

fn queue_line(e: &Value) -> String {
    format!(
        "{}\t{}\t{}\tattempts={}\t{}",
        s(&e["id"]),
        s(&e["recipient"]),
        s(&e["state"]),
        s(&e["attempts"]),
        s(&e["last_error"])
    )
}

pub fn queue(target: Target, command: QueueCommand) -> anyhow::Result<ExitCode> {
    let action = |action: &str| Request::new("POST", "/admin/queue", json!({ "action": action }));
    match command {
        QueueCommand::List => {
            let request = Request::new("GET", "/admin/queue", Value::Null);
            run(&target, request, |b| {
                let mut out = lines(&b["entries"], queue_line);
                out.push(format!(
                    "{} message(s), {} recipient(s) pending",
                    s(&b["messages"]),
                    s(&b["recipients"])
                ));
                out.join("\n")
            })
        }
        QueueCommand::Flush => run(&target, action("flush"), |b| {
            format!("{} deliveries made due", s(&b["count"]))
        }),
        QueueCommand::Purge => run(&target, action("purge"), |b| {
            format!("{} queued recipient(s) dropped", s(&b["count"]))
        }),
    }
}

fn peer_line(p: &Value) -> String {
    format!(
        "{}\tqueued {}\thttps {}/{} ok/refused\tsmtp {}/{} ok/refused\tunreachable {}\tinbound {}\t{} ms\t{}",
        s(&p["domain"]),
        s(&p["queued_messages"]),
        s(&p["success_https"]),
        s(&p["failed_https"]),
        s(&p["success_smtp"]),
        s(&p["failed_smtp"]),
        s(&p["failed_unreachable"]),
        s(&p["inbound_deliveries"]),
        s(&p["mean_latency_ms"]),
        match p["last_active"].as_u64() {
            Some(secs) => format!("last active at {secs}"),
            None => "no exchange since start".into(),
        },
    )
}

/// `madmail federation status`: delivery figures per peer since start.
pub fn federation_status(target: Target) -> anyhow::Result<ExitCode> {
    let request = Request::new("GET", "/admin/federation/servers", Value::Null);
    run(&target, request, |b| {
        let mut out = lines(&b["servers"], peer_line);
        out.push(format!("{} peer(s)", s(&b["total"])));
        out.join("\n")
    })
}
