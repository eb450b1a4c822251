//! One module per screen. Each screen loads what it shows when it mounts
//! and again after every change it makes, so it never shows a stale state
//! as the result of its own action.

pub mod accounts;
pub mod dashboard;
pub mod dns;
pub mod federation;
pub mod queue;
pub mod registration;
pub mod services;
pub mod signin;
