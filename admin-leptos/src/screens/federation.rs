//! Federation: the policy (`open`, `allow`, `block`) and its domain list,
//! one-domain rules, and how delivery to and from each peer went
//! (`/admin/federation/servers`).
//!
//! Test hooks: `#federation-policy` (a select), `#federation-domains` (a
//! textarea, one domain a line), `#federation-save`; `#rule-domain` with
//! `#rule-allow` and `#rule-block`; a listed domain is
//! `[data-domain=<domain>]` with a `data-action="remove-rule"` button; a
//! peer row is `tr[data-server=<domain>]`.

use leptos::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{Client, Method};
use crate::browser;
use crate::format;
use crate::widgets::{Col, Loading, RefreshButton, ScreenHead, Table};

#[derive(Clone, Deserialize, PartialEq)]
struct Rules {
    policy: String,
    #[serde(default)]
    domains: Vec<String>,
}

#[derive(Clone, Deserialize, PartialEq)]
struct Servers {
    servers: Vec<Server>,
    #[serde(default)]
    total: u64,
}

#[derive(Clone, Deserialize, PartialEq)]
struct Server {
    domain: String,
    #[serde(default)]
    queued_messages: u64,
    #[serde(default)]
    success_https: u64,
    #[serde(default)]
    failed_https: u64,
    #[serde(default)]
    success_smtp: u64,
    #[serde(default)]
    failed_smtp: u64,
    #[serde(default)]
    inbound_deliveries: u64,
    #[serde(default)]
    mean_latency_ms: Option<f64>,
    #[serde(default)]
    last_active: Option<i64>,
}

/// What each policy means, shown under the select.
fn policy_help(policy: &str) -> &'static str {
    match policy {
        "open" => "Mail goes to and comes from every domain; the list is not used.",
        "allow" => "Only the listed domains exchange mail with this relay.",
        "block" => "Every domain except the listed ones exchanges mail with this relay.",
        _ => "",
    }
}

#[component]
pub fn Federation() -> impl IntoView {
    let client = Client::get();
    let rules = RwSignal::new(None::<Rules>);
    let servers = RwSignal::new(None::<Servers>);
    let show = move |r: Rules| rules.set(Some(r));

    let load = move || {
        client.run(Method::Get, "/admin/federation", Value::Null, show);
        client.run(Method::Get, "/admin/federation/servers", Value::Null, move |s: Servers| {
            servers.set(Some(s))
        });
    };
    load();

    view! {
        <ScreenHead title="Federation">
            <RefreshButton id="federation-refresh" on_click=load />
        </ScreenHead>
        <Loading loaded=Signal::derive(move || rules.with(Option::is_some)) />
        {move || rules.get().map(|r| view! { <PolicyCard rules=r on_change=Callback::new(show) /> })}
        <section class="card">
            <h3>"Peers"</h3>
            {move || servers.get().map(|s| view! { <ServerTable servers=s /> })}
        </section>
    }
}

