//! chatmail-doctor: the relay's self-check (`madmail doctor`,
//! `madmail dns --check`) and the DNS records it needs (`madmail dns`).
//!
//! Flow: [`run`] connects to every configured listener as a client would
//! (module `listeners`: TLS handshake and greeting, STARTTLS where the
//! port speaks it), judges each certificate it was shown (module `cert`),
//! looks up the DNS records and compares them with [`records`] (module
//! `dns`; the DKIM record against the key on disk, module `dkim`), probes
//! port 25 and `/mxdeliv` the way another relay would without delivering
//! anything (module `federation`), and compares free disk space, memory
//! and load with the limits at which registration pauses (module
//! `resources`). Every finding is one [`Check`]; a [`Report`] passes when
//! no check failed (warnings allowed).
//!
//! Invariants:
//! - nothing is ever written or delivered: the DKIM key is only read
//!   ([`chatmail_dkim::DkimKey::load`]), SMTP sessions end with `QUIT`
//!   before `MAIL`, and the `/mxdeliv` probe names no recipient;
//! - every network step has a timeout and every line read is bounded, so a
//!   check of a hung service fails instead of hanging;
//! - a failed check names the address, record or path it is about and
//!   carries a fix.
//!
//! API Boundary: [`run`] and [`check_dns`] return `Send` futures and never
//! fail as a whole (a problem is a failed check), so the CLI and the admin
//! API can call them alike.

mod cert;
mod dkim;
mod dns;
mod federation;
mod listeners;
mod probe;
mod records;
mod resources;
mod tls;

use chatmail_config::Settings;
use serde::Serialize;

pub use records::{Record, mta_sts_policy, records, zone};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing to do.
    Pass,
    /// Works, but deserves a look (a self-signed certificate, a missing
    /// recommended record, a certificate expiring soon).
    Warn,
    /// Broken: clients or other relays will notice.
    Fail,
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked, with the address, record or path it is about
    /// (`listen imaps 127.0.0.1:993`, `dns MX chat.example.org.`).
    pub name: String,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about a warning or failure.
    pub fix: Option<String>,
}

impl Check {
    pub(crate) fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(name, Status::Pass, detail, None)
    }

    pub(crate) fn warn(name: impl Into<String>, detail: impl Into<String>, fix: &str) -> Self {
        Self::new(name, Status::Warn, detail, Some(fix.to_owned()))
    }

    pub(crate) fn fail(name: impl Into<String>, detail: impl Into<String>, fix: &str) -> Self {
        Self::new(name, Status::Fail, detail, Some(fix.to_owned()))
    }

    pub(crate) fn new(
        name: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
        fix: Option<String>,
    ) -> Self {
        Self {
            name: name.into(),
            status,
            detail: detail.into(),
            fix,
        }
    }
}

/// Every check of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// No check failed (warnings allowed).
    pub passed: bool,
    pub checks: Vec<Check>,
}

impl Report {
    /// A report of `checks`; it passes when none failed.
    pub fn new(checks: Vec<Check>) -> Self {
        let passed = checks.iter().all(|c| c.status != Status::Fail);
        Self { passed, checks }
    }

    /// How many checks came out as `status`.
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }
}

/// The whole self-check: listeners and their certificates, DNS and DKIM,
/// the federation probes, disk, memory and load.
pub async fn run(settings: &Settings) -> Report {
    let (mut checks, dns, federation) = tokio::join!(
        listeners::check(settings),
        dns::check(settings),
        federation::check(settings),
    );
    checks.extend(dns);
    checks.extend(federation);
    checks.extend(resources::check(settings));
    Report::new(checks)
}

/// The records the relay needs, the DKIM record from the key on disk
/// (left out while there is no key yet): what the admin API shows.
pub fn expected_records(settings: &Settings) -> Vec<Record> {
    let key = dkim::load(settings).ok().flatten();
    records::build(settings, key.as_ref())
}

/// The published DNS records against those the relay needs
/// (`madmail dns --check`), the DKIM key included.
pub async fn check_dns(settings: &Settings) -> Report {
    Report::new(dns::check(settings).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn futures_are_send_for_the_admin_api() {
        let settings = chatmail_config::parse("mail_domain = \"1.2.3.4\"").unwrap();
        assert_send(&run(&settings));
        assert_send(&check_dns(&settings));
    }

    #[test]
    fn a_report_passes_with_warnings_but_not_with_a_failure() {
        let warned = Report::new(vec![Check::pass("a", "x"), Check::warn("b", "y", "z")]);
        assert!(warned.passed);
        assert_eq!(warned.count(Status::Warn), 1);
        let failed = Report::new(vec![Check::pass("a", "x"), Check::fail("b", "y", "z")]);
        assert!(!failed.passed);
        let json = serde_json::to_value(&failed).unwrap();
        assert_eq!(json["checks"][1]["status"], "fail");
        assert_eq!(json["checks"][0]["status"], "pass");
        assert_eq!(json["checks"][0]["fix"], serde_json::Value::Null);
    }
}
