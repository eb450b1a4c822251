//! chatmail-accounts: addresses, passwords and just-in-time account creation
//! (docs/specifications.md §1).
//!
//! Flow of [`Accounts::login`]: normalise the address (lower case, exactly
//! one `@`, our domain) → look the account up → existing: check the password
//! (cache, else Argon2id) → unknown: apply the registration rules, hash,
//! create; if a concurrent login created it first, check against the stored
//! hash instead → record the login day if it changed.
//!
//! Invariants:
//! - every refusal is the same [`LoginError::Invalid`], so clients cannot
//!   tell a wrong password from a closed registration or a bad address;
//! - passwords are never logged or stored; only PHC strings are stored and
//!   only keyed digests are cached (module `cache`);
//! - only the day of the last login is kept (privacy);
//! - at most a fixed number of Argon2 runs exist at once in the process
//!   (module `password`); a login that cannot get one in time fails with
//!   [`LoginError::Busy`] rather than queue without bound;
//! - an address with repeated failures has its refusals delayed (module
//!   `penalty`), without slowing down anyone else;
//! - a client address (IPv4, or IPv6 /64) with too many recent failures is
//!   refused at once with [`LoginError::Throttled`], before any lookup or
//!   Argon2 run (module `throttle`); other client addresses are unaffected;
//! - every login outcome is counted in `chatmail_metrics` (no labels that
//!   name a user or an address);
//! - while the machine is short of load, memory or disk ([`pressure`]), a
//!   first login that would create an account fails with
//!   [`LoginError::Busy`]; existing accounts and the CLI's [`Accounts::add`]
//!   are not affected;
//! - one client address (IPv4, or IPv6 /64) creates at most
//!   `limits.new_accounts_per_minute` accounts by first login (after a
//!   burst of `limits.new_accounts_burst`); beyond that a first login
//!   fails with [`LoginError::Busy`] before any password is hashed. The
//!   rate is charged before the hash and refunded when no account is made,
//!   so concurrent first logins cannot all pass one check.
//!   `POST /new` has a budget of the same size of its own
//!   ([`Accounts::allow_new_request`]);
//! - a blocked address (banned, or deleted by the operator) never logs in
//!   and is never re-created; a ban or delete also cuts the address's live
//!   sessions ([`sessions`]). The blocklist is mirrored in memory, so a
//!   login costs no extra query;
//! - while registration is closed (the file's `registration.open`, or the
//!   operator's switch, which overrides it), a first login creates an
//!   account only for an address `/new?token=` reserved with a usable
//!   invite token, and that login counts one use of the token.

mod cache;
mod live;
mod password;
mod penalty;
pub mod pressure;
mod rules;
pub mod sessions;
mod throttle;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chatmail_config::Settings;
use chatmail_limits::{ClientKey, Gcra};
use chatmail_metrics::Login;
use chatmail_store::{Account, Created, Store, StoreError};
use rand::Rng;

/// Longest password looked at; longer ones are refused before hashing so a
/// client cannot make the KDF chew megabytes.
const MAX_PASSWORD_LEN: usize = 1024;
/// Length of generated local parts (Delta Chat's own choice, docs/specifications.md §1).
const GENERATED_LOCAL_LEN: usize = 9;
/// Length of generated passwords (36^16 ≈ 2^82).
const GENERATED_PASSWORD_LEN: usize = 16;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Client addresses the account-creation rates track at once.
const CREATION_CLIENTS: usize = 65_536;
/// How long an address handed out by `/new?token=` waits for its first
/// login (it holds one use of the token meanwhile).
pub const RESERVATION_SECS: i64 = 3_600;
/// The `admin_settings` key of the operator's registration switch.
const REGISTRATION_KEY: &str = "registration";
/// The `admin_settings` key of the operator's default quota (bytes).
const QUOTA_KEY: &str = "default_quota";

pub use live::LimitError;
pub use sessions::{SessionGuard, Sessions};

/// Why a login failed. Protocol code maps these to its own replies.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Wrong password, unknown address with registration closed, foreign
    /// domain or an address that breaks the rules: all look alike to the
    /// client.
    #[error("invalid credentials")]
    Invalid,
    /// The store failed; try again later.
    #[error("temporary failure: {0}")]
    Temporary(#[from] chatmail_store::StoreError),
    /// Too many password checks are running; try again later (a temporary
    /// reply, like [`LoginError::Temporary`]).
    #[error("too many password checks in progress")]
    Busy,
    /// Too many recent failures from the client's address: refused without
    /// checking the password; try again later (a temporary reply).
    #[error("too many failed logins from this client address")]
    Throttled,
}

impl From<password::HashError> for LoginError {
    fn from(e: password::HashError) -> Self {
        match e {
            password::HashError::Busy => LoginError::Busy,
            other => LoginError::Temporary(StoreError::internal(other)),
        }
    }
}