#[component]
fn PolicyCard(rules: Rules, on_change: Callback<Rules>) -> impl IntoView {
    let client = Client::get();
    let policy = RwSignal::new(rules.policy.clone());
    let domains = RwSignal::new(rules.domains.join("\n"));
    let rule_domain = RwSignal::new(String::new());
    let changed = move |what: String| {
        move |r: Rules| {
            client.done(what);
            on_change.try_run(r);
        }
    };

    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let list: Vec<String> = domains
            .get_untracked()
            .split(|c: char| c == '\n' || c == ',' || c.is_whitespace())
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .collect();
        let body = json!({"policy": policy.get_untracked(), "domains": list});
        client.run(Method::Post, "/admin/federation", body, changed("Federation policy saved.".into()));
    };
    let rule = move |action: &'static str| {
        let domain = rule_domain.get_untracked().trim().to_owned();
        if domain.is_empty() {
            return client.error("Type a domain first.");
        }
        let body = json!({"domain": domain, "action": action});
        client.run(Method::Post, "/admin/federation/rules", body, changed(format!("{domain}: {action}ed.")));
    };
    let listed = rules
        .domains
        .iter()
        .map(|domain| {
            let domain = domain.clone();
            let remove = {
                let domain = domain.clone();
                move |_| {
                    if browser::confirm(&format!("Take {domain} off the list?")) {
                        let body = json!({"domain": domain});
                        client.run(Method::Delete, "/admin/federation/rules", body, changed(format!("{domain} removed.")));
                    }
                }
            };
            view! {
                <li data-domain=domain.clone()>
                    <span class="mono">{domain.clone()}</span>
                    <button type="button" class="secondary small" data-action="remove-rule" data-domain=domain.clone()
                        disabled=move || client.busy() on:click=remove>"Remove"</button>
                </li>
            }
        })
        .collect_view();
    let count = rules.domains.len();

    view! {
        <section class="card">
            <h3>"Policy and domains"</h3>
            <form class="policy" on:submit=save>
                <div class="field narrow">
                    <label for="federation-policy">"Policy"</label>
                    <select id="federation-policy" bind:value=policy>
                        <option value="open">"open"</option>
                        <option value="allow">"allow listed"</option>
                        <option value="block">"block listed"</option>
                    </select>
                </div>
                <p class="muted help">{move || policy_help(&policy.get())}</p>
                <div class="field">
                    <label for="federation-domains">"Domains, one a line"</label>
                    <textarea id="federation-domains" rows="4" spellcheck="false" bind:value=domains></textarea>
                </div>
                <button type="submit" id="federation-save" disabled=move || client.busy()>"Save policy"</button>
            </form>
        </section>
        <section class="card">
            <h3>"Rules"</h3>
            <div class="inline-form">
                <input id="rule-domain" type="text" spellcheck="false" placeholder="domain.example"
                    aria-label="Domain" bind:value=rule_domain />
                <button type="button" id="rule-allow" disabled=move || client.busy()
                    on:click=move |_| rule("allow")>"Allow"</button>
                <button type="button" id="rule-block" class="warn" disabled=move || client.busy()
                    on:click=move |_| rule("block")>"Block"</button>
            </div>
            <p class="muted help">
                "Under open, blocking a domain switches the policy to block. Under allow, blocking takes the domain off the list."
            </p>
            <h4>{format!("Listed domains ({count})")}</h4>
            <ul class="domains" id="federation-list">{listed}</ul>
        </section>
    }
}

#[component]
fn ServerTable(servers: Servers) -> impl IntoView {
    if servers.servers.is_empty() {
        return view! { <p class="muted empty">"No peer has exchanged mail with this relay yet."</p> }.into_any();
    }
    let now = browser::now();
    let total = servers.total.max(servers.servers.len() as u64);
    let rows = servers
        .servers
        .into_iter()
        .map(|s| {
            let latency = s.mean_latency_ms.map_or_else(|| "–".to_owned(), |ms| format!("{ms:.0} ms"));
            let last = s.last_active.map_or_else(|| "never".to_owned(), |t| format::ago(t, now));
            let failed = |n: u64| if n > 0 { "num bad" } else { "num" };
            view! {
                <tr data-server=s.domain.clone()>
                    <td class="mono">{s.domain.clone()}</td>
                    <td class="num">{s.queued_messages}</td>
                    <td class="num">{s.success_https}</td>
                    <td class=failed(s.failed_https)>{s.failed_https}</td>
                    <td class="num">{s.success_smtp}</td>
                    <td class=failed(s.failed_smtp)>{s.failed_smtp}</td>
                    <td class="num">{s.inbound_deliveries}</td>
                    <td class="num">{latency}</td>
                    <td title=s.last_active.map(format::date_time).unwrap_or_default()>{last}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <p class="muted">{format!("{} peer(s)", format::count(total))}</p>
        <Table
            class="servers"
            columns={&[
                Col::Text("Domain"),
                Col::Num("Queued"),
                Col::Num("HTTPS ok"),
                Col::Num("HTTPS failed"),
                Col::Num("SMTP ok"),
                Col::Num("SMTP failed"),
                Col::Num("Inbound"),
                Col::Num("Latency"),
                Col::Text("Last active"),
            ]}
        >
            {rows}
        </Table>
    }
    .into_any()
}
