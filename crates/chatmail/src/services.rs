//! Switching the TURN server and the Shadowsocks proxy off and on while
//! the relay runs (`/admin/services`, `madmail services`).
//!
//! Each runs under a stop token of its own, child of the relay's. When
//! the operator switches it off, its servers stop: their ports close and
//! their allocations or tunnels end. Switched on again, they bind anew.
//! A service whose servers fail to start again stays off until the next
//! switch change (the error is logged); it never brings the relay down.
//! The iroh relay is switched where it is reached instead (port 443
//! answers 503 for it, METADATA stops naming it).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chatmail_config::{Service, Settings};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a stopping service's connections get before they are cut.
const STOP_GRACE: Duration = Duration::from_secs(5);

pub type Tasks = JoinSet<anyhow::Result<()>>;
type Starting = Pin<Box<dyn Future<Output = anyhow::Result<Tasks>> + Send>>;

/// Starts a service's servers under the given stop token.
pub type Start = Box<dyn Fn(CancellationToken) -> Starting + Send + Sync>;

/// One switchable service, started already (`running`) or not.
pub struct Supervised {
    pub service: Service,
    pub start: Start,
    pub running: Option<(CancellationToken, Tasks)>,
}

/// Starts `start` once now, so that a bad configuration fails the relay's
/// start as before; returns the service ready for [`supervise`].
pub async fn started(
    service: Service,
    shutdown: &CancellationToken,
    start: Start,
) -> anyhow::Result<Supervised> {
    let stop = shutdown.child_token();
    let tasks = start(stop.clone()).await?;
    Ok(Supervised {
        service,
        start,
        running: Some((stop, tasks)),
    })
}

/// Follows the service's switch until `shutdown`.
pub async fn supervise(
    mut service: Supervised,
    settings: Arc<Settings>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let name = service.service.name();
    let mut changes = settings.services().subscribe();
    let mut gave_up = false;
    loop {
        let on = settings.services().is_on(service.service);
        match (on, service.running.take()) {
            (false, Some(running)) => {
                stop(running).await;
                tracing::info!(service = name, "switched off");
            }
            (true, None) if !gave_up => {
                let token = shutdown.child_token();
                match (service.start)(token.clone()).await {
                    Ok(tasks) => {
                        service.running = Some((token, tasks));
                        tracing::info!(service = name, "switched on");
                    }
                    Err(e) => {
                        tracing::error!(service = name, "cannot start: {e:#}");
                        gave_up = true;
                    }
                }
            }
            (_, running) => service.running = running,
        }
        let ended = async {
            match service.running.as_mut() {
                Some((_, tasks)) => tasks.join_next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = changes.changed() => {
                gave_up = false;
                if changed.is_err() {
                    break;
                }
            }
            () = shutdown.cancelled() => break,
            result = ended => match result {
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => tracing::error!(service = name, "a server stopped: {e:#}"),
                Some(Err(e)) => tracing::error!(service = name, "a server task failed: {e}"),
                // Every server ended: nothing left to wait for until a change.
                None => {
                    service.running = None;
                    gave_up = true;
                }
            },
        }
    }
    if let Some(running) = service.running.take() {
        stop(running).await;
    }
    Ok(())
}

async fn stop((token, mut tasks): (CancellationToken, Tasks)) {
    token.cancel();
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(STOP_GRACE, drain).await.is_err() {
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}
