//! DNS and doctor: the records the relay needs (each copyable as a zone
//! file line), and the doctor's checks with their fixes.
//!
//! Test hooks: a record row is `tr[data-record=<index>]` with
//! `data-name`/`data-type`, its copy button `data-action="copy-record"`;
//! `#dns-copy-all`; a check is `[data-check=<name>]` with
//! `data-status` `pass`, `warn` or `fail`; `#doctor-run`, `#doctor-summary`.

use leptos::prelude::*;
use serde::Deserialize;
use serde_json::Value;

use crate::api::{Client, Method};
use crate::widgets::{Col, CopyButton, Loading, RefreshButton, ScreenHead, Table};

#[derive(Clone, Deserialize, PartialEq)]
struct Records {
    records: Vec<Record>,
}

#[derive(Clone, Deserialize, PartialEq)]
struct Record {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    value: String,
    #[serde(default)]
    required: bool,
}

#[derive(Clone, Deserialize, PartialEq)]
struct Doctor {
    passed: bool,
    checks: Vec<Check>,
}

#[derive(Clone, Deserialize, PartialEq)]
struct Check {
    name: String,
    status: String,
    #[serde(default)]
    detail: String,
    #[serde(default)]
    fix: Option<String>,
}

/// A TXT string holds at most 255 bytes (RFC 1035 §3.3.14), so a long
/// value (a DKIM key) becomes several quoted strings.
const TXT_CHUNK: usize = 255;

