//! chatmail-testkit: what whole-server tests and benchmarks share: a relay
//! process on loopback (one loopback IP per relay, so that two can federate),
//! minimal SMTP (submission and MX) and IMAP clients over real TLS,
//! encrypted-shaped test messages, a TLS tunnel and a real Shadowsocks
//! client. Test support only, never shipped.

pub mod client;
pub mod clock;
pub mod message;
pub mod mx;
pub mod relay;
pub mod socks;
pub mod tunnel;

/// Errors of test helpers: anything, with a message.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// Result of test helpers.
pub type Result<T> = std::result::Result<T, Error>;
