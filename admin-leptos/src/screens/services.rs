//! Services and settings: switch the optional services (TURN, iroh relay,
//! Shadowsocks, …) on or off, change the settings the relay lets the API
//! set, and reload the configuration file.
//!
//! Test hooks: a service's switch is `button[data-service=<name>]` with
//! `data-status` and its status as text; a setting is
//! `tr[data-setting=<key>]` with `input[data-key=<key>]` and buttons
//! `data-action` `set-setting` and `reset-setting`; `#reload-config`.

use leptos::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{Client, Method};
use crate::format;
use crate::widgets::{Col, Loading, RefreshButton, ScreenHead, Table};

#[derive(Clone, Deserialize, PartialEq)]
struct Services {
    services: Vec<Service>,
}

#[derive(Clone, Deserialize, PartialEq)]
struct Service {
    name: String,
    status: String,
    #[serde(default = "yes")]
    configured: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Deserialize, PartialEq)]
struct Settings {
    settings: Vec<Setting>,
}

#[derive(Clone, Deserialize, PartialEq)]
struct Setting {
    key: String,
    value: Value,
    #[serde(default)]
    default: Value,
    #[serde(default)]
    is_set: bool,
    #[serde(default)]
    live: bool,
}

#[derive(Deserialize)]
struct Saved {
    key: String,
    value: Value,
    #[serde(default)]
    restart_required: bool,
}

#[derive(Deserialize)]
struct Reloaded {
    #[serde(default)]
    changed: Vec<String>,
    #[serde(default)]
    message: String,
}

#[component]
pub fn Services() -> impl IntoView {
    let client = Client::get();
    let services = RwSignal::new(None::<Vec<Service>>);
    let settings = RwSignal::new(None::<Vec<Setting>>);
    let load = Callback::new(move |()| {
        client.run(Method::Get, "/admin/services", Value::Null, move |s: Services| {
            services.set(Some(s.services))
        });
        client.run(Method::Get, "/admin/settings", Value::Null, move |s: Settings| {
            settings.set(Some(s.settings))
        });
    });
    load.run(());
    let reload_config = move |_| {
        client.run(Method::Post, "/admin/reload", Value::Null, move |r: Reloaded| {
            let changed = if r.changed.is_empty() {
                "nothing changed".to_owned()
            } else {
                format!("changed: {}", r.changed.join(", "))
            };
            client.done(format!("Configuration reloaded ({changed}). {}", r.message).trim().to_owned());
            load.try_run(());
        });
    };

    view! {
        <ScreenHead title="Services & settings">
            <RefreshButton id="services-refresh" on_click=move || load.run(()) />
            <button type="button" id="reload-config" disabled=move || client.busy() on:click=reload_config>
                "Reload config"
            </button>
        </ScreenHead>
        <section class="card">
            <h3>"Services"</h3>
            <Loading loaded=Signal::derive(move || services.with(Option::is_some)) />
            <ul class="services">
                {move || services.get().unwrap_or_default().into_iter()
                    .map(|s| view! { <ServiceSwitch service=s reload=load /> })
                    .collect_view()}
            </ul>
        </section>
        <section class="card">
            <h3>"Settings"</h3>
            <p class="muted help">
                "A live setting applies at once; the others after a restart. Reset goes back to the configuration file's value."
            </p>
            <Loading loaded=Signal::derive(move || settings.with(Option::is_some)) />
            {move || settings.get().map(|list| view! { <SettingsTable settings=list reload=load /> })}
        </section>
    }
}

#[component]
fn ServiceSwitch(service: Service, reload: Callback<()>) -> impl IntoView {
    let client = Client::get();
    let on = service.status == "enabled";
    let name = service.name.clone();
    let toggle = {
        let name = name.clone();
        move |_| {
            let action = if on { "disable" } else { "enable" };
            let resource = format!("/admin/services/{name}");
            client.run(Method::Post, resource, json!({"action": action}), move |s: Service| {
                client.done(format!("{} is {}.", s.name, s.status));
                reload.try_run(());
            });
        }
    };
    view! {
        <li class="service" data-service-row=name.clone()>
            <span class="service-name">{name.clone()}</span>
            {(!service.configured).then(|| view! { <span class="muted">"not configured"</span> })}
            <button
                type="button"
                class=if on { "switch on" } else { "switch off" }
                role="switch"
                aria-checked=on.to_string()
                aria-label=format!("{name} service")
                data-service=name.clone()
                data-status=service.status.clone()
                disabled=move || client.busy()
                on:click=toggle
            >
                <span class="knob" aria-hidden="true"></span>
                <span class="switch-text">{service.status.clone()}</span>
            </button>
        </li>
    }
}

