//! chatmail-turn: TURN for Delta Chat calls (docs/specifications.md §4).
//!
//! So far this crate owns the credentials: [`credentials::Credentials`]
//! mints the short-lived username/password pairs that the IMAP METADATA
//! entry `/shared/vendor/deltachat/turn` hands to clients, and verifies
//! them for a TURN server. Minting and verifying share one
//! per-installation secret, so any process that holds it accepts what
//! another minted.

pub mod credentials;

pub use credentials::{Credentials, CredentialsError};
