//! Accounts: one page of `/admin/accounts` at a time (a search and an
//! offset; the relay counts the matches), and per account ban or unban,
//! quota and delete. New accounts are made here too.
//!
//! Test hooks: the row is `tr[data-account=<address>]`; its buttons carry
//! `data-action` (`quota`, `ban`, `unban`, `delete`) and
//! `data-username=<address>`.

use leptos::prelude::*;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use crate::api::{Client, Method};
use crate::browser;
use crate::format;
use crate::widgets::{Col, CopyButton, Loading, RefreshButton, ScreenHead, Table};

/// Accounts per page.
const PAGE: u64 = 50;

#[derive(Clone, Deserialize, PartialEq)]
struct Account {
    username: String,
    #[serde(default)]
    used_bytes: u64,
    #[serde(default)]
    max_bytes: u64,
    #[serde(default)]
    is_default_quota: bool,
    #[serde(default)]
    created_at: Option<i64>,
    #[serde(default)]
    last_login_at: Option<i64>,
    #[serde(default)]
    banned: bool,
    #[serde(default)]
    ban_reason: Option<String>,
}

#[derive(Clone, Deserialize, PartialEq)]
struct Page {
    total: u64,
    offset: u64,
    accounts: Vec<Account>,
}

/// What the page shows: the search as submitted, and where the page starts.
#[derive(Clone, Default, PartialEq)]
struct Query {
    search: String,
    offset: u64,
}

#[derive(Clone, Deserialize, PartialEq)]
struct Created {
    email: String,
    password: String,
}

#[derive(Deserialize)]
struct Banned {
    blocked: String,
    #[serde(default)]
    disconnected: u64,
}

#[component]
pub fn Accounts() -> impl IntoView {
    let client = Client::get();
    let query = RwSignal::new(Query::default());
    let draft = RwSignal::new(String::new());
    let page = RwSignal::new(None::<Page>);

    let load = Callback::new(move |()| {
        let Some(Query { search, offset }) = query.try_get_untracked() else {
            return;
        };
        let body = json!({"search": search, "offset": offset, "limit": PAGE});
        client.run(Method::Get, "/admin/accounts", body, move |p: Page| {
            page.set(Some(p))
        });
    });
    load.run(());
    let go = move |offset: u64| {
        query.update(|q| q.offset = offset);
        load.run(());
    };
    let search = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        query.set(Query {
            search: draft.get_untracked().trim().to_owned(),
            offset: 0,
        });
        load.run(());
    };
    let total = move || page.with(|p| p.as_ref().map_or(0, |p| p.total));
    let offset = move || query.with(|q| q.offset);
    let last = move || total().saturating_sub(1) / PAGE * PAGE;

    view! {
        <ScreenHead title="Accounts">
            <RefreshButton id="accounts-refresh" on_click=move || load.run(()) />
        </ScreenHead>
        <CreateAccount reload=load />
        <section class="card">
            <form class="search" role="search" on:submit=search>
                <input
                    id="accounts-search"
                    type="search"
                    placeholder="Search addresses"
                    aria-label="Search addresses"
                    bind:value=draft
                />
                <button type="submit" id="accounts-search-button" disabled=move || client.busy()>
                    "Search"
                </button>
            </form>
            <div class="pager">
                <span id="accounts-range" class="muted">
                    {move || page.with(|p| {
                        p.as_ref().map(|p| range_text(p.offset, p.accounts.len() as u64, p.total))
                    })}
                </span>
                <div class="actions">
                    <button type="button" class="secondary small" id="accounts-first" data-action="first-page"
                        disabled=move || client.busy() || offset() == 0 on:click=move |_| go(0)>"First"</button>
                    <button type="button" class="secondary small" id="accounts-prev" data-action="prev-page"
                        disabled=move || client.busy() || offset() == 0
                        on:click=move |_| go(offset().saturating_sub(PAGE))>"Previous"</button>
                    <button type="button" class="secondary small" id="accounts-next" data-action="next-page"
                        disabled=move || { client.busy() || offset() + PAGE >= total() }
                        on:click=move |_| go(offset() + PAGE)>"Next"</button>
                    <button type="button" class="secondary small" id="accounts-last" data-action="last-page"
                        disabled=move || { client.busy() || offset() >= last() } on:click=move |_| go(last())>"Last"</button>
                </div>
            </div>
            <Loading loaded=Signal::derive(move || page.with(Option::is_some)) />
            {move || page.get().map(|p| view! { <AccountTable page=p reload=load /> })}
        </section>
    }
}

