//! Dashboard: `/admin/status` and `/admin/storage`, refreshed every five
//! seconds while the tab is visible.

use std::collections::BTreeMap;
use std::time::Duration;

use leptos::prelude::*;
use leptos::task::spawn_local;
use serde::Deserialize;

use crate::api::Client;
use crate::browser;
use crate::format;
use crate::widgets::{Figure, Loading, RefreshButton, ScreenHead};

/// How often the figures refresh.
const REFRESH: Duration = Duration::from_secs(5);

// Every part defaults, so a relay that adds or drops a figure still shows
// the others.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
struct Status {
    version: String,
    domain: String,
    uptime: Uptime,
    users: Users,
    imap: Imap,
    smtp: Smtp,
    queue: Queued,
    registration: String,
    services: BTreeMap<String, bool>,
}

#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
struct Uptime {
    seconds: u64,
}

#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
struct Users {
    registered: u64,
    online: u64,
}

#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
struct Imap {
    connections: u64,
    sessions: u64,
}

#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
struct Smtp {
    connections: u64,
}

#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
struct Queued {
    messages: u64,
    recipients: u64,
}

#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
struct Storage {
    disk: Disk,
    state_dir: StateDir,
    database: Database,
}

#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
struct Disk {
    total_bytes: u64,
    available_bytes: u64,
    used_bytes: u64,
}

#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
struct StateDir {
    path: String,
}

#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
struct Database {
    driver: String,
    size_bytes: u64,
}

#[component]
pub fn Dashboard() -> impl IntoView {
    let client = Client::get();
    let status = RwSignal::new(None::<Status>);
    let storage = RwSignal::new(None::<Storage>);
    let updated = RwSignal::new(String::new());
    // Set while a refresh runs, so a slow relay never piles them up.
    let running = StoredValue::new(false);

    let refresh = move || {
        if running.get_value() {
            return;
        }
        running.set_value(true);
        spawn_local(async move {
            let new_status = client.poll::<Status>("/admin/status").await;
            let new_storage = client.poll::<Storage>("/admin/storage").await;
            if new_status.is_some() || new_storage.is_some() {
                updated.set(browser::clock());
            }
            if new_status.is_some() {
                status.set(new_status);
            }
            if new_storage.is_some() {
                storage.set(new_storage);
            }
            running.try_update_value(|r| *r = false);
        });
    };
    refresh();
    if let Ok(handle) = set_interval_with_handle(
        move || {
            if !browser::page_hidden() {
                refresh();
            }
        },
        REFRESH,
    ) {
        on_cleanup(move || handle.clear());
    }

    view! {
        <ScreenHead title="Dashboard">
            <span class="muted live" id="updated">
                {move || {
                    let at = updated.get();
                    if at.is_empty() { String::new() } else { format!("live · updated {at}") }
                }}
            </span>
            <RefreshButton id="dashboard-refresh" on_click=refresh />
        </ScreenHead>
        <Loading loaded=Signal::derive(move || status.with(Option::is_some)) />
        {move || status.get().map(|s| view! { <StatusCards status=s /> })}
        {move || storage.get().map(|s| view! { <StorageCard storage=s /> })}
    }
}

#[component]
fn StatusCards(status: Status) -> impl IntoView {
    let Status {
        version,
        domain,
        uptime,
        users,
        imap,
        smtp,
        queue,
        registration,
        services,
    } = status;
    let services = services
        .into_iter()
        .map(|(name, on)| {
            let state = if on { "on" } else { "off" };
            view! {
                <li data-service-state=name.clone() class=format!("pill {state}")>
                    {name.clone()} " " {state}
                </li>
            }
        })
        .collect_view();
    view! {
        <div class="cards">
            <section class="card">
                <h3>"Relay"</h3>
                <dl class="figures">
                    <Figure label="Domain" stat="domain" value=move || domain.clone() />
                    <Figure label="Version" stat="version" value=move || version.clone() />
                    <Figure label="Uptime" stat="uptime" value=move || format::duration(uptime.seconds) />
                    <Figure label="Registration" stat="registration" value=move || registration.clone() />
                </dl>
            </section>
            <section class="card">
                <h3>"Users"</h3>
                <dl class="figures">
                    <Figure label="Registered" stat="users-registered" value=move || format::count(users.registered) />
                    <Figure label="Online" stat="users-online" value=move || format::count(users.online) />
                </dl>
            </section>
            <section class="card">
                <h3>"Connections"</h3>
                <dl class="figures">
                    <Figure label="IMAP" stat="imap-connections" value=move || format::count(imap.connections) />
                    <Figure label="IMAP sessions" stat="imap-sessions" value=move || format::count(imap.sessions) />
                    <Figure label="SMTP" stat="smtp-connections" value=move || format::count(smtp.connections) />
                </dl>
            </section>
            <section class="card">
                <h3>"Outbound queue"</h3>
                <dl class="figures">
                    <Figure label="Messages" stat="queue-messages" value=move || format::count(queue.messages) />
                    <Figure label="Recipients" stat="queue-recipients" value=move || format::count(queue.recipients) />
                </dl>
            </section>
            <section class="card">
                <h3>"Services"</h3>
                <ul class="pills">{services}</ul>
            </section>
        </div>
    }
}

#[component]
fn StorageCard(storage: Storage) -> impl IntoView {
    let Storage { disk, state_dir, database } = storage;
    let percent = if disk.total_bytes == 0 {
        0.0
    } else {
        disk.used_bytes as f64 * 100.0 / disk.total_bytes as f64
    };
    let database_text = format!("{} ({})", format::bytes(database.size_bytes), database.driver);
    view! {
        <section class="card wide">
            <h3>"Storage"</h3>
            <div class="meter" role="meter" aria-valuemin="0" aria-valuemax="100"
                aria-valuenow=format!("{percent:.0}") aria-label="Disk used">
                <div class="meter-fill" style=format!("width: {percent:.1}%")></div>
            </div>
            <dl class="figures">
                <Figure label="Disk used" stat="disk-used"
                    value=move || format!("{} of {} ({percent:.0} %)", format::bytes(disk.used_bytes), format::bytes(disk.total_bytes)) />
                <Figure label="Available" stat="disk-available" value=move || format::bytes(disk.available_bytes) />
                <Figure label="Database" stat="database" value=move || database_text.clone() />
                <Figure label="State directory" stat="state-dir" value=move || state_dir.path.clone() />
            </dl>
        </section>
    }
}
