//! Measures delivery throughput with and without group commit.
//!
//! `cargo run --release -p chatmail-store --example group_commit [deliveries] [tasks]`
//! delivers `deliveries` messages (default 2000) from `tasks` concurrent
//! tasks (default 64) into one INBOX on a temporary database, once with
//! `max_batch = 1` (one fsync per message) and once with `max_batch = 256`,
//! and prints messages per second and the number of commits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use chatmail_store::{Created, NewMessage, Store, StoreOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let deliveries: usize = args.next().map_or(Ok(2000), |a| a.parse())?;
    let tasks: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    for max_batch in [1, 256] {
        let dir = tempfile::TempDir::new()?;
        let path = dir.path().join("bench.db");
        let store = Store::open(StoreOptions { path, max_batch }).await?;
        let (Created::New(account) | Created::Existing(account)) =
            store.create_account("bench@example.org", "$x").await?;
        let before = store.commit_count();
        let started = Instant::now();
        let next = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for _ in 0..tasks {
            let (store, next) = (store.clone(), next.clone());
            workers.push(tokio::spawn(async move {
                let message = NewMessage {
                    body: bytes::Bytes::from(vec![b'x'; 4096]),
                    flags: Vec::new(),
                    internal_date: 0,
                };
                while next.fetch_add(1, Ordering::Relaxed) < deliveries {
                    store.deliver(&[account.id], message.clone()).await?;
                }
                Ok::<_, chatmail_store::StoreError>(())
            }));
        }
        for worker in workers {
            worker.await??;
        }
        let secs = started.elapsed().as_secs_f64();
        let commits = store.commit_count() - before;
        println!(
            "max_batch {max_batch:>3}: {deliveries} deliveries from {tasks} tasks, \
             {:.0} msg/s, {commits} commits",
            deliveries as f64 / secs
        );
        store.close().await;
    }
    Ok(())
}