/// `1–50 of 100,000`.
fn range_text(offset: u64, shown: u64, total: u64) -> String {
    if shown == 0 {
        return format!("none shown of {}", format::count(total));
    }
    format!(
        "{}–{} of {}",
        format::count(offset + 1),
        format::count(offset + shown),
        format::count(total)
    )
}

#[component]
fn AccountTable(page: Page, reload: Callback<()>) -> impl IntoView {
    if page.accounts.is_empty() {
        return view! { <p class="muted empty">"No accounts match."</p> }.into_any();
    }
    let rows = page
        .accounts
        .into_iter()
        .map(|account| view! { <AccountRow account=account reload=reload /> })
        .collect_view();
    view! {
        <Table
            class="accounts cards-on-phone"
            columns={&[
                Col::Text("Address"),
                Col::Text("Used"),
                Col::Text("Quota"),
                Col::Text("Created"),
                Col::Text("Last login"),
                Col::Text("State"),
                Col::Hidden("Actions"),
            ]}
        >
            {rows}
        </Table>
    }
    .into_any()
}

#[component]
fn AccountRow(account: Account, reload: Callback<()>) -> impl IntoView {
    let client = Client::get();
    let name = account.username.clone();
    let percent = if account.max_bytes == 0 {
        0.0
    } else {
        (account.used_bytes as f64 * 100.0 / account.max_bytes as f64).min(100.0)
    };
    let quota = if account.is_default_quota {
        format!("{} (default)", format::bytes(account.max_bytes))
    } else {
        format::bytes(account.max_bytes)
    };
    let state = match (&account.banned, &account.ban_reason) {
        (false, _) => view! { <span class="pill on">"active"</span> }.into_any(),
        (true, reason) => {
            let reason = reason.clone().unwrap_or_default();
            view! { <span class="pill bad" title=reason.clone()>"banned"</span> " " <span class="muted">{reason}</span> }
                .into_any()
        }
    };
    let row = account.clone();
    let button = move |action: &'static str, label: &'static str, class: &'static str| {
        let subject = row.clone();
        let who = subject.username.clone();
        view! {
            <button type="button" class=format!("small {class}") data-action=action
                data-username=who disabled=move || client.busy()
                on:click=move |_| act(client, action, &subject, reload)>{label}</button>
        }
    };
    let ban_toggle = if account.banned {
        button("unban", "Unban", "secondary")
    } else {
        button("ban", "Ban", "warn")
    };
    view! {
        <tr data-account=name.clone()>
            <td data-label="Address" class="address">{name.clone()}</td>
            <td data-label="Used">
                <div class="used">
                    {format::bytes(account.used_bytes)}
                    <div class="meter thin"><div class="meter-fill" style=format!("width: {percent:.1}%")></div></div>
                </div>
            </td>
            <td data-label="Quota">{quota}</td>
            <td data-label="Created">{account.created_at.map(format::date).unwrap_or_default()}</td>
            <td data-label="Last login">{account.last_login_at.map_or_else(|| "never".to_owned(), format::date)}</td>
            <td data-label="State">{state}</td>
            <td class="row-actions">
                {button("quota", "Quota", "secondary")}
                {ban_toggle}
                {button("delete", "Delete", "danger")}
            </td>
        </tr>
    }
}

