//! Registration and invites: open or close registration, and the invite
//! tokens, each with its `dcaccount:` link as text, as a QR code to scan
//! with Delta Chat, and a copy button.
//!
//! Test hooks: `#registration-status`, `#registration-open`,
//! `#registration-close`; a token is `[data-token=<token>]`, its QR code
//! `svg[data-qr=<token>]`, its buttons `data-action` `copy-link` and
//! `delete-token`.

use leptos::prelude::*;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value, json};

use crate::api::{Client, Method};
use crate::browser;
use crate::format;
use crate::qr::Qr;
use crate::widgets::{CopyButton, Loading, RefreshButton, ScreenHead};

#[derive(Clone, Deserialize, PartialEq)]
struct Switch {
    status: String,
}

#[derive(Clone, Deserialize, PartialEq)]
struct Token {
    token: String,
    #[serde(default)]
    max_uses: u64,
    #[serde(default)]
    used_count: u64,
    #[serde(default)]
    pending_reservations: u64,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    created_at: Option<i64>,
    #[serde(default)]
    expires_at: Option<i64>,
    #[serde(default)]
    status: String,
    #[serde(default)]
    link: String,
}

#[derive(Clone, Deserialize, PartialEq)]
struct Tokens {
    tokens: Vec<Token>,
}

#[component]
pub fn Registration() -> impl IntoView {
    let client = Client::get();
    let switch = RwSignal::new(None::<String>);
    let tokens = RwSignal::new(None::<Vec<Token>>);

    let load = Callback::new(move |()| {
        client.run(Method::Get, "/admin/registration", Value::Null, move |s: Switch| {
            switch.set(Some(s.status))
        });
        client.run(Method::Get, "/admin/registration-token", Value::Null, move |t: Tokens| {
            tokens.set(Some(t.tokens))
        });
    });
    load.run(());
    let set = move |action: &'static str| {
        client.run(Method::Post, "/admin/registration", json!({"action": action}), move |s: Switch| {
            client.done(format!("Registration is {}.", s.status));
            switch.set(Some(s.status));
        });
    };
    let is_open = move || switch.get().as_deref() == Some("open");

    view! {
        <ScreenHead title="Registration & invites">
            <RefreshButton id="registration-refresh" on_click=move || load.run(()) />
        </ScreenHead>
        <section class="card">
            <h3>"Registration"</h3>
            <p>
                "Registration is "
                <strong id="registration-status" data-status=move || switch.get().unwrap_or_default()>
                    {move || switch.get().unwrap_or_else(|| "…".into())}
                </strong>
                ". "
                <span class="muted">
                    "While it is closed, existing accounts keep working and only invite tokens make new ones."
                </span>
            </p>
            <div class="actions">
                <button type="button" id="registration-open" data-action="open-registration"
                    disabled=move || client.busy() || is_open() on:click=move |_| set("open")>"Open"</button>
                <button type="button" id="registration-close" class="warn" data-action="close-registration"
                    disabled=move || client.busy() || switch.get().as_deref() == Some("closed")
                    on:click=move |_| set("close")>"Close"</button>
            </div>
        </section>
        <CreateToken reload=load />
        <section class="card">
            <h3>"Invite tokens"</h3>
            <Loading loaded=Signal::derive(move || tokens.with(Option::is_some)) />
            {move || tokens.get().map(|list| {
                if list.is_empty() {
                    return view! { <p class="muted empty">"No invite tokens yet."</p> }.into_any();
                }
                let cards = list
                    .into_iter()
                    .map(|token| view! { <TokenCard token=token reload=load /> })
                    .collect_view();
                view! { <div class="tokens">{cards}</div> }.into_any()
            })}
        </section>
    }
}

