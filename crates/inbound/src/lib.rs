//! chatmail-inbound: acceptance of mail from other relays (docs/specifications.md §2
//! inbound rules, §6), shared by the SMTP MX on port 25 and `POST /mxdeliv`
//! so that both give the same answers.
//!
//! Flow, per message:
//! 1. [`Inbound::check_sender`] — the envelope sender's domain passes the
//!    federation policy (the null sender always does);
//! 2. [`Inbound::check_recipient`] per recipient — a local domain (else
//!    `554 5.7.1 Relay access denied`: no open relay) and an existing
//!    account (else `550 5.1.1 User unknown`); a client address that tried
//!    too many unknown recipients (`limits.unknown_recipients_per_minute`)
//!    gets `450 4.7.1` for every recipient until its rate allows again, so
//!    addresses cannot be probed quickly;
//!    The MX also asks [`Inbound::check_room`] per recipient
//!    (`552 5.2.2 Quota exceeded`);
//! 3. [`Inbound::accept`] — size, encryption gate (`523`; a bounce only
//!    from the null envelope sender), exactly one From address, not in a
//!    local domain (local users submit on 465/587), whose domain passes the
//!    federation policy; the origin: DKIM with `d=` equal to the From
//!    domain (the exact `554` texts, `451` on DNS failure), or for an IP
//!    literal `[a.b.c.d]` a connection from exactly that address (it has
//!    no DNS to sign with); removal of `DKIM-Signature`,
//!    `Authentication-Results` and `Received`, then one durable store
//!    transaction for all recipients. A recipient the message would put
//!    over quota gets no copy (the store checks inside the transaction);
//!    the others get theirs and the message is accepted. Only when every
//!    recipient is over quota is it refused with `552 5.2.2`.
//!
//! Known deviation (quota): a recipient found over quota only inside the
//! delivery transaction, while others got the message, is dropped without
//! notice: the sending relay already got one reply for the whole message
//! (SMTP `250` after DATA, `/mxdeliv` `200`; RFC 5321 §4.2.5 per-recipient
//! DATA replies need LMTP), and a bounce from here would go to an
//! unverified remote envelope sender, which is never stored. Port 25 makes
//! this rare by checking each recipient's room at `RCPT` (with `SIZE=`).
//!
//! Invariants:
//! - nothing is stored unless every check passed, and [`Inbound::accept`]
//!   returns `Ok` only once the store has made the message durable;
//! - the envelope sender is never stored: a sender that differs from the
//!   From address is not refused, and no bounce path is kept (docs/specifications.md §2:
//!   "store with an empty envelope sender");
//! - a temporary failure (DNS, store) is always a 4xx, never a 5xx;
//! - every [`Refusal`] names its metrics [`Reason`](chatmail_metrics::Reason);
//!   the callers count it, as they know where the message came in;
//! - logs carry no message content, and nothing about addresses in no-log
//!   mode.

mod headers;
mod keys;
mod refusal;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chatmail_accounts::Accounts;
use chatmail_config::Settings;
use chatmail_limits::{ClientKey, Gcra, Spools};
use chatmail_store::{AccountId, NewMessage, StoreError};

pub use headers::{domain_of, from_address, normalize_line_endings, strip_trace_headers};
pub use keys::KeyLookup;
pub use refusal::{Kind, Refusal};

/// Client addresses the unknown-recipient rate tracks at once.
const PROBING_CLIENTS: usize = 65_536;

/// Who hands a message over.
#[derive(Debug, Clone, Copy, Default)]
pub struct Envelope<'a> {
    /// `MAIL FROM` or `X-Mail-From`; `None` (or empty) for the null sender.
    pub sender: Option<&'a str>,
    /// The address the peer relay connects from; `None` when unknown
    /// (in-memory sessions), which no IP-literal From matches.
    pub client: Option<IpAddr>,
}

impl Envelope<'_> {
    fn null_sender(&self) -> bool {
        self.sender.is_none_or(str::is_empty)
    }
}