/// Runs a row's action, asking first where it cannot be undone or needs an
/// argument; the page reloads once the relay has done it.
fn act(client: Client, action: &str, account: &Account, reload: Callback<()>) {
    let username = account.username.clone();
    let reload = move || {
        reload.try_run(());
    };
    match action {
        "ban" => {
            let question = format!(
                "Ban {username}? Its sessions end now and it cannot log in; its mail stays.\n\nReason:"
            );
            let Some(reason) = browser::prompt(&question, "manually blocked") else {
                return;
            };
            let mut body = json!({"username": username});
            if !reason.trim().is_empty() {
                body["reason"] = Value::from(reason.trim());
            }
            client.run(Method::Post, "/admin/blocklist", body, move |r: Banned| {
                client.done(format!("Banned {}; {} session(s) ended.", r.blocked, r.disconnected));
                reload();
            });
        }
        "unban" => client.run(Method::Delete, "/admin/blocklist", json!({"username": username}), move |_: IgnoredAny| {
            client.done(format!("Unbanned {username}."));
            reload();
        }),
        "delete" => {
            let question = format!(
                "Delete {username} and all its mail? Its sessions end now and the address stays blocked."
            );
            if browser::confirm(&question) {
                client.run(Method::Delete, "/admin/accounts", json!({"username": username}), move |_: IgnoredAny| {
                    client.done(format!("Deleted {username}."));
                    reload();
                });
            }
        }
        "quota" => set_quota(client, account, reload),
        _ => {}
    }
}

/// Asks for a new quota: a size such as `2G`, or nothing for the default.
fn set_quota(client: Client, account: &Account, reload: impl Fn() + 'static) {
    let username = account.username.clone();
    let question = format!(
        "Quota for {username}, e.g. 500M or 2G (K, M, G, T are binary units).\nLeave empty to use the default quota."
    );
    let current = if account.is_default_quota {
        String::new()
    } else {
        format::size_input(account.max_bytes)
    };
    let Some(answer) = browser::prompt(&question, &current) else {
        return;
    };
    if answer.trim().is_empty() {
        client.run(Method::Delete, "/admin/quota", json!({"username": username}), move |_: IgnoredAny| {
            client.done(format!("{username} uses the default quota again."));
            reload();
        });
        return;
    }
    match format::parse_size(&answer) {
        Ok(max_bytes) => {
            let body = json!({"username": username, "max_bytes": max_bytes});
            client.run(Method::Put, "/admin/quota", body, move |_: IgnoredAny| {
                client.done(format!("Quota of {username} is now {}.", format::bytes(max_bytes)));
                reload();
            });
        }
        Err(error) => client.error(error),
    }
}

/// "New account": a random one, or a chosen address and password.
#[component]
fn CreateAccount(reload: Callback<()>) -> impl IntoView {
    let client = Client::get();
    let username = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let created = RwSignal::new(None::<Created>);

    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let (name, secret) = (username.get_untracked(), password.get_untracked());
        let body = if name.trim().is_empty() {
            Value::Null
        } else {
            json!({"username": name.trim(), "password": secret})
        };
        client.run(Method::Post, "/admin/accounts", body, move |account: Created| {
            client.done(format!("Created {}.", account.email));
            created.set(Some(account));
            username.set(String::new());
            password.set(String::new());
            reload.try_run(());
        });
    };

    view! {
        <section class="card">
            <h3>"New account"</h3>
            <form class="create-account" on:submit=create>
                <div class="field">
                    <label for="new-username">"Address"</label>
                    <input id="new-username" type="text" autocomplete="off" spellcheck="false"
                        placeholder="empty: a random one" bind:value=username />
                </div>
                <div class="field">
                    <label for="new-password">"Password"</label>
                    <input id="new-password" type="text" autocomplete="off" spellcheck="false"
                        placeholder="with an address" bind:value=password />
                </div>
                <button type="submit" id="create-account" disabled=move || client.busy()>
                    "Create account"
                </button>
            </form>
            {move || created.get().map(|c| {
                let both = format!("{}\n{}", c.email, c.password);
                view! {
                    <div id="created-account" class="created" data-email=c.email.clone()>
                        <p>"New account (the password is shown only now):"</p>
                        <dl class="figures">
                            <div class="figure"><dt>"Address"</dt><dd class="mono">{c.email.clone()}</dd></div>
                            <div class="figure"><dt>"Password"</dt><dd class="mono" id="created-password">{c.password.clone()}</dd></div>
                        </dl>
                        <CopyButton text=both label="Copy both" />
                    </div>
                }
            })}
        </section>
    }
}
