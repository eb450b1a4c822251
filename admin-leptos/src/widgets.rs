//! Small pieces several screens share.
//!
//! A screen's signals are disposed when the user leaves it, while its
//! requests may still be running: code that runs after an `.await` only
//! writes signals (a write to a disposed signal does nothing) or reads them
//! with `try_get_untracked`.

use std::time::Duration;

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::api::Client;
use crate::browser;

/// A button that puts `text` on the clipboard and says so for a moment.
#[component]
pub fn CopyButton(
    #[prop(into)] text: String,
    #[prop(default = "Copy")] label: &'static str,
) -> impl IntoView {
    let client = Client::get();
    let text = StoredValue::new(text);
    let copied = RwSignal::new(false);
    let copy = move |_| {
        let text = text.get_value();
        spawn_local(async move {
            match browser::copy(&text).await {
                Ok(()) => {
                    copied.set(true);
                    set_timeout(move || copied.set(false), Duration::from_secs(2));
                }
                Err(error) => client.error(error),
            }
        });
    };
    view! {
        <button type="button" class="secondary small" on:click=copy>
            {move || if copied.get() { "Copied" } else { label }}
        </button>
    }
}

/// A screen's title row: the heading and the screen's own buttons.
#[component]
pub fn ScreenHead(title: &'static str, children: Children) -> impl IntoView {
    view! {
        <div class="screen-head">
            <h2>{title}</h2>
            <div class="actions">{children()}</div>
        </div>
    }
}

/// A "Refresh" button that is off while a request runs.
#[component]
pub fn RefreshButton(
    on_click: impl Fn() + 'static,
    #[prop(default = "Refresh")] label: &'static str,
    #[prop(into)] id: String,
) -> impl IntoView {
    let client = Client::get();
    view! {
        <button
            type="button"
            class="secondary"
            id=id
            disabled=move || client.busy()
            on:click=move |_| on_click()
        >
            {label}
        </button>
    }
}

/// One labelled figure on a card: `<dt>` and `<dd data-stat>`.
#[component]
pub fn Figure(
    label: &'static str,
    stat: &'static str,
    value: impl Fn() -> String + Send + 'static,
) -> impl IntoView {
    view! {
        <div class="figure">
            <dt>{label}</dt>
            <dd data-stat=stat>{value}</dd>
        </div>
    }
}

/// "Loading…" until the first reply fills `loaded`.
#[component]
pub fn Loading(loaded: Signal<bool>) -> impl IntoView {
    view! {
        <Show when=move || !loaded.get()>
            <p class="muted loading">"Loading…"</p>
        </Show>
    }
}

/// One column heading of a [`Table`].
#[derive(Clone, Copy)]
pub enum Col {
    /// Plain text.
    Text(&'static str),
    /// Numbers, aligned right.
    Num(&'static str),
    /// A heading only screen readers get (an actions column).
    Hidden(&'static str),
}

/// A table that scrolls on its own when wider than the screen; its rows
/// are the children. Tables with the class `cards-on-phone` become one
/// card per row at phone widths (the cells' `data-label` names them).
#[component]
pub fn Table(class: &'static str, columns: &'static [Col], children: Children) -> impl IntoView {
    let heads = columns
        .iter()
        .map(|column| match *column {
            Col::Text(title) => view! { <th>{title}</th> }.into_any(),
            Col::Num(title) => view! { <th class="num">{title}</th> }.into_any(),
            Col::Hidden(title) => {
                view! { <th><span class="visually-hidden">{title}</span></th> }.into_any()
            }
        })
        .collect_view();
    view! {
        <div class="table-box">
            <table class=class>
                <thead>
                    <tr>{heads}</tr>
                </thead>
                <tbody>{children()}</tbody>
            </table>
        </div>
    }
}
