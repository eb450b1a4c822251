//! The TOML schema of `chatmail.toml`.
//!
//! Every key carries a doc comment: `cargo xtask docs` renders these comments
//! and the defaults below into `docs/config.md`. Defaults live only here, in
//! the `Default` impls and the `default_*` functions; they are the chatmail
//! relay defaults (docs/specifications.md §5).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The mail domain users get addresses at: a DNS name (`chat.example.org`)
    /// or an IPv4 address (`203.0.113.7`), which gives `user@[203.0.113.7]`
    /// addresses and a self-signed certificate. A name starting with `_` also
    /// means a self-signed certificate.
    pub mail_domain: String,
    /// Directory for the database, generated keys and certificates.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Addresses the services listen on. An empty list turns that service off.
    #[serde(default)]
    pub listen: ListenConfig,
    /// TLS certificates.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Account creation on first login.
    #[serde(default)]
    pub registration: RegistrationConfig,
    /// Message and connection limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Message storage.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Delivery to and from other relays.
    #[serde(default)]
    pub federation: FederationConfig,
    /// DKIM signing of outgoing mail.
    #[serde(default)]
    pub dkim: DkimConfig,
    /// Server metadata that clients read with IMAP `GETMETADATA`.
    #[serde(default)]
    pub metadata: MetadataConfig,
    /// TURN credentials handed to clients (the `turn` metadata entry).
    #[serde(default)]
    pub turn: TurnConfig,
    /// The iroh relay for webxdc realtime apps (the `irohrelay` metadata
    /// entry).
    #[serde(default)]
    pub iroh: IrohConfig,
    /// The Shadowsocks proxy to the relay's own ports, for clients behind
    /// censoring networks.
    #[serde(default)]
    pub shadowsocks: ShadowsocksConfig,
    /// Automatic deletion of old mail and inactive accounts.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// The web pages.
    #[serde(default)]
    pub web: WebConfig,
    /// Push notifications to Delta Chat's notification server.
    #[serde(default)]
    pub push: PushConfig,
    /// The Prometheus metrics endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The admin API for remote tools and the admin web UI.
    #[serde(default)]
    pub admin: AdminConfig,
}

/// Logging settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// No-log mode: nothing is logged but startup, shutdown and errors that
    /// stop the server; addresses and IP addresses never appear.
    pub no_log: bool,
    /// Log filter in `tracing` syntax (`info`, `chatmail_smtp=debug`, ...),
    /// used when `no_log` is false. Passwords and message contents are never
    /// logged at any level.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            no_log: true,
            level: "info".into(),
        }
    }
}

/// Listening sockets.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// SMTP submission with implicit TLS (RFC 8314).
    pub submissions: Vec<SocketAddr>,
    /// SMTP submission with STARTTLS (RFC 6409); AUTH only after TLS.
    pub submission: Vec<SocketAddr>,
    /// IMAP with implicit TLS.
    pub imaps: Vec<SocketAddr>,
    /// IMAP with STARTTLS; LOGIN is disabled before TLS.
    pub imap: Vec<SocketAddr>,
    /// HTTPS: account creation (`/new`), inbound federation (`/mxdeliv`)
    /// and the web pages.
    pub https: Vec<SocketAddr>,
    /// SMTP MX for mail from other relays (STARTTLS required before MAIL).
    pub smtp: Vec<SocketAddr>,
    /// Plain HTTP: redirects to HTTPS and answers ACME HTTP-01 challenges.
    pub http: Vec<SocketAddr>,
}

impl Default for ListenConfig {
    fn default() -> Self {
        let any = |port| vec![SocketAddr::from(([0, 0, 0, 0], port))];
        Self {
            submissions: any(465),
            submission: any(587),
            imaps: any(993),
            imap: any(143),
            https: any(443),
            smtp: any(25),
            http: any(80),
        }
    }
}