/// Account service shared by SMTP, IMAP, HTTP and the CLI.
#[derive(Clone)]
pub struct Accounts {
    store: Store,
    settings: Arc<Settings>,
    /// Recent successful password checks (skips the KDF on repeat logins).
    cache: Arc<cache::LoginCache>,
    /// Bound on concurrent Argon2 runs, one per `Accounts` and its clones.
    kdf: Arc<password::KdfLimit>,
    /// Consecutive failures per address, for the refusal delay.
    failures: Arc<penalty::Failures>,
    /// Resource readings that close registration while short.
    pressure: Arc<pressure::Pressure>,
    /// Recent failures per client address, for the refusal at once.
    throttle: Arc<throttle::Throttle>,
    /// Accounts created by first login per client address.
    creations: Arc<Gcra<ClientKey>>,
    /// `POST /new` requests per client address.
    new_requests: Arc<Gcra<ClientKey>>,
    /// What the operator changed: registration switch, blocklist, and the
    /// live sessions a ban cuts.
    operator: Arc<Operator>,
}

/// State the admin surfaces change at run time.
struct Operator {
    registration_open: AtomicBool,
    blocked: RwLock<HashSet<String>>,
    sessions: Arc<Sessions>,
}

/// A verified login: an existing account, or one created just now.
enum Verified {
    Existing(Account),
    Created(Account),
}

fn today() -> i64 {
    unix_now() / 86_400
}

fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(secs).unwrap_or(i64::MAX)
}

