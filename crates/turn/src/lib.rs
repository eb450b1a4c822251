//! chatmail-turn: TURN for Delta Chat calls (docs/specifications.md §4).
//!
//! [`credentials::Credentials`] mints the short-lived username/password
//! pairs that the IMAP METADATA entry `/shared/vendor/deltachat/turn`
//! hands to clients, from one per-installation secret; [`server::serve`]
//! is the TURN server that accepts them (RFC 8656 over UDP and TCP,
//! relayed addresses over UDP), with the expiry in the username enforced,
//! relaying refused to the relay's own and to non-public addresses
//! ([`peers::Peers`]), and allocations and bandwidth capped.

mod caps;
pub mod credentials;
mod guard;
pub mod peers;
pub mod server;

pub use credentials::Credentials;
