//! The outbound queue: what waits for delivery, and flush (retry every
//! pending delivery now) or purge (drop everything without a bounce).
//!
//! Test hooks: `#queue-flush` and `#queue-purge` (`data-action` `flush`,
//! `purge`), `#queue-summary`, entry rows `tr[data-entry=<id>]`.

use leptos::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{Client, Method};
use crate::browser;
use crate::format;
use crate::widgets::{Col, Loading, RefreshButton, ScreenHead, Table};

#[derive(Clone, Deserialize, PartialEq)]
struct Queue {
    #[serde(default)]
    messages: u64,
    #[serde(default)]
    recipients: u64,
    #[serde(default)]
    entries: Vec<Entry>,
}

#[derive(Clone, Deserialize, PartialEq)]
struct Entry {
    id: Value,
    recipient: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    attempts: u64,
    #[serde(default)]
    last_error: Option<String>,
}

#[derive(Deserialize)]
struct Done {
    action: String,
    count: u64,
}

#[component]
pub fn Queue() -> impl IntoView {
    let client = Client::get();
    let queue = RwSignal::new(None::<Queue>);
    let load = move || {
        client.run(Method::Get, "/admin/queue", Value::Null, move |q: Queue| queue.set(Some(q)));
    };
    load();
    let act = move |action: &'static str| {
        if action == "purge"
            && !browser::confirm("Purge the queue? Every queued message is dropped without a bounce.")
        {
            return;
        }
        client.run(Method::Post, "/admin/queue", json!({"action": action}), move |d: Done| {
            client.done(match d.action.as_str() {
                "purge" => format!("Purged: {} queued message(s) dropped.", d.count),
                _ => format!("Flushed: {} delivery(ies) due now.", d.count),
            });
            load();
        });
    };

    view! {
        <ScreenHead title="Queue">
            <RefreshButton id="queue-refresh" on_click=load />
            <button type="button" id="queue-flush" data-action="flush" disabled=move || client.busy()
                on:click=move |_| act("flush")>"Flush"</button>
            <button type="button" id="queue-purge" class="danger" data-action="purge"
                disabled=move || client.busy() on:click=move |_| act("purge")>"Purge"</button>
        </ScreenHead>
        <Loading loaded=Signal::derive(move || queue.with(Option::is_some)) />
        {move || queue.get().map(|q| view! { <QueueCard queue=q /> })}
    }
}

#[component]
fn QueueCard(queue: Queue) -> impl IntoView {
    let summary = format!(
        "{} message(s) for {} recipient(s)",
        format::count(queue.messages),
        format::count(queue.recipients)
    );
    let body = if queue.entries.is_empty() {
        view! { <p class="muted empty">"Nothing waits for delivery."</p> }.into_any()
    } else {
        let rows = queue
            .entries
            .into_iter()
            .map(|e| {
                let id = match &e.id {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let state_class = if e.state == "pending" { "pill" } else { "pill bad" };
                view! {
                    <tr data-entry=id.clone()>
                        <td data-label="ID" class="num">{id.clone()}</td>
                        <td data-label="Recipient" class="mono">{e.recipient}</td>
                        <td data-label="State"><span class=state_class>{e.state}</span></td>
                        <td data-label="Attempts" class="num">{e.attempts}</td>
                        <td data-label="Last error" class="error-text">{e.last_error.unwrap_or_default()}</td>
                    </tr>
                }
            })
            .collect_view();
        view! {
            <Table
                class="cards-on-phone"
                columns={&[
                    Col::Num("ID"),
                    Col::Text("Recipient"),
                    Col::Text("State"),
                    Col::Num("Attempts"),
                    Col::Text("Last error"),
                ]}
            >
                {rows}
            </Table>
        }
        .into_any()
    };
    view! {
        <section class="card">
            <p id="queue-summary"><strong>{summary}</strong></p>
            {body}
        </section>
    }
}