fn random_string(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

impl Accounts {
    pub fn new(store: Store, settings: Arc<Settings>) -> Self {
        Self::with_kdf_limit(store, settings, password::KdfLimit::for_this_machine())
    }

    /// Like [`Accounts::new`] but with its own bound on password checks:
    /// at most `permits` at once, each login waiting at most `wait` for one
    /// (then [`LoginError::Busy`]). For tests and embedders; servers use the
    /// bound [`Accounts::new`] sizes for the machine.
    pub fn with_kdf_bound(
        store: Store,
        settings: Arc<Settings>,
        permits: usize,
        wait: std::time::Duration,
    ) -> Self {
        let kdf = Arc::new(password::KdfLimit::new(permits, wait));
        Self::with_kdf_limit(store, settings, kdf)
    }

    fn with_kdf_limit(store: Store, settings: Arc<Settings>, kdf: Arc<password::KdfLimit>) -> Self {
        let probe = Arc::new(pressure::SystemProbe::new(&settings.config.state_dir));
        let max_load = settings.registration().pause_above_load;
        let limits = settings.limits();
        let window = Duration::from_secs(limits.login_failure_window);
        let throttle = throttle::Throttle::new(limits.max_login_failures_per_ip, window);
        let rate = || {
            let (per_minute, burst) = (limits.new_accounts_per_minute, limits.new_accounts_burst);
            Arc::new(Gcra::new(per_minute, burst, CREATION_CLIENTS))
        };
        let (creations, new_requests) = (rate(), rate());
        let settings_open = settings.registration().open;
        Self {
            store,
            settings,
            cache: Arc::new(cache::LoginCache::new()),
            kdf,
            failures: Arc::new(penalty::Failures::new()),
            pressure: Arc::new(pressure::Pressure::new(probe, max_load)),
            throttle: Arc::new(throttle),
            creations,
            new_requests,
            operator: Arc::new(Operator {
                registration_open: AtomicBool::new(settings_open),
                blocked: RwLock::default(),
                sessions: Arc::default(),
            }),
        }
    }

    /// Loads what the operator changed at run time (registration switch,
    /// limits, services, blocklist) from the store; servers call it once at start.
    pub async fn load_operator_state(&self) -> Result<(), StoreError> {
        if let Some(value) = self.store.admin_setting(REGISTRATION_KEY).await? {
            let open = value == "open";
            self.operator
                .registration_open
                .store(open, Ordering::Relaxed);
        }
        self.load_live_state().await?;
        let blocked = self.store.blocklist().await?;
        *self.blocked_write() = blocked.into_iter().map(|b| b.address).collect();
        Ok(())
    }

    /// Whether a first login without an invite creates the account.
    pub fn registration_open(&self) -> bool {
        self.operator.registration_open.load(Ordering::Relaxed)
    }

    /// Opens or closes registration, durably (it overrides the file).
    pub async fn set_registration_open(&self, open: bool) -> Result<(), StoreError> {
        let value = if open { "open" } else { "closed" };
        self.store
            .set_admin_setting(REGISTRATION_KEY, Some(value))
            .await?;
        self.operator
            .registration_open
            .store(open, Ordering::Relaxed);
        Ok(())
    }

    /// Sets the default per-account quota, durably (it overrides the
    /// file's `limits.max_mailbox_size`); `None` forgets the override.
    pub async fn set_default_quota(&self, bytes: Option<u64>) -> Result<(), LimitError> {
        self.set_limit("max_mailbox_size", bytes).await
    }

    /// The live sessions per account.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.operator.sessions
    }

    /// Whether `address` (normalised) is on the blocklist.
    pub fn is_blocked(&self, address: &str) -> bool {
        self.operator
            .blocked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(address)
    }

    fn blocked_write(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<String>> {
        self.operator
            .blocked
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Blocks `address` with `reason` (its account and mail, if any, stay)
    /// and cuts its live sessions. Returns whether it was not blocked yet.
    pub async fn ban(&self, address: &str, reason: &str) -> Result<bool, StoreError> {
        let address = address.to_ascii_lowercase();
        let now = unix_now();
        let new = self.store.block(&address, reason, now).await?;
        self.blocked_write().insert(address.clone());
        self.operator.sessions.disconnect(&address);
        Ok(new)
    }

    /// Takes `address` off the blocklist; returns whether it was on it.
    pub async fn unban(&self, address: &str) -> Result<bool, StoreError> {
        let address = address.to_ascii_lowercase();
        let removed = self.store.unblock(&address).await?;
        self.blocked_write().remove(&address);
        Ok(removed)
    }

    /// Hands out fresh credentials tied to invite `token` for
    /// [`RESERVATION_SECS`]; `None` if the token cannot admit anyone more.
    pub async fn reserve_invite(
        &self,
        token: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let (address, password) = self.generate();
        let now = unix_now();
        let reserved = self
            .store
            .reserve_invite(&address, token, now, now + RESERVATION_SECS)
            .await?;
        Ok(reserved.then_some((address, password)))
    }

    /// Counts a `POST /new` from `client` (`None`: unknown, one shared
    /// budget); `false` when that client is over
    /// `limits.new_accounts_per_minute`.
    pub fn allow_new_request(&self, client: Option<IpAddr>) -> bool {
        self.new_requests
            .allow(ClientKey::of_opt(client), Instant::now())
    }

    /// Replaces where resource readings come from (by default the machine
    /// and the state directory); for tests that simulate a shortage.
    pub fn with_probe(mut self, probe: Arc<dyn pressure::Probe>) -> Self {
        let max_load = self.settings.registration().pause_above_load;
        self.pressure = Arc::new(pressure::Pressure::new(probe, max_load));
        self
    }

    /// Why new accounts are refused right now, if they are (readings are
    /// cached for [`pressure::SAMPLE_EVERY`]).
    pub fn shortage(&self) -> Option<pressure::Shortage> {
        self.pressure.check()
    }
    /// The store behind this service.
    pub fn store(&self) -> &Store {
        &self.store
    }
    /// Verifies a login, creating the account on first login when the rules
    /// allow (registration open, our domain, local part rules, password
    /// length). Ten concurrent first logins of one address all succeed.
    ///
    /// A refusal of an address that failed repeatedly comes late (module
    /// `penalty`); [`LoginError::Busy`] when the password checks are
    /// saturated.
    ///
    /// This is a login without a client address (CLI, tests): the per-IP
    /// throttle does not apply. Network servers use [`Accounts::login_from`].
    pub async fn login(&self, address: &str, password: &str) -> Result<Account, LoginError> {
        self.login_from(address, password, None).await
    }

    /// [`Accounts::login`] for a client at `peer`: refused at once with
    /// [`LoginError::Throttled`] while that address (IPv6: its /64) has had
    /// too many recent failures (`limits.max_login_failures_per_ip`), and
    /// a refusal counts against it.
    pub async fn login_from(
        &self,
        address: &str,
        password: &str,
        peer: Option<IpAddr>,
    ) -> Result<Account, LoginError> {
        if let Some(ip) = peer
            && !self.throttle.charge(ip, Instant::now())
        {
            chatmail_metrics::login(Login::Throttled);
            return Err(LoginError::Throttled);
        }
        let result = self.verify(address, password, peer).await;
        if let Some(ip) = peer
            && !matches!(result, Err(LoginError::Invalid))
        {
            self.throttle.refund(ip);
        }
        let outcome = match &result {
            Ok(Verified::Existing(_)) => Login::Ok,
            Ok(Verified::Created(_)) => Login::Created,
            Err(LoginError::Invalid) => Login::Failed,
            Err(_) => Login::Unavailable,
        };
        chatmail_metrics::login(outcome);
        match result {
            Ok(Verified::Existing(account) | Verified::Created(account)) => {
                self.record_day(account).await
            }
            Err(error) => Err(error),
        }
    }

    /// Parses the address and checks the password (or registers), with the
    /// per-address failure delay.
    async fn verify(
        &self,
        address: &str,
        password: &str,
        peer: Option<IpAddr>,
    ) -> Result<Verified, LoginError> {
        let address =
            rules::parse_local(&self.settings.domain, address).ok_or(LoginError::Invalid)?;
        match self.login_local(&address, password, peer).await {
            Ok(verified) => {
                self.failures.succeeded(&address.full);
                Ok(verified)
            }
            Err(LoginError::Invalid) => {
                let delay = self.failures.failed(&address.full);
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Err(LoginError::Invalid)
            }
            Err(other) => Err(other),
        }
    }

    /// Checks or registers a parsed address.
    async fn login_local(
        &self,
        address: &rules::LocalAddress,
        password: &str,
        peer: Option<IpAddr>,
    ) -> Result<Verified, LoginError> {
        if password.is_empty()
            || password.len() > MAX_PASSWORD_LEN
            || self.is_blocked(&address.full)
        {
            return Err(LoginError::Invalid);
        }
        match self.store.account(&address.full).await? {
            Some(account) => self.check(account, password).await.map(Verified::Existing),
            None => self.register(address, password, peer).await,
        }
    }

    /// Checks `password` against an existing account.
    async fn check(&self, account: Account, password: &str) -> Result<Account, LoginError> {
        if self
            .cache
            .hit(&account.address, password, &account.password_hash)
        {
            return Ok(account);
        }
        let phc = account.password_hash.clone();
        if !password::verify(&self.kdf, password.to_owned(), phc).await? {
            return Err(LoginError::Invalid);
        }
        self.cache
            .insert(&account.address, password, &account.password_hash);
        Ok(account)
    }

    /// Creates the account of a first login, if the rules allow it.
    async fn register(
        &self,
        address: &rules::LocalAddress,
        password: &str,
        peer: Option<IpAddr>,
    ) -> Result<Verified, LoginError> {
        let rules = self.settings.registration();
        if !rules::may_register(&address.local, rules) || !rules::password_ok(password, rules) {
            return Err(LoginError::Invalid);
        }
        if let Some(shortage) = self.shortage() {
            tracing::debug!("new account refused: {shortage}");
            return Err(LoginError::Busy);
        }
        // Charged before the hash (concurrent first logins must not all
        // pass one check), refunded unless an account was really made (ten
        // first logins of one address make one account).
        let client = peer.map(ClientKey::of);
        if let Some(client) = client
            && !self.creations.allow(client, Instant::now())
        {
            tracing::debug!("new account refused: too many from this client");
            return Err(LoginError::Busy);
        }
        let created = self.create(address, password).await;
        if let Some(client) = &client
            && !matches!(created, Ok(Verified::Created(_)))
        {
            self.creations.refund(client);
        }
        created
    }

    /// Hashes the password and creates the account.
    async fn create(
        &self,
        address: &rules::LocalAddress,
        password: &str,
    ) -> Result<Verified, LoginError> {
        let phc = password::hash(&self.kdf, password.to_owned()).await?;
        let open = self.registration_open();
        let created = self
            .store
            .create_first_login(&address.full, &phc, unix_now(), open)
            .await?;
        match created.ok_or(LoginError::Invalid)? {
            Created::New(account) => {
                tracing::debug!("account created on first login");
                chatmail_metrics::account_created();
                self.cache
                    .insert(&account.address, password, &account.password_hash);
                Ok(Verified::Created(account))
            }
            // A concurrent first login won: its password must match ours.
            Created::Existing(account) => {
                self.check(account, password).await.map(Verified::Existing)
            }
        }
    }

    /// Stores the login day, only when it changed (one write a day at most).
    async fn record_day(&self, mut account: Account) -> Result<Account, LoginError> {
        let day = today();
        if account.last_login_day != Some(day) {
            self.store.record_login(account.id, day).await?;
            account.last_login_day = Some(day);
        }
        Ok(account)
    }

    /// Normalises an address and returns it if its domain is ours
    /// (`None` for foreign or malformed addresses).
    pub fn local_address(&self, address: &str) -> Option<String> {
        rules::parse_local(&self.settings.domain, address).map(|a| a.full)
    }

    /// Fresh random credentials for `/new` (9-character local part of
    /// `[a-z0-9]`, 16-character password). Nothing is stored.
    ///
    /// The lengths are raised (or the local part shortened) if the
    /// registration rules demand it, so the result can always register.
    pub fn generate(&self) -> (String, String) {
        let rules = self.settings.registration();
        let local_len =
            GENERATED_LOCAL_LEN.clamp(rules.username_min_length, rules.username_max_length.max(1));
        let password_len = GENERATED_PASSWORD_LEN.max(rules.password_min_length);
        let address = format!(
            "{}@{}",
            random_string(local_len),
            self.settings.domain.address_part()
        );
        (address, random_string(password_len))
    }

    /// Creates an account with a given password (CLI); errors if it breaks
    /// the address rules. Returns false if it existed already.
    ///
    /// The rules are those of registration except that registration need
    /// not be open.
    pub async fn add(&self, address: &str, password: &str) -> Result<bool, LoginError> {
        let address =
            rules::parse_local(&self.settings.domain, address).ok_or(LoginError::Invalid)?;
        let rules = self.settings.registration();
        let password_ok = rules::password_ok(password, rules) && password.len() <= MAX_PASSWORD_LEN;
        if !rules::may_register(&address.local, rules)
            || !password_ok
            || self.is_blocked(&address.full)
        {
            return Err(LoginError::Invalid);
        }
        let phc = password::hash(&self.kdf, password.to_owned()).await?;
        let created = self.store.create_account(&address.full, &phc).await?;
        let new = matches!(created, Created::New(_));
        if new {
            chatmail_metrics::account_created();
        }
        Ok(new)
    }

    /// Deletes an account with all its mail, forgets its cached logins,
    /// cuts its live sessions and blocks the name, so nobody re-creates
    /// the address by a first login. Returns whether it existed.
    pub async fn delete(&self, address: &str) -> Result<bool, LoginError> {
        let Some(address) = rules::parse_local(&self.settings.domain, address) else {
            return Ok(false);
        };
        let Some(account) = self.store.account(&address.full).await? else {
            return Ok(false);
        };
        self.cache.forget(&account.password_hash);
        self.ban(&address.full, "deleted").await?;
        Ok(self.store.delete_account(&address.full).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatmail_store::StoreOptions;
    use std::time::{Duration, Instant};
    use tempfile::TempDir;

    const CONFIG: &str = "mail_domain = \"example.org\"\n[tls]\nmode = \"self-signed\"\n";

    async fn service(dir: &TempDir, extra: &str) -> Accounts {
        let settings = chatmail_config::parse(&format!("{CONFIG}{extra}")).unwrap();
        let path = dir.path().join("db.sqlite");
        let store = Store::open(StoreOptions {
            path,
            max_batch: 64,
        })
        .await
        .unwrap();
        Accounts::new(store, Arc::new(settings))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_wrong_passwords_never_exceed_the_kdf_limit() {
        let dir = TempDir::new().unwrap();
        let plain = service(&dir, "").await;
        let limit = Arc::new(password::KdfLimit::new(2, Duration::from_secs(120)));
        let accounts =
            Accounts::with_kdf_limit(plain.store.clone(), plain.settings.clone(), limit.clone());
        accounts
            .login("victim001@example.org", "the-password")
            .await
            .unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..48 {
            let accounts = accounts.clone();
            tasks.spawn(async move {
                let password = format!("wrong-{i}");
                accounts.login("victim001@example.org", &password).await
            });
        }
        while let Some(result) = tasks.join_next().await {
            assert!(matches!(result.unwrap(), Err(LoginError::Invalid)));
        }
        assert_eq!(limit.peak(), 2);
    }

    #[tokio::test]
    async fn a_ban_refuses_logins_and_cuts_sessions_and_a_delete_keeps_the_name() {
        let dir = TempDir::new().unwrap();
        let accounts = service(&dir, "").await;
        let address = "banneduse@example.org";
        accounts.login(address, "the-password").await.unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let session = accounts.sessions().register(address, &shutdown);
        assert!(accounts.ban(address, "spam").await.unwrap());
        assert!(session.disconnected());
        let refused = accounts.login(address, "the-password").await;
        assert!(matches!(refused, Err(LoginError::Invalid)), "{refused:?}");
        assert!(accounts.unban(address).await.unwrap());
        accounts.login(address, "the-password").await.unwrap();
        assert!(accounts.delete(address).await.unwrap());
        let again = accounts.login(address, "the-password").await;
        assert!(matches!(again, Err(LoginError::Invalid)), "{again:?}");
        // The blocklist survives a restart.
        let reopened = Accounts::new(accounts.store.clone(), accounts.settings.clone());
        reopened.load_operator_state().await.unwrap();
        assert!(reopened.is_blocked(address));
    }

    #[tokio::test]
    async fn a_closed_relay_admits_only_addresses_reserved_with_a_usable_invite() {
        let dir = TempDir::new().unwrap();
        let accounts = service(&dir, "").await;
        accounts.set_registration_open(false).await.unwrap();
        let refused = accounts
            .login("uninvite1@example.org", "the-password")
            .await;
        assert!(matches!(refused, Err(LoginError::Invalid)), "{refused:?}");
        let invite = chatmail_store::NewInvite {
            token: "welcome".into(),
            max_uses: 1,
            expires: None,
            comment: String::new(),
        };
        accounts
            .store
            .create_invite(invite, unix_now())
            .await
            .unwrap();
        assert!(accounts.reserve_invite("wrong").await.unwrap().is_none());
        let (address, password) = accounts.reserve_invite("welcome").await.unwrap().unwrap();
        // The only use is held by that reservation.
        assert!(accounts.reserve_invite("welcome").await.unwrap().is_none());
        accounts.login(&address, &password).await.unwrap();
        accounts.login(&address, &password).await.unwrap();
        let invite = accounts.store.invite("welcome").await.unwrap().unwrap();
        assert_eq!((invite.uses, invite.pending), (1, 0));
        // The switch survives a restart.
        let reopened = Accounts::new(accounts.store.clone(), accounts.settings.clone());
        reopened.load_operator_state().await.unwrap();
        assert!(!reopened.registration_open());
    }

    #[tokio::test]
    async fn a_saturated_kdf_answers_busy() {
        let dir = TempDir::new().unwrap();
        let plain = service(&dir, "").await;
        plain
            .login("busyuser1@example.org", "the-password")
            .await
            .unwrap();
        let limit = Arc::new(password::KdfLimit::new(0, Duration::from_millis(50)));
        let accounts = Accounts::with_kdf_limit(plain.store.clone(), plain.settings.clone(), limit);
        let result = accounts.login("busyuser1@example.org", "wrong-pass").await;
        assert!(matches!(result, Err(LoginError::Busy)), "{result:?}");
        let result = accounts.login("newcomer2@example.org", "password123").await;
        assert!(matches!(result, Err(LoginError::Busy)), "{result:?}");
    }

    #[tokio::test]
    async fn repeated_failures_delay_only_that_address() {
        let dir = TempDir::new().unwrap();
        let accounts = service(&dir, "").await;
        accounts
            .login("slowuser1@example.org", "the-password")
            .await
            .unwrap();
        accounts
            .login("fastuser1@example.org", "the-password")
            .await
            .unwrap();
        for _ in 0..penalty::THRESHOLD {
            let started = Instant::now();
            let _ = accounts.login("slowuser1@example.org", "wrong-pass").await;
            assert!(started.elapsed() < penalty::STEP);
        }
        let slow = tokio::spawn({
            let accounts = accounts.clone();
            async move {
                let started = Instant::now();
                let result = accounts.login("slowuser1@example.org", "wrong-pass").await;
                (result, started.elapsed())
            }
        });
        // Meanwhile another address logs in and fails without delay.
        let started = Instant::now();
        assert!(
            accounts
                .login("fastuser1@example.org", "the-password")
                .await
                .is_ok()
        );
        let _ = accounts.login("fastuser1@example.org", "wrong-pass").await;
        assert!(started.elapsed() < penalty::STEP);
        let (result, took) = slow.await.unwrap();
        assert!(matches!(result, Err(LoginError::Invalid)));
        assert!(took >= penalty::STEP, "{took:?}");
        // Success clears the count.
        assert!(
            accounts
                .login("slowuser1@example.org", "the-password")
                .await
                .is_ok()
        );
        let started = Instant::now();
        let _ = accounts.login("slowuser1@example.org", "wrong-pass").await;
        assert!(started.elapsed() < penalty::STEP);
    }

    /// The value of one series in the metrics exposition.
    fn metric(series: &str) -> f64 {
        chatmail_metrics::render()
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} missing"))
    }

    #[tokio::test]
    async fn a_throttled_client_address_is_refused_before_any_password_check() {
        let dir = TempDir::new().unwrap();
        let accounts = service(&dir, "[limits]\nmax_login_failures_per_ip = 3\n").await;
        let victim = "victim001@example.org";
        accounts.login(victim, "the-password").await.unwrap();
        let attacker: IpAddr = "192.0.2.66".parse().unwrap();
        let neighbour: IpAddr = "192.0.2.67".parse().unwrap();
        let throttled = "madmail_logins_total{outcome=\"throttled\"}";
        let before = metric(throttled);
        for i in 0..3 {
            let password = format!("wrong-{i}");
            let result = accounts.login_from(victim, &password, Some(attacker)).await;
            assert!(matches!(result, Err(LoginError::Invalid)), "{result:?}");
        }
        // No KDF can run any more: a refusal that reached the password
        // check would answer Busy instead.
        let starved = Accounts {
            kdf: Arc::new(password::KdfLimit::new(0, Duration::from_millis(50))),
            ..accounts.clone()
        };
        for password in ["the-password", "wrong-again"] {
            let result = starved.login_from(victim, password, Some(attacker)).await;
            assert!(matches!(result, Err(LoginError::Throttled)), "{result:?}");
        }
        assert_eq!(metric(throttled), before + 2.0);
        // Another address logs in (from the cache), and its failures still
        // reach the password check.
        assert!(
            starved
                .login_from(victim, "the-password", Some(neighbour))
                .await
                .is_ok()
        );
        let result = starved.login_from(victim, "wrong-4", Some(neighbour)).await;
        assert!(matches!(result, Err(LoginError::Busy)), "{result:?}");
        // Without a client address (CLI) there is no throttle.
        assert!(starved.login(victim, "the-password").await.is_ok());
    }

    #[tokio::test]
    async fn first_login_creates_and_later_logins_check_the_password() {
        let dir = TempDir::new().unwrap();
        let accounts = service(&dir, "").await;
        let created = accounts
            .login("NewUser01@Example.org", "password123")
            .await
            .unwrap();
        assert_eq!(created.address, "newuser01@example.org");
        assert_eq!(created.last_login_day, Some(today()));
        let again = accounts
            .login("newuser01@example.org", "password123")
            .await
            .unwrap();
        assert_eq!(again.id, created.id);
        assert!(matches!(
            accounts.login("newuser01@example.org", "password124").await,
            Err(LoginError::Invalid)
        ));
        let stored = accounts
            .store()
            .account("newuser01@example.org")
            .await
            .unwrap()
            .unwrap();
        assert!(stored.password_hash.starts_with("$argon2id$"));
        assert_eq!(stored.last_login_day, Some(today()));
        assert_eq!(
            accounts.store().mailboxes(stored.id).await.unwrap().len(),
            1
        );
    }

    #[tokio::test]
    async fn ten_parallel_first_logins_all_succeed_and_create_once() {
        let dir = TempDir::new().unwrap();
        let accounts = service(&dir, "").await;
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let accounts = accounts.clone();
            tasks.push(tokio::spawn(async move {
                accounts.login("parallel1@example.org", "same-secret").await
            }));
        }
        let mut ids = Vec::new();
        for task in tasks {
            ids.push(task.await.unwrap().unwrap().id);
        }
        ids.dedup();
        assert_eq!(ids.len(), 1);
        assert_eq!(accounts.store().accounts().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn first_logins_create_a_limited_number_of_accounts_per_client() {
        // Regression: first logins created 579 accounts a minute from one
        // address while `/new` was limited.
        let dir = TempDir::new().unwrap();
        let limit = "[limits]\nnew_accounts_per_minute = 6\nnew_accounts_burst = 3\n";
        let accounts = service(&dir, limit).await;
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same: IpAddr = "2001:db8:1:2::99".parse().unwrap();
        for i in 0..3 {
            let address = format!("burstusr{i}@example.org");
            let peer = Some(if i % 2 == 0 { one } else { same });
            accounts
                .login_from(&address, "pass-word", peer)
                .await
                .unwrap();
            // Logging in again creates nothing and costs nothing.
            accounts
                .login_from(&address, "pass-word", peer)
                .await
                .unwrap();
        }
        let refused = accounts
            .login_from("burstusr3@example.org", "pass-word", Some(same))
            .await;
        assert!(matches!(refused, Err(LoginError::Busy)), "{refused:?}");
        assert_eq!(accounts.store().accounts().await.unwrap().len(), 3);
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let elsewhere = accounts
            .login_from("burstusr3@example.org", "pass-word", Some(other))
            .await;
        assert!(elsewhere.is_ok(), "another /64 has its own budget");
        assert!(
            accounts
                .login("cliuser01@example.org", "pass-word")
                .await
                .is_ok(),
            "without a client address (CLI) there is no limit"
        );
        for _ in 0..3 {
            assert!(accounts.allow_new_request(Some(one)));
        }
        assert!(!accounts.allow_new_request(Some(same)), "/new counts apart");
    }

    #[tokio::test]
    async fn a_lost_creation_race_still_checks_the_password() {
        let dir = TempDir::new().unwrap();
        let accounts = service(&dir, "").await;
        let a = tokio::spawn({
            let accounts = accounts.clone();
            async move {
                accounts
                    .login("racer0001@example.org", "first-password")
                    .await
            }
        });
        let b = tokio::spawn({
            let accounts = accounts.clone();
            async move {
                accounts
                    .login("racer0001@example.org", "other-password")
                    .await
            }
        });
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        // Exactly one of the two passwords owns the account.
        assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");
    }

    #[tokio::test]
    async fn two_users_may_share_a_password() {
        let dir = TempDir::new().unwrap();
        let accounts = service(&dir, "").await;
        let a = accounts
            .login("aaaaaaaaa@example.org", "shared-pass")
            .await
            .unwrap();
        let b = accounts
            .login("bbbbbbbbb@example.org", "shared-pass")
            .await
            .unwrap();
        assert_ne!(a.id, b.id);
        assert!(
            accounts
                .login("aaaaaaaaa@example.org", "shared-pass")
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn rule_breaking_first_logins_are_refused_and_create_nothing() {
        let dir = TempDir::new().unwrap();
        let accounts = service(&dir, "").await;
        for (address, password) in [
            ("shortname@example.com", "password123"), // foreign domain
            ("short@example.org", "password123"),     // local part too short
            ("toolongname@example.org", "password123"),
            ("bad+chars@example.org", "password123"),
            ("two@at@example.org", "password123"),
            ("goodname1@example.org", "short"), // password too short
            ("goodname1@example.org", ""),
        ] {
            let result = accounts.login(address, password).await;
            assert!(matches!(result, Err(LoginError::Invalid)), "{address}");
        }
        assert!(accounts.store().accounts().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn closed_registration_refuses_new_but_keeps_existing_accounts() {
        let dir = TempDir::new().unwrap();
        let open = service(&dir, "").await;
        open.login("existing1@example.org", "password123")
            .await
            .unwrap();
        open.store().close().await;
        let closed = service(&dir, "[registration]\nopen = false\n").await;
        assert!(
            closed
                .login("existing1@example.org", "password123")
                .await
                .is_ok()
        );
        assert!(matches!(
            closed.login("newcomer1@example.org", "password123").await,
            Err(LoginError::Invalid)
        ));
    }

    #[tokio::test]
    async fn a_deleted_account_no_longer_accepts_its_cached_password() {
        let dir = TempDir::new().unwrap();
        let accounts = service(&dir, "[registration]\nopen = false\n").await;
        assert!(
            accounts
                .add("deleteme1@example.org", "password123")
                .await
                .unwrap()
        );
        accounts
            .login("deleteme1@example.org", "password123")
            .await
            .unwrap();
        // Deleted behind the service's back: the cache must not vouch for it.
        assert!(
            accounts
                .store()
                .delete_account("deleteme1@example.org")
                .await
                .unwrap()
        );
        assert!(matches!(
            accounts.login("deleteme1@example.org", "password123").await,
            Err(LoginError::Invalid)
        ));
        // Re-created with another password: the old one is refused.
        assert!(
            accounts
                .add("deleteme1@example.org", "new-password")
                .await
                .unwrap()
        );
        assert!(matches!(
            accounts.login("deleteme1@example.org", "password123").await,
            Err(LoginError::Invalid)
        ));
        assert!(
            accounts
                .login("deleteme1@example.org", "new-password")
                .await
                .is_ok()
        );
        assert!(accounts.delete("deleteme1@example.org").await.unwrap());
        assert!(!accounts.delete("deleteme1@example.org").await.unwrap());
    }

    /// Readings a test sets at will.
    struct Scripted(std::sync::Mutex<pressure::Readings>);

    impl pressure::Probe for Scripted {
        fn read(&self) -> pressure::Readings {
            *self.0.lock().unwrap()
        }
    }

    #[tokio::test]
    async fn resource_shortage_refuses_only_new_accounts() {
        let dir = TempDir::new().unwrap();
        let probe = Arc::new(Scripted(Default::default()));
        let accounts = service(&dir, "").await.with_probe(probe.clone());
        accounts
            .login("existing1@example.org", "password123")
            .await
            .unwrap();
        *probe.0.lock().unwrap() = pressure::Readings {
            memory: Some(pressure::MIN_MEMORY / 2),
            ..Default::default()
        };
        // A fresh service: the calm verdict above is still cached in the old one.
        let accounts = accounts.with_probe(probe.clone());
        assert_eq!(accounts.shortage(), Some(pressure::Shortage::Memory));
        let result = accounts.login("newcomer1@example.org", "password123").await;
        assert!(matches!(result, Err(LoginError::Busy)), "{result:?}");
        assert!(
            accounts
                .store()
                .account("newcomer1@example.org")
                .await
                .unwrap()
                .is_none()
        );
        // Bad addresses and passwords still look like any refusal.
        assert!(matches!(
            accounts.login("x@example.org", "password123").await,
            Err(LoginError::Invalid)
        ));
        // Existing users keep working; the operator can still add accounts.
        assert!(
            accounts
                .login("existing1@example.org", "password123")
                .await
                .is_ok()
        );
        assert!(matches!(
            accounts.login("existing1@example.org", "wrong-pass").await,
            Err(LoginError::Invalid)
        ));
        assert!(
            accounts
                .add("operator1@example.org", "password123")
                .await
                .unwrap()
        );
        // Pressure gone: registration works again.
        *probe.0.lock().unwrap() = pressure::Readings::default();
        let accounts = accounts.with_probe(probe);
        assert!(
            accounts
                .login("newcomer1@example.org", "password123")
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn add_reports_existing_accounts_and_rule_breaks() {
        let dir = TempDir::new().unwrap();
        let accounts = service(&dir, "").await;
        assert!(
            accounts
                .add("cliuser01@example.org", "password123")
                .await
                .unwrap()
        );
        assert!(
            !accounts
                .add("cliuser01@example.org", "password123")
                .await
                .unwrap()
        );
        assert!(matches!(
            accounts.add("x@example.org", "password123").await,
            Err(LoginError::Invalid)
        ));
        assert!(matches!(
            accounts.add("cliuser02@example.org", "short").await,
            Err(LoginError::Invalid)
        ));
    }

    #[tokio::test]
    async fn generated_credentials_can_log_in() {
        let dir = TempDir::new().unwrap();
        let accounts = service(&dir, "").await;
        let (address, password) = accounts.generate();
        let (local, domain) = address.split_once('@').unwrap();
        assert_eq!(domain, "example.org");
        assert_eq!(local.len(), 9);
        assert_eq!(password.len(), 16);
        assert!(
            local
                .bytes()
                .chain(password.bytes())
                .all(|b| ALPHABET.contains(&b))
        );
        assert_ne!(accounts.generate().0, address);
        assert_eq!(
            accounts.login(&address, &password).await.unwrap().address,
            address
        );
    }

    #[tokio::test]
    async fn local_address_normalises_ours_and_rejects_others() {
        let dir = TempDir::new().unwrap();
        let accounts = service(&dir, "").await;
        assert_eq!(
            accounts.local_address("Bob@EXAMPLE.org").as_deref(),
            Some("bob@example.org")
        );
        assert_eq!(accounts.local_address("bob@example.net"), None);
        assert_eq!(accounts.local_address("bob"), None);
        assert_eq!(accounts.local_address("a@b@example.org"), None);
    }
}
