//! Sign in: the operator pastes the admin token (`madmail admin-token`),
//! and it is kept only once `/admin/status` accepts it.

use leptos::prelude::*;
use leptos::task::spawn_local;
use serde_json::Value;

use crate::api::{Client, Method};

#[component]
pub fn SignIn() -> impl IntoView {
    let client = Client::get();
    let token = RwSignal::new(String::new());
    let checking = RwSignal::new(false);

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let candidate = token.get_untracked().trim().to_owned();
        if candidate.is_empty() {
            client.error("Paste the admin token first.");
            return;
        }
        checking.set(true);
        spawn_local(async move {
            let reply = client
                .send(&candidate, Method::Get, "/admin/status", Value::Null)
                .await;
            checking.set(false);
            match reply {
                Ok(_) => client.sign_in(candidate),
                Err(error) if error.status == 401 => {
                    client.error("That token is not the relay's admin token.")
                }
                Err(error) => client.report("/admin/status", error),
            }
        });
    };

    view! {
        <section class="card signin">
            <h2>"Sign in"</h2>
            <p class="muted">
                "The admin token is printed by " <code>"madmail admin-token"</code>
                " on the relay. It is kept in this tab only, until you sign out or close it."
            </p>
            <form on:submit=submit>
                <label for="token">"Admin token"</label>
                <input
                    id="token"
                    type="password"
                    autocomplete="current-password"
                    spellcheck="false"
                    bind:value=token
                />
                <button type="submit" id="sign-in" disabled=move || checking.get()>
                    {move || if checking.get() { "Checking…" } else { "Sign in" }}
                </button>
            </form>
        </section>
    }
}
