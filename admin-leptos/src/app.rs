//! The page frame: header with the nav and the sign-out button, the
//! message area, and the current screen (or the sign-in form while no
//! token is kept).

use leptos::ev;
use leptos::prelude::*;

use crate::api::Client;
use crate::browser;
use crate::route::Screen;
use crate::screens;

#[component]
pub fn App() -> impl IntoView {
    let client = Client::new(browser::api_path(), browser::stored_token());
    provide_context(client);
    let screen = RwSignal::new(Screen::from_hash(&browser::location_hash()));
    // The listener lives as long as the page, so its handle is not kept.
    let _ = window_event_listener(ev::hashchange, move |_| {
        screen.set(Screen::from_hash(&browser::location_hash()));
    });
    let signed_in = Memo::new(move |_| client.signed_in());

    view! {
        <header class="top">
            <div class="brand">
                <span class="logo" aria-hidden="true">"✉"</span>
                <span>"madmail admin"</span>
            </div>
            <Show when=move || signed_in.get()>
                <Nav screen=screen />
                <div class="session">
                    <span id="busy" class="busy" hidden=move || !client.busy()>
                        "Working…"
                    </span>
                    <button
                        type="button"
                        id="sign-out"
                        class="secondary small"
                        on:click=move |_| client.sign_out(None)
                    >
                        "Sign out"
                    </button>
                </div>
            </Show>
        </header>
        <MessageArea />
        <main data-busy=move || client.busy().to_string()>
            {move || {
                if signed_in.get() {
                    current(screen.get())
                } else {
                    view! { <screens::signin::SignIn /> }.into_any()
                }
            }}
        </main>
    }
}

fn current(screen: Screen) -> AnyView {
    match screen {
        Screen::Dashboard => view! { <screens::dashboard::Dashboard /> }.into_any(),
        Screen::Accounts => view! { <screens::accounts::Accounts /> }.into_any(),
        Screen::Registration => view! { <screens::registration::Registration /> }.into_any(),
        Screen::Federation => view! { <screens::federation::Federation /> }.into_any(),
        Screen::Queue => view! { <screens::queue::Queue /> }.into_any(),
        Screen::Services => view! { <screens::services::Services /> }.into_any(),
        Screen::Dns => view! { <screens::dns::Dns /> }.into_any(),
    }
}

#[component]
fn Nav(screen: RwSignal<Screen>) -> impl IntoView {
    let links = Screen::ALL.map(|target| {
        view! {
            <a
                href=target.href()
                data-screen=target.slug()
                class:active=move || screen.get() == target
                aria-current=move || (screen.get() == target).then_some("page")
            >
                {target.label()}
            </a>
        }
    });
    view! { <nav class="nav" aria-label="Screens">{links.into_iter().collect_view()}</nav> }
}

/// The last error or confirmation, until dismissed or replaced. Its text
/// is `#message` (with `data-kind` `error` or `done`), apart from the
/// dismiss button so a test reads the text alone.
#[component]
fn MessageArea() -> impl IntoView {
    let client = Client::get();
    let kind = move || client.notice().map(|n| n.kind.as_str()).unwrap_or("none");
    view! {
        <div
            class="message"
            data-kind=kind
            role="status"
            aria-live="polite"
            hidden=move || client.notice().is_none()
        >
            <span id="message" class="message-text" data-kind=kind>
                {move || client.notice().map(|n| n.text)}
            </span>
            <button
                type="button"
                class="dismiss"
                aria-label="Dismiss"
                on:click=move |_| client.dismiss()
            >
                "×"
            </button>
        </div>
    }
}
