//! What delivery between relays needs at startup: the DNS resolver, the
//! DKIM key, the outbound queue and the inbound checks.

use std::sync::Arc;

use anyhow::Context as _;
use chatmail_accounts::Accounts;
use chatmail_config::Settings;
use chatmail_config::schema::DkimAlgorithm;
use chatmail_dkim::{Algorithm, DkimKey};
use chatmail_inbound::{Inbound, KeyLookup};
use chatmail_queue::Queue;
use chatmail_store::Store;
use chatmail_transport::Transport;
use hickory_resolver::TokioResolver;
use tokio_util::sync::CancellationToken;

/// The running federation services.
pub struct Federation {
    pub queue: Queue,
    pub inbound: Inbound,
}

/// Starts the queue workers and prepares the inbound checks (which wake
/// `push` for every delivery).
pub async fn start(
    settings: &Arc<Settings>,
    accounts: &Accounts,
    push: Option<chatmail_push::Push>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Federation> {
    let resolver = resolver(settings)?;
    let dkim = Arc::new(dkim_key(settings)?);
    let transport = Transport::new(settings.clone(), resolver.clone())?;
    let store: Store = accounts.store().clone();
    let queue = Queue::start(store, transport, dkim, settings.clone(), shutdown.clone()).await?;
    let mut inbound = Inbound::new(settings.clone(), accounts.clone(), KeyLookup::dns(resolver));
    inbound.push = push;
    Ok(Federation { queue, inbound })
}

/// The relay's DKIM key, generated into `state_dir/dkim` on first use.
pub fn dkim_key(settings: &Settings) -> anyhow::Result<DkimKey> {
    let config = &settings.config.dkim;
    let algorithm = match config.algorithm {
        DkimAlgorithm::Rsa => Algorithm::Rsa,
        DkimAlgorithm::Ed25519 => Algorithm::Ed25519,
    };
    let dir = settings.config.state_dir.join("dkim");
    DkimKey::load_or_generate(&dir, &config.selector, algorithm)
        .with_context(|| format!("DKIM key in {}", dir.display()))
}

/// The resolver for MX and DKIM lookups: `federation.dns_servers` if set,
/// else the system's configuration.
fn resolver(settings: &Settings) -> anyhow::Result<TokioResolver> {
    Ok(chatmail_transport::resolver_builder(settings)?.build()?)
}
