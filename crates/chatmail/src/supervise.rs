//! The relay's long-lived tasks, each under a name and a rule for what
//! happens when it ends before the relay stops.
//!
//! - [`Tasks::spawn`]: a task the relay cannot serve without (a listener's
//!   accept loop, the store writer, the queue scheduler, the control
//!   socket, certificate renewal, the push worker, a service's switch).
//!   Its end, by error, panic or plain return, is reported by
//!   [`Tasks::next_exit`]; [`crate::server::run`] then stops the relay and
//!   exits non-zero, so that the service manager starts it afresh with every
//!   listener bound and every queue reloaded from the store.
//! - [`Tasks::spawn_restarting`]: periodic housekeeping that holds nothing
//!   in flight (expiry, memory trim). Its failure is logged and the task is
//!   started again after a backoff (1 s, doubling up to 60 s, back to 1 s
//!   after a minute of good running); it never brings the relay down.
//!
//! Every task lives in one `JoinSet`: dropping [`Tasks`] aborts them all.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

/// The first pause before a failed housekeeping task starts again.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest pause between restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A run this long counts as healthy: the next failure waits
/// [`FIRST_BACKOFF`] again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The named tasks of a running relay.
pub struct Tasks {
    set: JoinSet<anyhow::Result<()>>,
    /// Each task's name, by task id, for the report of its end.
    names: HashMap<Id, String>,
    /// Cancelled when the relay stops; [`Tasks::spawn_restarting`] stops
    /// restarting then.
    shutdown: CancellationToken,
}

/// A task that ended: which, and why.
#[derive(Debug)]
pub struct Exit {
    pub name: String,
    /// "returned", the error chain, or the panic message.
    pub cause: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} stopped: {}", self.name, self.cause)
    }
}

impl Tasks {
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            set: JoinSet::new(),
            names: HashMap::new(),
            shutdown,
        }
    }

    /// Runs a task the relay cannot do without; see the module doc.
    pub fn spawn<F>(&mut self, name: impl Into<String>, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let handle = self.set.spawn(task);
        self.names.insert(handle.id(), name.into());
    }

    /// Follows a task that another crate spawned and owns (the store
    /// writer, the queue scheduler), given as the future of its end: an
    /// end before the relay stops is reported like that of any task run
    /// by [`Tasks::spawn`].
    pub fn watch<F>(&mut self, name: impl Into<String>, ended: F)
    where
        F: Future<Output = Result<(), JoinError>> + Send + 'static,
    {
        let stop = self.shutdown.clone();
        self.spawn(name, async move {
            tokio::select! {
                ended = ended => {
                    if let Err(e) = ended {
                        anyhow::bail!(join_error(&e));
                    }
                    if stop.is_cancelled() {
                        return Ok(());
                    }
                    anyhow::bail!("ended before the relay stopped")
                }
                () = stop.cancelled() => Ok(()),
            }
        });
    }

    /// Runs `start()` and starts it again after a backoff whenever it fails,
    /// panics or returns before the relay stops; see the module doc.
    pub fn spawn_restarting<S, F>(&mut self, name: impl Into<String>, start: S)
    where
        S: Fn() -> F + Send + 'static,
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let name = name.into();
        let shutdown = self.shutdown.clone();
        let task = restarting(name.clone(), start, shutdown);
        self.spawn(name, async move {
            task.await;
            Ok(())
        });
    }

    /// Waits for the next task to end; pending forever when none is left.
    pub async fn next_exit(&mut self) -> Exit {
        let Some(ended) = self.set.join_next_with_id().await else {
            return std::future::pending().await;
        };
        let (id, cause) = match ended {
            Ok((id, Ok(()))) => (id, "returned".to_owned()),
            Ok((id, Err(e))) => (id, format!("{e:#}")),
            Err(e) => (e.id(), join_error(&e)),
        };
        let name = self.names.remove(&id).unwrap_or_default();
        Exit { name, cause }
    }

    /// Waits until every task has ended, at most `grace`, then aborts the
    /// rest; returns the tasks that ended with an error or a panic.
    pub async fn drain(mut self, grace: Duration) -> Vec<Exit> {
        let mut failed = Vec::new();
        let drain = async {
            while !self.set.is_empty() {
                let exit = self.next_exit().await;
                if exit.cause != "returned" {
                    failed.push(exit);
                }
            }
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            self.set.abort_all();
            while self.set.join_next().await.is_some() {}
        }
        failed
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.set.len()
    }
}