#[component]
fn SettingsTable(settings: Vec<Setting>, reload: Callback<()>) -> impl IntoView {
    if settings.is_empty() {
        return view! { <p class="muted empty">"The relay offers no settings here."</p> }.into_any();
    }
    let rows = settings
        .into_iter()
        .map(|s| view! { <SettingRow setting=s reload=reload /> })
        .collect_view();
    view! {
        <Table
            class="settings cards-on-phone"
            columns={&[
                Col::Text("Setting"),
                Col::Text("Value"),
                Col::Text("Default"),
                Col::Text("Applies"),
                Col::Hidden("Actions"),
            ]}
        >
            {rows}
        </Table>
    }
    .into_any()
}

/// A JSON value as the text its input shows: strings without quotes.
fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A default as text, with the size in binary units where the key names
/// a size: `31457280 (30 MiB)`.
fn readable(key: &str, value: &Value) -> String {
    match value.as_u64() {
        Some(n) if key.ends_with("_size") && n >= 1024 => format!("{n} ({})", format::bytes(n)),
        _ => as_text(value),
    }
}

/// Reads what the operator typed as the same kind of value as the
/// setting's default: a number, `true`/`false`, or text.
fn parse_value(text: &str, like: &Value) -> Result<Value, String> {
    let text = text.trim();
    match like {
        Value::Number(_) => serde_json::from_str::<Value>(text)
            .ok()
            .filter(Value::is_number)
            .ok_or_else(|| format!("{text:?} is not a number")),
        Value::Bool(_) => match text {
            "true" | "on" | "yes" => Ok(Value::Bool(true)),
            "false" | "off" | "no" => Ok(Value::Bool(false)),
            _ => Err(format!("{text:?} is not true or false")),
        },
        Value::String(_) => Ok(Value::from(text)),
        _ => Ok(serde_json::from_str(text).unwrap_or_else(|_| Value::from(text))),
    }
}

#[component]
fn SettingRow(setting: Setting, reload: Callback<()>) -> impl IntoView {
    let client = Client::get();
    let key = setting.key.clone();
    let draft = RwSignal::new(as_text(&setting.value));
    let like = if setting.default.is_null() { setting.value.clone() } else { setting.default.clone() };
    let resource = format!("/admin/settings/{key}");
    let send = move |body: Value| {
        client.run(Method::Post, resource.clone(), body, move |s: Saved| {
            let when = if s.restart_required { "after a restart" } else { "now" };
            client.done(format!("{} = {} (applies {when}).", s.key, as_text(&s.value)));
            reload.try_run(());
        });
    };
    let send_reset = send.clone();
    let name = key.clone();
    let save = move |_| match parse_value(&draft.get_untracked(), &like) {
        Ok(value) => send(json!({"action": "set", "value": value})),
        Err(error) => client.error(format!("{name}: {error}")),
    };
    view! {
        <tr data-setting=key.clone() data-set=setting.is_set.to_string()>
            <td data-label="Setting" class="mono">{key.clone()}</td>
            <td data-label="Value">
                <input type="text" class="setting-input" data-key=key.clone() aria-label=key.clone()
                    spellcheck="false" bind:value=draft />
            </td>
            <td data-label="Default" class="mono">{readable(&setting.key, &setting.default)}</td>
            <td data-label="Applies">
                {if setting.live { "live" } else { "on restart" }}
                {setting.is_set.then_some(" · changed")}
            </td>
            <td class="row-actions">
                <button type="button" class="small" data-action="set-setting" data-key=key.clone()
                    disabled=move || client.busy() on:click=save>"Save"</button>
                <button type="button" class="secondary small" data-action="reset-setting" data-key=key.clone()
                    disabled=move || client.busy() || !setting.is_set
                    on:click=move |_| send_reset(json!({"action": "reset"}))>"Reset"</button>
            </td>
        </tr>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values_follow_the_default_kind() {
        assert_eq!(parse_value(" 1048576 ", &json!(31457280)), Ok(json!(1048576)));
        assert!(parse_value("big", &json!(1)).is_err());
        assert_eq!(parse_value("off", &json!(true)), Ok(json!(false)));
        assert_eq!(parse_value("42", &json!("text")), Ok(json!("42")));
        assert_eq!(as_text(&json!("plain")), "plain");
        assert_eq!(readable("max_message_size", &json!(31457280)), "31457280 (30 MiB)");
        assert_eq!(readable("imap_idle_timeout", &json!(1800)), "1800");
    }
}
