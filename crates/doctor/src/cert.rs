//! Judging a certificate a listener presented: the names it covers, its
//! validity dates and its issuer.
//!
//! Rules: expired or not yet valid fails, expiring within [`WARN_DAYS`]
//! warns; each name the relay serves (the mail domain, `mta-sts.` and
//! `www.` for a named relay, the address of an IP-only one) must be a
//! subject alternative name (RFC 6125 §6.4; a wildcard covers one label);
//! the chain must lead to a web PKI root, except on a trial relay
//! (self-signed mode, an IP address or a `_` domain), where a self-signed
//! certificate only warns. Trust is judged at a moment inside the leaf's
//! validity, so that an expired certificate is reported as expired and
//! not also as untrusted.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chatmail_config::{MailDomain, Settings, TlsMode};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::{CertificateError, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::{Check, Status};

/// Days before expiry from which a certificate warns.
pub(crate) const WARN_DAYS: i64 = 14;
const DAY: i64 = 24 * 3600;

/// Verifies chains against the web PKI roots.
static WEB_PKI: LazyLock<Option<Arc<WebPkiServerVerifier>>> = LazyLock::new(|| {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .ok()
});

/// One problem found.
struct Finding {
    status: Status,
    text: String,
    fix: String,
}

/// The check of the chain presented on the listener `listener`.
pub(crate) fn check(settings: &Settings, listener: &str, chain: &[CertificateDer]) -> Check {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    evaluate(settings, &format!("certificate {listener}"), chain, now)
}

/// [`check`] at the Unix time `now`.
fn evaluate(settings: &Settings, name: &str, chain: &[CertificateDer], now: i64) -> Check {
    let Some(leaf) = chain.first() else {
        return Check::fail(name, "no certificate presented", &replace_fix(settings));
    };
    let cert = match x509_parser::parse_x509_certificate(leaf) {
        Ok((_, cert)) => cert,
        Err(e) => {
            let detail = format!("unreadable certificate: {e}");
            return Check::fail(name, detail, &replace_fix(settings));
        }
    };
    let mut findings: Vec<Finding> = Vec::new();
    findings.extend(validity(settings, &cert, now));
    findings.extend(names(settings, &cert));
    let in_date_for_every_name = findings.is_empty();
    findings.extend(issuer(settings, chain, &cert, now));
    let until = cert.validity().not_after.timestamp();
    let summary = format!(
        "valid for {} until {} ({} days left)",
        served_names(settings).join(", "),
        date(until),
        (until - now) / DAY
    );
    let Some(worst) = findings.iter().map(|f| f.status).max_by_key(|s| rank(*s)) else {
        return Check::pass(name, summary);
    };
    let mut detail: Vec<&str> = findings.iter().map(|f| f.text.as_str()).collect();
    if in_date_for_every_name {
        detail.push(&summary);
    }
    let mut fixes: Vec<&str> = findings
        .iter()
        .filter(|f| f.status == worst)
        .map(|f| f.fix.as_str())
        .collect();
    fixes.dedup();
    Check::new(name, worst, detail.join("; "), Some(fixes.join("; ")))
}

fn rank(status: Status) -> u8 {
    match status {
        Status::Pass => 0,
        Status::Warn => 1,
        Status::Fail => 2,
    }
}

/// Expired, not yet valid, or expiring soon.
fn validity(settings: &Settings, cert: &X509Certificate, now: i64) -> Option<Finding> {
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let (status, text) = if now > not_after {
        let ago = (now - not_after) / DAY;
        let text = format!("expired on {} ({ago} days ago)", date(not_after));
        (Status::Fail, text)
    } else if now < not_before {
        (
            Status::Fail,
            format!("not valid before {}", date(not_before)),
        )
    } else if not_after - now < WARN_DAYS * DAY {
        let left = (not_after - now) / DAY;
        let text = format!("expires on {} (in {left} days)", date(not_after));
        (Status::Warn, text)
    } else {
        return None;
    };
    Some(Finding {
        status,
        text,
        fix: renew_fix(settings),
    })
}

/// The names the relay serves that the certificate does not cover.
fn names(settings: &Settings, cert: &X509Certificate) -> Option<Finding> {
    let covered = subject_alt_names(cert);
    let missing: Vec<String> = served_names(settings)
        .into_iter()
        .filter(|name| !covered.iter().any(|pattern| covers(pattern, name)))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let fix = match effective_mode(settings) {
        TlsMode::Files => format!(
            "issue the certificate for {} (one subject alternative name each)",
            served_names(settings).join(", ")
        ),
        _ => replace_fix(settings),
    };
    Some(Finding {
        status: Status::Fail,
        text: format!("not valid for {}", missing.join(", ")),
        fix,
    })
}

/// The DNS names and IP addresses of the subject alternative names.
fn subject_alt_names(cert: &X509Certificate) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
            GeneralName::IPAddress(bytes) => ip_text(bytes),
            _ => None,
        })
        .collect()
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).to_string()),
        _ => None,
    }
}

