//! Log setup. In no-log mode only errors that stop the server are printed;
//! the protocol crates additionally keep addresses and IPs out of every
//! message when `no_log` is set. The TURN protocol crates are silenced:
//! they name client and peer addresses, and log a client's ordinary first
//! unauthenticated request as an error. So is the iroh relay: it names the
//! node keys of its clients (stable per device), and what stops it reaches
//! the log through the relay's own error. So is the Shadowsocks crate: any
//! prober can make it log at error level (its own proxy counts those
//! connections in the metrics instead).

use std::io::IsTerminal;

use chatmail_config::schema::LogConfig;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (stderr, no ANSI colours when not a tty).
pub fn init(config: &LogConfig) {
    let filter = if config.no_log {
        EnvFilter::new("error")
    } else {
        EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"))
    };
    let filter = [
        "turn_server_proto",
        "turn_types",
        "stun_proto",
        "stun_types",
        "iroh_relay",
        "shadowsocks",
    ]
    .iter()
    .filter_map(|target| format!("{target}=off").parse().ok())
    .fold(filter, EnvFilter::add_directive);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