/// Where the TLS certificate comes from.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// `self-signed`: an ECDSA P-256 certificate generated on first start and
    /// kept in the state directory; `files`: `cert_path` and `key_path`,
    /// re-read without a restart when they change (checked every 2 s; a pair
    /// that does not load keeps the current certificate and logs a warning);
    /// `acme`: certificates for `<domain>`, `mta-sts.<domain>` and
    /// `www.<domain>` from an ACME CA, renewed without a restart; `auto`:
    /// `self-signed` for IP-address and `_`-prefixed domains, else `files`.
    pub mode: TlsMode,
    /// ACME directory URL, for `acme`.
    pub acme_directory: String,
    /// Contact address given to the ACME CA, for `acme` (optional).
    pub acme_contact: Option<String>,
    /// PEM file with the root certificate of a private ACME CA (tests,
    /// internal CAs); unset: the CA's certificate must chain to the web PKI.
    pub acme_ca_root: Option<PathBuf>,
    /// PEM certificate chain, for `files`.
    pub cert_path: Option<PathBuf>,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1), for `files`.
    pub key_path: Option<PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            mode: TlsMode::Auto,
            acme_directory: "https://acme-v02.api.letsencrypt.org/directory".into(),
            acme_contact: None,
            acme_ca_root: None,
            cert_path: None,
            key_path: None,
        }
    }
}

/// See [`TlsConfig::mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Self-signed for IP-address and `_`-prefixed domains, files otherwise.
    Auto,
    /// Generated ECDSA P-256 certificate.
    SelfSigned,
    /// Certificate and key files.
    Files,
    /// Certificates from an ACME CA.
    Acme,
}

/// Just-in-time account creation on first login.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// Whether a first login with an unknown address creates the account.
    /// Existing accounts keep working when this is false.
    pub open: bool,
    /// Shortest accepted local part of a new address.
    pub username_min_length: usize,
    /// Longest accepted local part of a new address.
    pub username_max_length: usize,
    /// Shortest accepted password of a new account.
    pub password_min_length: usize,
    /// Pause registration while the 1-minute load average is above this
    /// (the chatmail relay uses 5). Unset: the load is not checked. New
    /// accounts are always refused while available memory is under 200 MB
    /// or the state directory has less than 1 GB free; existing accounts
    /// keep working.
    pub pause_above_load: Option<f64>,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            open: true,
            username_min_length: 9,
            username_max_length: 9,
            password_min_length: 9,
            pause_above_load: None,
        }
    }
}

/// Limits on messages and senders.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest accepted message in bytes, advertised with the SMTP `SIZE`
    /// keyword.
    pub max_message_size: u64,
    /// Most recipients of one message.
    pub max_recipients: usize,
    /// Messages one sender may submit per minute (GCRA rate).
    pub max_user_send_per_minute: u32,
    /// Messages one sender may submit at once before the rate applies.
    pub max_user_send_burst: u32,
    /// Most simultaneous IMAP connections (one fifth of it per IP address).
    pub max_imap_connections: usize,
    /// Most simultaneous SMTP connections (one fifth of it per IP address).
    pub max_smtp_connections: usize,
    /// Storage quota per account in bytes; at 75 % the oldest messages are
    /// trimmed down to 70 % (never those of the last 24 hours); a delivery
    /// that would exceed it is refused with `552 5.2.2 Quota exceeded`.
    pub max_mailbox_size: u64,
    /// Failed logins allowed from one client address (an IPv4 address or
    /// an IPv6 /64) within `login_failure_window`. Beyond it, every login
    /// from that address is refused with a temporary error (IMAP
    /// `NO [UNAVAILABLE]`, SMTP `454 4.7.0`) without checking the password,
    /// until older failures have expired: one more attempt is allowed per
    /// `login_failure_window / max_login_failures_per_ip`. Successful logins
    /// do not lower the count. Counts are kept in memory only, keyed by a
    /// keyed hash of the address. 0 turns the limit off.
    pub max_login_failures_per_ip: u32,
    /// Seconds over which `max_login_failures_per_ip` failures are allowed.
    pub login_failure_window: u64,
    /// Seconds a connection may take, from its start, to log in (IMAP and
    /// submission) or to finish STARTTLS (port 25); then it is closed,
    /// however it paces its bytes.
    pub login_deadline: u64,
    /// New accounts one client address (an IPv4 address or an IPv6 /64)
    /// may create per minute, counted separately for `POST /new` and for
    /// first logins; beyond it `/new` answers 429 and a first login gets a
    /// temporary refusal. 0 turns the limit off.
    pub new_accounts_per_minute: u32,
    /// New accounts one client address may create at once before
    /// `new_accounts_per_minute` applies.
    pub new_accounts_burst: u32,
    /// Unknown recipients one client address may try per minute on port 25
    /// and `/mxdeliv`; beyond it every recipient gets a temporary refusal
    /// (`450 4.7.1`, HTTP 503), so addresses cannot be enumerated quickly.
    /// 0 turns the limit off.
    pub unknown_recipients_per_minute: u32,
    /// Bytes of message bodies that may be in memory at once over all
    /// listeners while they are checked and stored (each counts twice its
    /// size; at least four of the largest message), plus a quarter of it
    /// for bodies still arriving. Beyond it a body waits a few seconds,
    /// then is refused with `451 4.3.2` (HTTP 503).
    pub max_body_memory: u64,
    /// Bytes of unfinished message bodies that may wait on disk (in
    /// `state_dir/spool`, unlinked files) once they no longer fit in
    /// memory; a quarter of it per client address. Beyond it a body is
    /// refused with `451 4.3.2` (HTTP 503).
    pub max_spool_size: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_size: 31_457_280,
            max_recipients: 1000,
            max_user_send_per_minute: 60,
            max_user_send_burst: 10,
            max_imap_connections: 10_000,
            max_smtp_connections: 1_000,
            max_mailbox_size: 500 * 1024 * 1024,
            max_login_failures_per_ip: 30,
            login_failure_window: 600,
            login_deadline: 60,
            new_accounts_per_minute: 30,
            new_accounts_burst: 10,
            unknown_recipients_per_minute: 60,
            max_body_memory: 128 * 1024 * 1024,
            max_spool_size: 1024 * 1024 * 1024,
        }
    }
}

