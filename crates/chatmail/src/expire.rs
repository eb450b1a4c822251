//! Retention (docs/specifications.md §5, §8): the hourly expiry task of a
//! running relay and the `madmail expire [--dry-run] [--verbose]` command.
//!
//! Both apply the `[retention]` section through `Store::expire`, which
//! deletes through the store's single writer, so IMAP clients in IDLE see
//! the EXPUNGEs. The command is safe beside a running relay (SQLite WAL).
//! Output: counts always; the addresses of inactive accounts only with
//! `--verbose` (operators in no-log mode keep them off the terminal log).

use std::process::ExitCode;
use std::time::Duration;

use chatmail_config::Settings;
use chatmail_config::schema::RetentionConfig;
use chatmail_store::{ExpireReport, ExpireRules, Store};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Time between two runs of the expiry task.
pub const EXPIRY_INTERVAL: Duration = Duration::from_secs(3_600);
/// Delay before the first run, so start-up is not slowed down.
pub const FIRST_EXPIRY_DELAY: Duration = Duration::from_secs(60);

/// Options of `madmail expire`.
#[derive(clap::Args)]
pub struct ExpireOptions {
    /// Only count (and with `--verbose`, list) what would be deleted.
    #[arg(long)]
    pub dry_run: bool,
    /// Also print the addresses of the inactive accounts.
    #[arg(long, short)]
    pub verbose: bool,
}

/// The store's rules from the `[retention]` configuration.
pub fn rules(retention: &RetentionConfig) -> ExpireRules {
    ExpireRules {
        delete_mails_after: retention.delete_mails_after,
        delete_large_after: retention.delete_large_after,
        large_message_size: retention.large_message_size,
        delete_inactive_users_after: retention.delete_inactive_users_after,
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Runs expiry after [`FIRST_EXPIRY_DELAY`], then every
/// [`EXPIRY_INTERVAL`], until `shutdown`; a failed run is logged and
/// retried at the next tick. `log` false (no-log mode) silences it.
pub fn spawn_expiry(
    store: Store,
    rules: ExpireRules,
    shutdown: CancellationToken,
    log: bool,
) -> JoinHandle<()> {
    spawn_expiry_every(
        store,
        rules,
        shutdown,
        log,
        FIRST_EXPIRY_DELAY,
        EXPIRY_INTERVAL,
    )
}

fn spawn_expiry_every(
    store: Store,
    rules: ExpireRules,
    shutdown: CancellationToken,
    log: bool,
    first: Duration,
    every: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut delay = first;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = every;
            match store.expire(unix_now(), &rules).await {
                Ok(report) if log => tracing::info!(
                    old = report.old_messages,
                    large = report.large_messages,
                    bytes = report.bytes,
                    accounts = report.accounts.len(),
                    "expiry done"
                ),
                Ok(_) => {}
                Err(error) if log => tracing::warn!(%error, "expiry failed"),
                Err(_) => {}
            }
        }
    })
}

/// `madmail expire`.
pub async fn run(settings: Settings, options: ExpireOptions) -> anyhow::Result<ExitCode> {
    let store = crate::admin::open_store(&settings).await?;
    let rules = rules(&settings.config.retention);
    let report = if options.dry_run {
        store.expire_dry_run(unix_now(), &rules).await?
    } else {
        store.expire(unix_now(), &rules).await?
    };
    store.close().await;
    print!("{}", render(&report, options.dry_run, options.verbose));
    Ok(ExitCode::SUCCESS)
}

fn render(report: &ExpireReport, dry_run: bool, verbose: bool) -> String {
    let verb = if dry_run { "would delete" } else { "deleted" };
    let mut text = format!(
        "{verb}: {} old messages, {} large seen messages ({} bytes), {} inactive accounts\n",
        report.old_messages,
        report.large_messages,
        report.bytes,
        report.accounts.len()
    );
    if verbose {
        for address in &report.accounts {
            text.push_str(&format!("  {address}\n"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatmail_store::{NewMessage, StoreOptions};

    #[test]
    fn lists_addresses_only_when_verbose() {
        let report = ExpireReport {
            old_messages: 2,
            accounts: vec!["gone@x.org".to_owned()],
            ..ExpireReport::default()
        };
        let quiet = render(&report, true, false);
        assert_eq!(
            quiet,
            "would delete: 2 old messages, 0 large seen messages (0 bytes), 1 inactive accounts\n"
        );
        assert!(render(&report, false, true).ends_with("  gone@x.org\n"));
    }

    #[tokio::test]
    async fn the_task_expires_soon_after_start_and_stops_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            path: dir.path().join("m.db"),
            ..StoreOptions::default()
        };
        let store = Store::open(options).await.unwrap();
        let chatmail_store::Created::New(account) =
            store.create_account("a@x.org", "$hash").await.unwrap()
        else {
            panic!("existed");
        };
        store
            .record_login(account.id, unix_now() / 86_400)
            .await
            .unwrap();
        let inbox = store.mailbox(account.id, "INBOX").await.unwrap().unwrap();
        let old = NewMessage {
            body: b"Subject: x\r\n\r\nx\r\n".to_vec().into(),
            flags: vec![],
            internal_date: unix_now() - 30 * 86_400,
        };
        store.append(inbox.id, old).await.unwrap();
        let shutdown = CancellationToken::new();
        let rules = rules(&RetentionConfig::default());
        let mut changes = store.subscribe(account.id);
        let (first, every) = (Duration::from_millis(10), Duration::from_secs(3_600));
        let task = spawn_expiry_every(store.clone(), rules, shutdown.clone(), false, first, every);
        tokio::time::timeout(Duration::from_secs(5), changes.changed())
            .await
            .unwrap()
            .unwrap();
        assert!(store.uids(inbox.id).await.unwrap().is_empty());
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
