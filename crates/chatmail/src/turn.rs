//! Starting the TURN server of `[turn]`: one per `listen` address, sharing
//! the installation's credential secret with the IMAP METADATA minter.

use std::sync::Arc;

use anyhow::Context as _;
use chatmail_config::Settings;
use chatmail_turn::Credentials;
use chatmail_turn::peers::Peers;
use chatmail_turn::server::Options;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Binds and spawns the TURN servers when `[turn] enabled`; returns
/// whether they run (the METADATA `turn` entry is published exactly then).
pub async fn start(
    settings: &Settings,
    credentials: &Arc<Credentials>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<bool> {
    let turn = &settings.config.turn;
    if !turn.enabled || turn.listen.is_empty() || !(turn.udp || turn.tcp) {
        return Ok(false);
    }
    let relay_addresses = settings.turn_relay_addresses();
    anyhow::ensure!(
        !relay_addresses.is_empty(),
        "turn.relay_addresses must be set: turn.listen has only unspecified \
         addresses, and the relayed addresses must be ones clients reach"
    );
    let mut own = relay_addresses.clone();
    own.extend(turn.listen.iter().map(|addr| addr.ip()));
    let peers = Peers::new(settings.turn_allowed_peers(), own);
    for &listen in &turn.listen {
        let options = Options {
            realm: settings.domain.host(),
            listen,
            udp: turn.udp,
            tcp: turn.tcp,
            relay_addresses: relay_addresses.clone(),
            relay_ports: turn.relay_port_min..=turn.relay_port_max,
            peers: peers.clone(),
            max_allocations: turn.max_allocations,
            max_allocations_per_client: turn.max_allocations_per_client,
            max_bandwidth: turn.max_bandwidth,
            max_tcp_connections: turn.max_tcp_connections,
        };
        let server = chatmail_turn::server::bind(options, credentials.clone())
            .await
            .with_context(|| format!("cannot listen for TURN on {listen}"))?;
        let stop = shutdown.clone();
        tasks.spawn(async move { Ok(server.run(stop).await?) });
    }
    Ok(true)
}