/// Message storage.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// SQLite database file; relative paths are inside `state_dir`.
    pub sqlite_path: PathBuf,
    /// Most deliveries committed together in one transaction (group commit).
    pub max_commit_batch: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            sqlite_path: "madmail.db".into(),
            max_commit_batch: 256,
        }
    }
}

/// Delivery between relays.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// Which peer domains may exchange mail with this relay: `open` (all),
    /// `allow` (only `domains`) or `block` (all but `domains`).
    pub policy: FederationPolicy,
    /// The domains `policy` lists.
    pub domains: Vec<String>,
    /// Seconds a message keeps being retried before it bounces.
    pub queue_lifetime: u64,
    /// Deliveries in flight at once, over all destinations.
    pub max_parallel_deliveries: usize,
    /// Fixed routes that bypass DNS, for tests and NATed setups: the mail
    /// domain maps to a host and the ports of its `/mxdeliv` HTTPS and SMTP
    /// services. No MX lookup happens for a routed domain. Keys are written
    /// like `mail_domain`; an IPv4 key matches with or without brackets.
    pub static_routes: std::collections::BTreeMap<String, StaticRoute>,
    /// DNS servers (`ip:port`) for MX and DKIM lookups; empty: the system's
    /// resolver configuration (`/etc/resolv.conf`).
    pub dns_servers: Vec<SocketAddr>,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            policy: FederationPolicy::Open,
            domains: Vec::new(),
            queue_lifetime: 2 * 24 * 3600,
            max_parallel_deliveries: 64,
            static_routes: Default::default(),
            dns_servers: Vec::new(),
        }
    }
}

/// See [`FederationConfig::policy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FederationPolicy {
    /// Every domain.
    Open,
    /// Only the listed domains.
    Allow,
    /// Every domain but the listed ones.
    Block,
}

/// One entry of [`FederationConfig::static_routes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StaticRoute {
    /// Host name or IP address to connect to.
    pub host: String,
    /// Port of the peer's HTTPS (`/mxdeliv`); absent: SMTP only.
    #[serde(default)]
    pub https_port: Option<u16>,
    /// Port of the peer's SMTP MX.
    #[serde(default = "default_smtp_port")]
    pub smtp_port: u16,
}

fn default_smtp_port() -> u16 {
    25
}

/// DKIM signing (RFC 6376).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DkimConfig {
    /// Selector: the key is published at `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// Key type generated on first start: `rsa` (2048 bits) or `ed25519`.
    pub algorithm: DkimAlgorithm,
}

impl Default for DkimConfig {
    fn default() -> Self {
        Self {
            selector: "opendkim".into(),
            algorithm: DkimAlgorithm::Rsa,
        }
    }
}

/// See [`DkimConfig::algorithm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DkimAlgorithm {
    /// RSA, 2048 bits.
    Rsa,
    /// Ed25519 (RFC 8463).
    Ed25519,
}