/// Whether the SAN `pattern` covers `name`; `*.` matches exactly one
/// label (RFC 6125 §6.4.3).
fn covers(pattern: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(parent) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => pattern == name,
    }
}

/// Whether the chain leads to a web PKI root.
fn issuer(
    settings: &Settings,
    chain: &[CertificateDer],
    cert: &X509Certificate,
    now: i64,
) -> Option<Finding> {
    let trusted = trust(settings, chain, cert, now).err()?;
    let self_signed = cert.subject() == cert.issuer();
    let what = if self_signed {
        "self-signed".to_owned()
    } else {
        format!("not issued by a public CA ({trusted})")
    };
    if trial(settings) {
        return Some(Finding {
            status: Status::Warn,
            text: format!(
                "{what}: fine for a trial relay (Delta Chat accepts it for IP \
                 addresses and `_` domains), but relays with a public name need \
                 a CA-issued certificate to federate"
            ),
            fix: "for a public relay use a DNS name as mail_domain and tls.mode = \"acme\"".into(),
        });
    }
    Some(Finding {
        status: Status::Fail,
        text: format!("{what}: other relays refuse to deliver to it and clients warn"),
        fix: "use a certificate from a public CA: tls.mode = \"acme\", or the full chain \
              in tls.cert_path"
            .into(),
    })
}

/// Why a chain does not lead to a web PKI root; the text goes into the
/// finding.
#[derive(Debug, thiserror::Error)]
enum TrustError {
    /// The built-in root store could not be turned into a verifier.
    #[error("no web PKI roots")]
    NoRoots,
    #[error("`{name}` is not a valid TLS name: {source}")]
    Name {
        name: String,
        #[source]
        source: rustls_pki_types::InvalidDnsNameError,
    },
    /// The verifier refused the chain (unknown issuer, bad signature...).
    #[error("{0}")]
    Refused(#[source] rustls::Error),
}

/// `Err` with the reason when the chain is not trusted; names are left
/// to [`names`] and dates to [`validity`].
fn trust(
    settings: &Settings,
    chain: &[CertificateDer],
    cert: &X509Certificate,
    now: i64,
) -> Result<(), TrustError> {
    let verifier = WEB_PKI.as_ref().ok_or(TrustError::NoRoots)?;
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let at = now.clamp(not_before, not_after.max(not_before)).max(0) as u64;
    let at = UnixTime::since_unix_epoch(Duration::from_secs(at));
    let name = match &settings.domain {
        MailDomain::Ip(ip) => ServerName::IpAddress(std::net::IpAddr::V4(*ip).into()),
        MailDomain::Name(name) => {
            ServerName::try_from(name.clone()).map_err(|source| TrustError::Name {
                name: name.clone(),
                source,
            })?
        }
    };
    match verifier.verify_server_cert(&chain[0], &chain[1..], &name, &[], at) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => Ok(()),
        Err(e) => Err(TrustError::Refused(e)),
    }
}

/// The names clients and relays ask the certificate for.
pub(crate) fn served_names(settings: &Settings) -> Vec<String> {
    match &settings.domain {
        MailDomain::Ip(ip) => vec![ip.to_string()],
        MailDomain::Name(name) => vec![
            name.clone(),
            format!("mta-sts.{name}"),
            format!("www.{name}"),
        ],
    }
}

/// A trial relay: generated certificate, IP address or `_` domain.
fn trial(settings: &Settings) -> bool {
    settings.self_signed || settings.domain.wants_self_signed()
}

fn effective_mode(settings: &Settings) -> TlsMode {
    match settings.config.tls.mode {
        TlsMode::Auto if settings.self_signed => TlsMode::SelfSigned,
        TlsMode::Auto => TlsMode::Files,
        mode => mode,
    }
}

/// How to get a certificate that is in date.
fn renew_fix(settings: &Settings) -> String {
    match effective_mode(settings) {
        TlsMode::Files => {
            let path = settings.config.tls.cert_path.as_ref();
            let path = path.map_or("tls.cert_path".into(), |p| p.display().to_string());
            format!("install a renewed certificate at {path}; the relay loads it within seconds")
        }
        _ => replace_fix(settings),
    }
}

/// How to get a new certificate in the modes that make their own.
fn replace_fix(settings: &Settings) -> String {
    match effective_mode(settings) {
        TlsMode::Acme => "the ACME renewal is not working: read the relay's log and check that \
                          ports 80 and 443 are reachable from the internet"
            .into(),
        TlsMode::Files => {
            "install a valid certificate and key at tls.cert_path and tls.key_path".into()
        }
        _ => format!(
            "delete {} and restart the relay: it generates a new certificate",
            settings.config.state_dir.join("tls").display()
        ),
    }
}

/// `YYYY-MM-DD` of a Unix time (UTC), from the civil calendar
/// (days since 1970-01-01 to year, month, day).
pub(crate) fn date(unix: i64) -> String {
    let days = unix.div_euclid(DAY);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
#[path = "tests/cert.rs"]
mod tests;