/// The inbound acceptance pipeline; cheap to clone.
#[derive(Clone)]
pub struct Inbound {
    /// Domain, limits and federation policy.
    settings: Arc<Settings>,
    /// Account lookups and the store behind them.
    accounts: Accounts,
    /// Where DKIM key records come from.
    keys: Arc<KeyLookup>,
    /// Checks the signatures against them; made once (it is costly).
    dkim: Arc<chatmail_dkim::Verifier>,
    /// Unknown recipients tried per client address.
    probes: Arc<Gcra<ClientKey>>,
    /// Message bodies in flight, for every listener that takes them.
    spools: Spools,
    /// Push notifications for the recipients; `None`: none are sent.
    pub push: Option<chatmail_push::Push>,
}

impl Inbound {
    pub fn new(settings: Arc<Settings>, accounts: Accounts, keys: KeyLookup) -> Self {
        let per_minute = settings.limits().unknown_recipients_per_minute;
        let probes = Gcra::new(per_minute, per_minute, PROBING_CLIENTS);
        let limits = settings.limits();
        let spools = Spools::new(
            settings.config.state_dir.join("spool"),
            limits.max_body_memory,
            limits.max_spool_size,
            limits.max_message_size,
        );
        Self {
            probes: Arc::new(probes),
            spools,
            settings,
            accounts,
            keys: Arc::new(keys),
            dkim: Arc::new(chatmail_dkim::Verifier::new()),
            push: None,
        }
    }

    /// The same pipeline, notifying recipients' devices through `push`.
    pub fn with_push(mut self, push: chatmail_push::Push) -> Self {
        self.push = Some(push);
        self
    }

    /// Where message bodies are taken as they arrive, under the process's
    /// memory and disk budgets (`limits.max_body_memory`,
    /// `limits.max_spool_size`); submission uses it too, so all listeners
    /// share one budget.
    pub fn spools(&self) -> &Spools {
        &self.spools
    }