/// Server metadata entries (RFC 5464), read by Delta Chat at every start.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataConfig {
    /// Operator contact address, published as `/shared/admin`
    /// (`mailto:<address>`).
    pub admin: Option<String>,
    /// Free text published as `/shared/comment`.
    pub comment: Option<String>,
    /// One-line JSON of client versions
    /// (`/shared/vendor/deltachat/appversions`); unset: no entry.
    pub app_versions: Option<String>,
}

/// The TURN server for calls (RFC 8656 over UDP and TCP, relayed
/// addresses over UDP) and the credentials clients get for it (coturn REST
/// scheme: the username is the expiry time, the password
/// `base64(HMAC-SHA1(secret, username))` with a per-installation secret).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    /// Run the TURN server and publish the `turn` metadata entry (the entry
    /// appears exactly when the server runs).
    pub enabled: bool,
    /// Host clients reach the TURN server at; unset: the mail domain.
    pub host: Option<String>,
    /// TURN port handed to clients (UDP and TCP).
    pub port: u16,
    /// Seconds a minted credential stays valid (expiries are rounded down
    /// to the hour).
    pub credential_lifetime: u64,
    /// Addresses the server listens on, for UDP and TCP each.
    pub listen: Vec<SocketAddr>,
    /// Serve TURN over UDP.
    pub udp: bool,
    /// Serve TURN over TCP.
    pub tcp: bool,
    /// The public addresses handed out as relayed addresses (one IPv4, one
    /// IPv6 at most). Empty: the `listen` addresses that are not
    /// unspecified, else an IP-address `mail_domain`.
    pub relay_addresses: Vec<IpAddr>,
    /// Lowest UDP port of relayed addresses.
    pub relay_port_min: u16,
    /// Highest UDP port of relayed addresses.
    pub relay_port_max: u16,
    /// Peer ranges allowed although they are loopback, private,
    /// link-local or the relay's own (CIDR, e.g. `"10.0.0.0/8"`). By default
    /// only public addresses other than the relay's own are relayed to.
    pub allowed_peers: Vec<String>,
    /// Allocations at once, in total.
    pub max_allocations: usize,
    /// Allocations at once per client address (IPv6: per /64).
    pub max_allocations_per_client: usize,
    /// Relayed bytes a second per allocation, both directions together;
    /// 0: unlimited.
    pub max_bandwidth: u64,
    /// TURN-over-TCP connections at once, in total (a fifth per client).
    pub max_tcp_connections: usize,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            host: None,
            port: 3478,
            credential_lifetime: 5 * 24 * 3600,
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 3478))],
            udp: true,
            tcp: true,
            relay_addresses: Vec::new(),
            relay_port_min: 49_152,
            relay_port_max: 65_535,
            allowed_peers: Vec::new(),
            max_allocations: 1000,
            max_allocations_per_client: 10,
            max_bandwidth: 1024 * 1024,
            max_tcp_connections: 1000,
        }
    }
}

/// The iroh relay that webxdc realtime apps use to reach each other,
/// served on the HTTPS port under `/relay` (with `/ping` and
/// `/generate_204`), and the URL clients get for it
/// (`/shared/vendor/deltachat/irohrelay`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct IrohConfig {
    /// Run the built-in iroh relay.
    pub enabled: bool,
    /// The relay URL published to clients. Unset: `https://<domain>/` (with
    /// the HTTPS port when it is not 443) while the built-in relay runs, no
    /// entry otherwise (clients then use their default relays). Set with
    /// `enabled = false` to send clients to an external relay.
    pub url: Option<String>,
    /// Bytes a second one client may send through the built-in relay;
    /// 0: unlimited.
    pub max_bandwidth: u32,
}

impl Default for IrohConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            url: None,
            max_bandwidth: 1024 * 1024,
        }
    }
}

/// The Shadowsocks proxy: clients that cannot reach the relay's ports
/// directly connect through it (the `ss://` link on the index page and from
/// `madmail proxy-link`). It forwards only to the relay's own client ports
/// (IMAP, submission, HTTPS), never to other hosts. The password is
/// generated once per installation (`shadowsocks.key` in `state_dir`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ShadowsocksConfig {
    /// Run the proxy and show its link.
    pub enabled: bool,
    /// Addresses the proxy listens on (TCP).
    pub listen: Vec<SocketAddr>,
    /// Host in the link; unset: the mail domain.
    pub host: Option<String>,
    /// Port in the link; unset: the port of the first `listen` address.
    pub port: Option<u16>,
    /// The AEAD cipher (Delta Chat supports each of these).
    pub cipher: ShadowsocksCipher,
    /// Proxy connections at once, in total (a fifth per client).
    pub max_connections: usize,
}

