//! Operator commands that read or change state next to (or instead of) a
//! running relay: `madmail dns` and `madmail queue ...`.

use std::process::ExitCode;

use chatmail_config::Settings;
use chatmail_store::{Store, StoreOptions};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum QueueCommand {
    /// List queued recipients with their state, attempts and last error.
    List,
    /// Make every pending delivery due now (a running relay picks them up
    /// within a minute).
    Flush,
    /// Drop every queued message without bouncing.
    Purge,
}

/// Opens the relay's store (safe beside a running relay: SQLite WAL).
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    Ok(Store::open(StoreOptions {
        path: settings.sqlite_path.clone(),
        max_batch: settings.config.storage.max_commit_batch,
    })
    .await?)
}

/// `madmail queue ...`.
pub async fn queue(settings: Settings, command: QueueCommand) -> anyhow::Result<ExitCode> {
    let store = open_store(&settings).await?;
    match command {
        QueueCommand::List => {
            let entries = store.queue_entries().await?;
            for e in &entries {
                println!(
                    "{}\t{}\t{:?}\tattempts={}\t{}",
                    e.id,
                    e.recipient,
                    e.state,
                    e.attempts,
                    e.last_error.as_deref().unwrap_or("-")
                );
            }
            let counts = store.queue_counts().await?;
            println!(
                "{} message(s), {} recipient(s) pending",
                counts.messages, counts.recipients
            );
        }
        QueueCommand::Flush => println!("{} deliveries made due", store.queue_flush().await?),
        QueueCommand::Purge => println!("{} queued message(s) dropped", store.queue_purge().await?),
    }
    Ok(ExitCode::SUCCESS)
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
