//! Operator commands that read state next to (or instead of) a running
//! relay: `madmail dns`, and the store for `madmail expire`.

use std::process::ExitCode;

use chatmail_config::Settings;
use chatmail_store::{Store, StoreOptions};

/// Opens the relay's store (safe beside a running relay: SQLite WAL).
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    Ok(Store::open(StoreOptions {
        path: settings.sqlite_path.clone(),
        max_batch: settings.config.storage.max_commit_batch,
    })
    .await?)
}

/// `madmail dns`: prints the records as a zone fragment or JSON.
pub fn dns(settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    let key = crate::federation::dkim_key(settings)?;
    let records = chatmail_doctor::records(settings, &key);
    if json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    } else if records.is_empty() {
        println!(
            "; {} is an IP-only relay: it needs no DNS records",
            settings.domain.host()
        );
    } else {
        print!("{}", chatmail_doctor::zone(&records));
    }
    Ok(ExitCode::SUCCESS)
}
