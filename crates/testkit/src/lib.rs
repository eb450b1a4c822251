//! chatmail-testkit: what whole-server tests and benchmarks share: a relay
//! process on loopback, minimal SMTP and IMAP clients over real TLS, and
//! encrypted-shaped test messages. Test support only, never shipped.

pub mod client;
pub mod message;
pub mod relay;

/// Errors of test helpers: anything, with a message.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// Result of test helpers.
pub type Result<T> = std::result::Result<T, Error>;
