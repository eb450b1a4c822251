//! The resolver configuration every DNS user of the relay shares: the
//! servers of `[federation] dns_servers` (UDP and TCP, each on its own
//! port), or the system's configuration when none are set.

use hickory_resolver::ResolverBuilder;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use chatmail_config::Settings;

/// A resolver builder for `settings`; callers tune its options and build.
pub fn resolver_builder(
    settings: &Settings,
) -> Result<ResolverBuilder<TokioRuntimeProvider>, NetError> {
    let servers = &settings.config.federation.dns_servers;
    if servers.is_empty() {
        return TokioResolver::builder_tokio();
    }
    let name_servers = servers
        .iter()
        .map(|addr| {
            let (mut udp, mut tcp) = (ConnectionConfig::udp(), ConnectionConfig::tcp());
            udp.port = addr.port();
            tcp.port = addr.port();
            NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
        })
        .collect();
    let config = ResolverConfig::from_parts(None, vec![], name_servers);
    Ok(TokioResolver::builder_with_config(
        config,
        TokioRuntimeProvider::default(),
    ))
}