    /// The settings this pipeline enforces.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn log(&self) -> bool {
        !self.settings.config.log.no_log
    }

    /// The account of a recipient named by a peer connecting from `client`
    /// (`None`: unknown, one shared budget): a local domain and an existing
    /// account, within the client's rate of unknown recipients.
    pub async fn check_recipient(
        &self,
        address: &str,
        client: Option<IpAddr>,
    ) -> Result<AccountId, Refusal> {
        // Charged before the lookup, so that concurrent probes cannot all
        // pass one check; refunded unless the recipient was unknown.
        let client = ClientKey::of_opt(client);
        if !self.probes.allow(client, Instant::now()) {
            return Err(Refusal::probing());
        }
        let found = self.find_recipient(address).await;
        if !matches!(&found, Err(refusal) if refusal.kind == Kind::UnknownUser) {
            self.probes.refund(&client);
        }
        found
    }

    async fn find_recipient(&self, address: &str) -> Result<AccountId, Refusal> {
        let domain = domain_of(address).ok_or(Refusal::unknown_user())?;
        if !self.settings.domain.matches(domain) {
            return Err(Refusal::relay_denied()); // RFC 5321 §3.6.2: no open relay
        }
        let local = self
            .accounts
            .local_address(address)
            .ok_or(Refusal::unknown_user())?;
        match self.accounts.store().account(&local).await {
            Ok(Some(account)) => Ok(account.id),
            Ok(None) => Err(Refusal::unknown_user()),
            Err(error) => Err(self.store_failure(&error)),
        }
    }

    /// Whether a message of `size` bytes (1 when not yet known) still fits
    /// the quota of `account` (docs/specifications.md §5).
    pub async fn check_room(&self, account: AccountId, size: u64) -> Result<(), Refusal> {
        match self.accounts.store().has_room(account, size.max(1)).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Refusal::quota_exceeded()),
            Err(error) => Err(self.store_failure(&error)),
        }
    }

    /// The federation policy for a peer domain (after `@`, brackets kept
    /// for IP literals).
    pub fn check_sender_domain(&self, domain: &str) -> Result<(), Refusal> {
        if self.settings.federation_allows(domain) {
            Ok(())
        } else {
            Err(Refusal::policy())
        }
    }

    /// The federation policy for an envelope sender; `None` or empty is the
    /// null sender (RFC 5321 §4.5.5), which bounces use and which passes.
    /// A sender in a local domain is refused: this relay's own mail never
    /// comes back in from outside.
    pub fn check_sender(&self, sender: Option<&str>) -> Result<(), Refusal> {
        match sender.filter(|s| !s.is_empty()) {
            None => Ok(()),
            Some(sender) => {
                let domain = domain_of(sender).ok_or(Refusal::bad_sender())?;
                if self.settings.domain.matches(domain) {
                    return Err(Refusal::local_from());
                }
                self.check_sender_domain(domain)
            }
        }
    }

    /// Checks `message` and stores it for `recipients` (from
    /// [`Inbound::check_recipient`]); `Ok` once it is durable.
    pub async fn accept(
        &self,
        envelope: Envelope<'_>,
        recipients: &[AccountId],
        message: &[u8],
    ) -> Result<(), Refusal> {
        if recipients.is_empty() {
            return Err(Refusal::no_recipients());
        }
        let max = self.settings.limits().max_message_size;
        if u64::try_from(message.len()).map_or(true, |len| len > max) {
            return Err(Refusal::too_big());
        }
        self.check_sender(envelope.sender)?;
        let direction = chatmail_gate::Direction::Inbound {
            null_sender: envelope.null_sender(),
        };
        if let Err(reason) = chatmail_gate::check(message, direction) {
            if self.log() {
                tracing::info!(%reason, "refused unencrypted inbound message");
            }
            return Err(Refusal::unencrypted());
        }
        let from = from_address(message).ok_or(Refusal::invalid_from())?;
        let from_domain = domain_of(&from).ok_or(Refusal::invalid_from())?;
        if self.settings.domain.matches(from_domain) {
            return Err(Refusal::local_from());
        }
        self.check_sender_domain(from_domain)?;
        self.check_origin(message, from_domain, envelope.client)
            .await?;
        // docs/specifications.md §2: a sender other than From is not refused; the
        // envelope is not stored, so no bounce path survives.
        self.store(recipients, strip_trace_headers(message)).await?;
        chatmail_metrics::peers::peer_inbound(from_domain);
        Ok(())
    }

    /// That the message comes from the From domain's relay: an IP literal
    /// from exactly that address, a DNS domain by DKIM with `d=` equal to
    /// it (docs/specifications.md §2, strict alignment).
    async fn check_origin(
        &self,
        message: &[u8],
        from_domain: &str,
        client: Option<IpAddr>,
    ) -> Result<(), Refusal> {
        match chatmail_config::domain::ip_literal(from_domain) {
            Some(ip) if client.map(|c| c.to_canonical()) == Some(ip.to_canonical()) => Ok(()),
            Some(_) => Err(Refusal::foreign_ip_literal()),
            None => Ok(self
                .dkim
                .verify(message, from_domain, self.keys.as_ref())
                .await?),
        }
    }

    /// One durable store transaction for all recipients.
    async fn store(&self, recipients: &[AccountId], body: Vec<u8>) -> Result<(), Refusal> {
        let size = body.len();
        let message = NewMessage {
            body: Bytes::from(body),
            flags: Vec::new(),
            internal_date: unix_now(),
        };
        match self
            .accounts
            .store()
            .deliver_inbound(recipients, message)
            .await
        {
            Ok(report) => {
                if let Some(push) = &self.push {
                    let accounts: Vec<AccountId> =
                        report.delivered.iter().map(|d| d.account).collect();
                    push.notify(&accounts);
                }
                if self.log() {
                    let (recipients, over_quota, duplicates) = (
                        report.delivered.len(),
                        report.over_quota.len(),
                        report.duplicates.len(),
                    );
                    tracing::info!(
                        recipients,
                        over_quota,
                        duplicates,
                        size,
                        "inbound message stored"
                    );
                }
                Ok(())
            }
            // Every recipient's account was deleted meanwhile.
            Err(StoreError::NoAccount) => Err(Refusal::unknown_user()),
            Err(StoreError::QuotaExceeded) => Err(Refusal::quota_exceeded()),
            Err(error) => Err(self.store_failure(&error)),
        }
    }

    fn store_failure(&self, error: &StoreError) -> Refusal {
        if self.log() {
            tracing::warn!(%error, "store failure on inbound mail");
        }
        Refusal::of_store(error)
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