impl Default for ShadowsocksConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 8388))],
            host: None,
            port: None,
            cipher: ShadowsocksCipher::Chacha20IetfPoly1305,
            max_connections: 1000,
        }
    }
}

/// See [`ShadowsocksConfig::cipher`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ShadowsocksCipher {
    /// ChaCha20-Poly1305 (the most widely supported by clients).
    #[serde(rename = "chacha20-ietf-poly1305")]
    Chacha20IetfPoly1305,
    /// AES-128-GCM.
    #[serde(rename = "aes-128-gcm")]
    Aes128Gcm,
    /// AES-256-GCM.
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
    /// Shadowsocks 2022 with AES-128-GCM.
    #[serde(rename = "2022-blake3-aes-128-gcm")]
    Blake3Aes128Gcm,
    /// Shadowsocks 2022 with AES-256-GCM.
    #[serde(rename = "2022-blake3-aes-256-gcm")]
    Blake3Aes256Gcm,
    /// Shadowsocks 2022 with ChaCha20-Poly1305.
    #[serde(rename = "2022-blake3-chacha20-poly1305")]
    Blake3Chacha20Poly1305,
}

impl ShadowsocksCipher {
    /// The cipher's name in `ss://` links and client configurations.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Chacha20IetfPoly1305 => "chacha20-ietf-poly1305",
            Self::Aes128Gcm => "aes-128-gcm",
            Self::Aes256Gcm => "aes-256-gcm",
            Self::Blake3Aes128Gcm => "2022-blake3-aes-128-gcm",
            Self::Blake3Aes256Gcm => "2022-blake3-aes-256-gcm",
            Self::Blake3Chacha20Poly1305 => "2022-blake3-chacha20-poly1305",
        }
    }
}

/// Retention: what the relay deletes by itself, and when.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days after which every message is deleted.
    pub delete_mails_after: u32,
    /// Days after which seen messages larger than `large_message_size`
    /// are deleted.
    pub delete_large_after: u32,
    /// Bytes above which a message counts as large.
    pub large_message_size: u64,
    /// Days without login after which an account and its mail are deleted.
    pub delete_inactive_users_after: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            delete_mails_after: 20,
            delete_large_after: 7,
            large_message_size: 200_000,
            delete_inactive_users_after: 90,
        }
    }
}

/// The web pages.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Operator name shown on the privacy page.
    pub privacy_operator: Option<String>,
    /// Postal address of the operator for the privacy page.
    pub privacy_postal: Option<String>,
    /// Contact e-mail for privacy questions.
    pub privacy_mail: Option<String>,
    /// Name of the data protection officer, if any.
    pub privacy_supervisor: Option<String>,
}

/// Push notifications (docs/specifications.md §4): for every stored message
/// that is not self-sent, each live device token of the recipient is posted
/// to the notification server.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Whether notifications are sent (and the relay tells clients so).
    pub enabled: bool,
    /// Notification server endpoint.
    pub url: String,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            url: "https://notifications.delta.chat/notify".into(),
        }
    }
}

/// The Prometheus metrics endpoint: `GET /metrics` in the OpenMetrics text
/// format (connections, logins, messages accepted and refused by reason,
/// the outbound queue, push outcomes). No label names a user, an address or
/// an IP address. There is no authentication: keep it on loopback.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Whether the endpoint is served.
    pub enabled: bool,
    /// Address the endpoint listens on (9465 is used by no chatmail service).
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 9465)),
        }
    }
}

/// The admin JSON API (`docs/admin-api.md`): `POST <path>` on the HTTPS
/// port, with the bearer token of `madmail admin-token` (generated into the
/// state directory on first start). The `madmail` CLI does not need it: it
/// speaks to the running relay over the control socket in the state
/// directory, which only the relay's user can open.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Whether the API is served over HTTPS.
    pub enabled: bool,
    /// Where the API is served (Madmail's tools use `/api/admin`).
    pub path: String,
    /// Where the admin web UI is served while the API is (`admin-leptos/`,
    /// built into the binary by `cargo xtask admin-ui`; it signs in with
    /// the API's token). Empty: not served.
    pub web_path: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            path: "/api/admin".into(),
            web_path: "/admin".into(),
        }
    }
}

fn default_state_dir() -> PathBuf {
    "/var/lib/madmail".into()
}