/// A name as a zone file writes it: absolute, with the final dot.
fn absolute(name: &str) -> String {
    if name == "@" || name.ends_with('.') || !name.contains('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

/// `value` as quoted character-strings, split where the limit falls.
fn txt_strings(value: &str) -> String {
    if value.starts_with('"') {
        return value.to_owned();
    }
    let mut parts = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let mut end = rest.len().min(TXT_CHUNK);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (chunk, tail) = rest.split_at(end);
        parts.push(format!("\"{}\"", chunk.replace('\\', "\\\\").replace('"', "\\\"")));
        rest = tail;
    }
    if parts.is_empty() {
        parts.push("\"\"".to_owned());
    }
    parts.join(" ")
}

/// The record as one zone file line: `name IN TYPE value`.
fn zone_line(name: &str, kind: &str, value: &str) -> String {
    let kind = kind.to_ascii_uppercase();
    let value = match kind.as_str() {
        "TXT" => txt_strings(value),
        // The last field of these names a host.
        "MX" | "CNAME" | "NS" | "SRV" | "PTR" => match value.rsplit_once(' ') {
            Some((head, host)) => format!("{head} {}", absolute(host)),
            None => absolute(value),
        },
        _ => value.to_owned(),
    };
    format!("{}\tIN\t{kind}\t{value}", absolute(name))
}

#[component]
pub fn Dns() -> impl IntoView {
    let client = Client::get();
    let records = RwSignal::new(None::<Vec<Record>>);
    let doctor = RwSignal::new(None::<Doctor>);
    let load_records = move || {
        client.run(Method::Get, "/admin/dns", Value::Null, move |r: Records| {
            records.set(Some(r.records))
        });
    };
    let run_doctor = move || {
        client.run(Method::Get, "/admin/doctor", Value::Null, move |d: Doctor| doctor.set(Some(d)));
    };
    load_records();
    run_doctor();

    view! {
        <ScreenHead title="DNS & doctor">
            <RefreshButton id="dns-refresh" on_click=load_records label="Reload records" />
        </ScreenHead>
        <section class="card">
            <h3>"DNS records"</h3>
            <Loading loaded=Signal::derive(move || records.with(Option::is_some)) />
            {move || records.get().map(|list| view! { <RecordTable records=list /> })}
        </section>
        <section class="card">
            <div class="card-head">
                <h3>"Doctor"</h3>
                <RefreshButton id="doctor-run" on_click=run_doctor label="Run again" />
            </div>
            <Loading loaded=Signal::derive(move || doctor.with(Option::is_some)) />
            {move || doctor.get().map(|d| view! { <DoctorReport doctor=d /> })}
        </section>
    }
}

#[component]
fn RecordTable(records: Vec<Record>) -> impl IntoView {
    if records.is_empty() {
        return view! { <p class="muted empty">"The relay lists no records."</p> }.into_any();
    }
    let all = records
        .iter()
        .map(|r| zone_line(&r.name, &r.kind, &r.value))
        .collect::<Vec<_>>()
        .join("\n");
    let rows = records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let line = zone_line(&r.name, &r.kind, &r.value);
            view! {
                <tr data-record=i.to_string() data-name=r.name.clone() data-type=r.kind.clone()>
                    <td data-label="Name" class="mono">{r.name.clone()}</td>
                    <td data-label="Type" class="mono">{r.kind.clone()}</td>
                    <td data-label="Value" class="mono value">{r.value}</td>
                    <td data-label="Needed">{if r.required { "required" } else { "optional" }}</td>
                    <td class="row-actions">
                        <CopyButton text=line attr:data-action="copy-record" attr:data-record=i.to_string() />
                    </td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <div class="actions above-table">
            <CopyButton text=all label="Copy all as zone file" attr:id="dns-copy-all" />
        </div>
        <Table
            class="records cards-on-phone"
            columns={&[
                Col::Text("Name"),
                Col::Text("Type"),
                Col::Text("Value"),
                Col::Text("Needed"),
                Col::Hidden("Copy"),
            ]}
        >
            {rows}
        </Table>
    }
    .into_any()
}

#[component]
fn DoctorReport(doctor: Doctor) -> impl IntoView {
    let (summary, summary_class) = if doctor.passed {
        ("All required checks pass.", "summary pass")
    } else {
        ("Some checks fail: see the fixes below.", "summary fail")
    };
    let checks = doctor
        .checks
        .into_iter()
        .map(|c| {
            let mark = match c.status.as_str() {
                "pass" => "✓",
                "warn" => "!",
                _ => "✗",
            };
            view! {
                <li class=format!("check {}", c.status) data-check=c.name.clone() data-status=c.status.clone()>
                    <span class="mark" aria-hidden="true">{mark}</span>
                    <div class="check-body">
                        <div class="check-title">
                            <strong>{c.name.clone()}</strong>
                            <span class="check-status">{c.status.clone()}</span>
                        </div>
                        <p class="detail">{c.detail}</p>
                        {c.fix.map(|fix| view! { <p class="fix"><strong>"Fix: "</strong>{fix}</p> })}
                    </div>
                </li>
            }
        })
        .collect_view();
    view! {
        <p id="doctor-summary" class=summary_class data-passed=doctor.passed.to_string()>{summary}</p>
        <ul class="checks">{checks}</ul>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_lines_make_names_absolute() {
        assert_eq!(
            zone_line("chat.example.org", "mx", "10 chat.example.org"),
            "chat.example.org.\tIN\tMX\t10 chat.example.org."
        );
        assert_eq!(
            zone_line("www.example.org.", "CNAME", "chat.example.org"),
            "www.example.org.\tIN\tCNAME\tchat.example.org."
        );
        assert_eq!(zone_line("chat.example.org", "A", "192.0.2.1"), "chat.example.org.\tIN\tA\t192.0.2.1");
    }

    #[test]
    fn long_txt_values_split_into_quoted_strings() {
        let key = format!("v=DKIM1; k=rsa; p={}", "A".repeat(400));
        let line = zone_line("dkim._domainkey.example.org", "TXT", &key);
        let value = line.rsplit('\t').next().unwrap_or_default();
        assert_eq!(value.matches('"').count(), 4, "{value}");
        assert!(value.starts_with("\"v=DKIM1; k=rsa; p=A"));
    }

    #[test]
    fn txt_quotes_and_backslashes_are_escaped() {
        assert_eq!(txt_strings("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(txt_strings("\"already quoted\""), "\"already quoted\"");
    }
}