/// "panicked with message ..." or "aborted", without the task id.
fn join_error(error: &JoinError) -> String {
    if error.is_cancelled() {
        return "aborted".to_owned();
    }
    let text = error.to_string();
    match text.split_once(" panicked") {
        Some((_, rest)) => format!("panicked{rest}"),
        None => text,
    }
}

/// The loop behind [`Tasks::spawn_restarting`].
async fn restarting<S, F>(name: String, start: S, shutdown: CancellationToken)
where
    S: Fn() -> F,
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        let began = tokio::time::Instant::now();
        let mut run = JoinSet::new();
        run.spawn(start());
        let ended = tokio::select! {
            () = shutdown.cancelled() => return,
            ended = run.join_next() => ended,
        };
        if shutdown.is_cancelled() {
            return;
        }
        let cause = match ended {
            Some(Ok(Ok(()))) | None => "returned".to_owned(),
            Some(Ok(Err(e))) => format!("{e:#}"),
            Some(Err(e)) => join_error(&e),
        };
        if began.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        tracing::error!(task = %name, "stopped: {cause}; starting again in {backoff:?}");
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn an_ending_task_is_reported_with_its_name_and_cause() {
        let mut tasks = Tasks::new(CancellationToken::new());
        tasks.spawn("waits", std::future::pending());
        tasks.spawn("fails", async { Err(anyhow::anyhow!("disk on fire")) });
        let exit = tasks.next_exit().await;
        assert_eq!(exit.to_string(), "fails stopped: disk on fire");
        tasks.spawn("returns", async { Ok(()) });
        assert_eq!(tasks.next_exit().await.cause, "returned");
        assert_eq!(tasks.len(), 1);
    }

    #[tokio::test]
    async fn a_watched_task_that_ends_early_is_reported_and_one_ending_at_the_stop_is_not() {
        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::new(shutdown.clone());
        let panicking = tokio::spawn(async { panic!("writer bug") });
        tasks.watch("store writer", panicking);
        assert_eq!(
            tasks.next_exit().await.to_string(),
            "store writer stopped: panicked with message \"writer bug\""
        );
        let returning = tokio::spawn(async {});
        tasks.watch("queue scheduler", returning);
        assert_eq!(
            tasks.next_exit().await.to_string(),
            "queue scheduler stopped: ended before the relay stopped"
        );
        let stop = shutdown.clone();
        let at_stop = tokio::spawn(async move { stop.cancelled().await });
        tasks.watch("queue scheduler", at_stop);
        shutdown.cancel();
        assert_eq!(tasks.next_exit().await.cause, "returned");
    }

    #[tokio::test]
    async fn a_panic_is_reported_with_its_message() {
        let mut tasks = Tasks::new(CancellationToken::new());
        tasks.spawn("writer", async { panic!("broken invariant") });
        let exit = tasks.next_exit().await;
        assert_eq!(
            exit.to_string(),
            "writer stopped: panicked with message \"broken invariant\""
        );
    }

    #[tokio::test(start_paused = true)]
    async fn housekeeping_starts_again_with_a_growing_backoff_and_stops_at_shutdown() {
        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::new(shutdown.clone());
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        tasks.spawn_restarting("expiry", move || {
            let runs = counted.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                    panic!("bad row");
                }
                Err(anyhow::anyhow!("database locked"))
            }
        });
        let start = tokio::time::Instant::now();
        // Runs at 0 s, then after 1, 2, 4 and 8 s of backoff.
        tokio::time::sleep(Duration::from_millis(15_500)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 5);
        shutdown.cancel();
        assert_eq!(tasks.next_exit().await.cause, "returned");
        assert!(start.elapsed() < Duration::from_secs(16));
        assert_eq!(runs.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_aborts_what_outlives_the_grace_and_lists_the_failures() {
        let mut tasks = Tasks::new(CancellationToken::new());
        tasks.spawn("listener", async { Ok(()) });
        tasks.spawn("queue", async { Err(anyhow::anyhow!("store closed")) });
        tasks.spawn("stuck", std::future::pending());
        let failed = tasks.drain(Duration::from_secs(10)).await;
        let failed: Vec<String> = failed.iter().map(Exit::to_string).collect();
        assert_eq!(failed, ["queue stopped: store closed"]);
    }
}