#[component]
fn CreateToken(reload: Callback<()>) -> impl IntoView {
    let client = Client::get();
    let max_uses = RwSignal::new("1".to_owned());
    let comment = RwSignal::new(String::new());
    let expires_in = RwSignal::new(String::new());
    let custom = RwSignal::new(String::new());

    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let uses = match max_uses.get_untracked().trim().parse::<u64>() {
            Ok(uses) if uses > 0 => uses,
            _ => return client.error("Max uses must be a whole number of at least 1."),
        };
        let mut body = Map::new();
        body.insert("max_uses".into(), uses.into());
        for (field, value) in [
            ("comment", comment.get_untracked()),
            ("expires_in", expires_in.get_untracked()),
            ("token", custom.get_untracked()),
        ] {
            if !value.trim().is_empty() {
                body.insert(field.into(), value.trim().into());
            }
        }
        client.run(Method::Post, "/admin/registration-token", Value::Object(body), move |t: Token| {
            client.done(format!("Created invite token {}.", t.token));
            comment.set(String::new());
            custom.set(String::new());
            reload.try_run(());
        });
    };

    view! {
        <section class="card">
            <h3>"New invite token"</h3>
            <form class="create-token" on:submit=create>
                <div class="field narrow">
                    <label for="token-max-uses">"Max uses"</label>
                    <input id="token-max-uses" type="number" min="1" inputmode="numeric" bind:value=max_uses />
                </div>
                <div class="field">
                    <label for="token-comment">"Comment"</label>
                    <input id="token-comment" type="text" placeholder="who it is for" bind:value=comment />
                </div>
                <div class="field narrow">
                    <label for="token-expires-in">"Expires in"</label>
                    <input id="token-expires-in" type="text" placeholder="e.g. 72h or 7d" bind:value=expires_in />
                </div>
                <div class="field">
                    <label for="token-custom">"Token"</label>
                    <input id="token-custom" type="text" spellcheck="false" placeholder="empty: a random one"
                        bind:value=custom />
                </div>
                <button type="submit" id="create-token" disabled=move || client.busy()>"Create token"</button>
            </form>
        </section>
    }
}

#[component]
fn TokenCard(token: Token, reload: Callback<()>) -> impl IntoView {
    let client = Client::get();
    let name = token.token.clone();
    let delete = {
        let name = name.clone();
        move |_| {
            if !browser::confirm(&format!("Delete invite token {name}? Its link stops working.")) {
                return;
            }
            let name = name.clone();
            client.run(Method::Delete, "/admin/registration-token", json!({"token": name}), move |_: IgnoredAny| {
                client.done(format!("Deleted invite token {name}."));
                reload.try_run(());
            });
        }
    };
    let uses = format!(
        "{} of {} used, {} pending",
        token.used_count, token.max_uses, token.pending_reservations
    );
    let expires = token
        .expires_at
        .map_or_else(|| "never".to_owned(), format::date_time);
    let status_class = match token.status.as_str() {
        "active" => "pill on",
        _ => "pill bad",
    };

    view! {
        <article class="token" data-token=name.clone() data-status=token.status.clone()>
            <div class="token-head">
                <code class="token-name">{name.clone()}</code>
                <span class=status_class>{token.status.clone()}</span>
            </div>
            <Qr text=token.link.clone() tag=name.clone() />
            <p class="link mono" data-link=name.clone()>{token.link.clone()}</p>
            <dl class="figures compact">
                <div class="figure"><dt>"Uses"</dt><dd>{uses}</dd></div>
                <div class="figure"><dt>"Comment"</dt><dd>{token.comment.clone().unwrap_or_default()}</dd></div>
                <div class="figure"><dt>"Created"</dt><dd>{token.created_at.map(format::date_time).unwrap_or_default()}</dd></div>
                <div class="figure"><dt>"Expires"</dt><dd>{expires}</dd></div>
            </dl>
            <div class="actions">
                <CopyButton text=token.link.clone() label="Copy link" attr:data-action="copy-link" attr:data-token=name.clone() />
                <button type="button" class="danger small" data-action="delete-token" data-token=name.clone()
                    disabled=move || client.busy() on:click=delete>"Delete"</button>
            </div>
        </article>
    }
}
