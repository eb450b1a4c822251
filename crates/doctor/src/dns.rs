//! The published DNS records against those the relay needs
//! ([`crate::records`]), looked up through `[federation] dns_servers`
//! when set, else the system resolver.
//!
//! Comparison: names and host data case-insensitively and without the
//! trailing dot; TXT data by its `;`-separated tags with the whitespace
//! around them ignored, among the TXT records of the same kind (the same
//! `v=` tag) only. A CNAME may be replaced by address records equal to
//! the domain's. Missing or different: a failure for a required record, a
//! warning for a recommended one. The DKIM record is checked against the
//! key on disk by module `dkim`. Besides the records of `madmail dns`, the
//! domain needs an address record (A or AAAA).

use std::net::IpAddr;
use std::time::Duration;

use chatmail_config::{MailDomain, Settings};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ResolveHosts, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{Name, RData, RecordType};

use crate::records::{self, Record};
use crate::{Check, Status, dkim};

/// How long one DNS query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a lookup gave no data.
pub(crate) enum Lookup {
    /// NXDOMAIN or no record of that type.
    Missing,
    /// No answer (timeout, SERVFAIL, unreachable server).
    Failed(String),
}

impl From<NetError> for Lookup {
    fn from(e: NetError) -> Self {
        if e.is_no_records_found() || e.is_nx_domain() {
            Lookup::Missing
        } else {
            Lookup::Failed(e.to_string())
        }
    }
}

/// Every DNS check of the relay.
pub(crate) async fn check(settings: &Settings) -> Vec<Check> {
    let MailDomain::Name(domain) = &settings.domain else {
        let detail = "an IP-only relay: no DNS records needed";
        return vec![Check::pass("dns", detail)];
    };
    let resolver = match resolver(settings) {
        Ok(resolver) => resolver,
        Err(e) => {
            let fix = "fix /etc/resolv.conf or set [federation] dns_servers";
            return vec![Check::fail("dns", format!("no resolver: {e}"), fix)];
        }
    };
    let key = dkim::load(settings);
    let records = records::build(settings, key.as_ref().ok().and_then(Option::as_ref));
    let others = records
        .iter()
        .filter(|r| !dkim::is_dkim_record(settings, r))
        .map(|r| record(&resolver, domain, r));
    let (address, dkim, others) = tokio::join!(
        address(&resolver, settings, domain),
        dkim::check(&resolver, settings, domain, &key),
        futures::future::join_all(others),
    );
    let mut checks = vec![address, dkim];
    checks.extend(others);
    checks
}

/// The resolver of `[federation] dns_servers`, else the system's; never
/// the hosts file, since the checks are about what others see.
pub(crate) fn resolver(settings: &Settings) -> Result<TokioResolver, NetError> {
    let mut builder = chatmail_transport::resolver_builder(settings)?;
    let options: &mut ResolverOpts = builder.options_mut();
    options.timeout = QUERY_TIMEOUT;
    options.attempts = 2;
    options.use_hosts_file = ResolveHosts::Never;
    builder.build()
}

/// The A and AAAA records of the domain. When the relay listens on
/// specific addresses, one of them should be published (a warning
/// otherwise: behind NAT or a proxy that is expected).
async fn address(resolver: &TokioResolver, settings: &Settings, domain: &str) -> Check {
    let name = format!("dns A/AAAA {domain}.");
    let found = match addresses(resolver, &format!("{domain}.")).await {
        Ok(found) => found,
        Err(Lookup::Missing) => {
            let fix =
                format!("publish an A (and AAAA) record for {domain}. with the relay's address");
            return Check::fail(name, "no A or AAAA record", &fix);
        }
        Err(Lookup::Failed(e)) => return lookup_failed(name, &e),
    };
    let shown = join(found.iter().map(IpAddr::to_string));
    let own: Vec<IpAddr> = listen_ips(settings);
    if own.is_empty() || found.iter().any(|ip| own.contains(ip)) {
        return Check::pass(name, format!("found {shown}"));
    }
    let detail = format!(
        "found {shown}, but the relay listens on {} (expected behind NAT or a proxy)",
        join(own.iter().map(IpAddr::to_string))
    );
    Check::warn(name, detail, "publish the relay's public address")
}

/// The specific (not wildcard) addresses the relay listens on.
fn listen_ips(settings: &Settings) -> Vec<IpAddr> {
    let listen = &settings.config.listen;
    let all = [
        &listen.submissions,
        &listen.submission,
        &listen.imaps,
        &listen.imap,
        &listen.https,
        &listen.smtp,
        &listen.http,
    ];
    let mut ips: Vec<IpAddr> = all.iter().flat_map(|a| a.iter().map(|s| s.ip())).collect();
    ips.retain(|ip| !ip.is_unspecified());
    ips.sort();
    ips.dedup();
    ips
}

pub(crate) async fn addresses(resolver: &TokioResolver, name: &str) -> Result<Vec<IpAddr>, Lookup> {
    let lookup = resolver.lookup_ip(parse(name)?).await?;
    let mut ips: Vec<IpAddr> = lookup.iter().collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        return Err(Lookup::Missing);
    }
    Ok(ips)
}

/// `name` as a DNS name; underscores are allowed anywhere, as in the
/// names the relay needs (`_mta-sts.`, `_imaps._tcp.`, `_`-prefixed test
/// domains).
fn parse(name: &str) -> Result<Name, Lookup> {
    Name::from_str_relaxed(name).map_err(|e| Lookup::Failed(format!("bad name {name:?}: {e}")))
}

/// The data of the `kind` records at `name`, as zone-file text (TXT:
/// the character-strings joined).
pub(crate) async fn lookup(
    resolver: &TokioResolver,
    name: &str,
    kind: RecordType,
) -> Result<Vec<String>, Lookup> {
    let answer = resolver.lookup(parse(name)?, kind).await?;
    let found: Vec<String> = answer
        .answers()
        .iter()
        .filter(|record| record.data.record_type() == kind)
        .map(|record| match &record.data {
            RData::TXT(txt) => String::from_utf8_lossy(&txt.txt_data.concat()).into_owned(),
            data => data.to_string(),
        })
        .collect();
    if found.is_empty() {
        return Err(Lookup::Missing);
    }
    Ok(found)
}

/// One record of `madmail dns`.
async fn record(resolver: &TokioResolver, domain: &str, expected: &Record) -> Check {
    let name = format!("dns {} {}", expected.kind, expected.name);
    let Ok(kind) = expected.kind.parse::<RecordType>() else {
        return lookup_failed(name, "unknown record type");
    };
    let found = lookup(resolver, &expected.name, kind).await;
    let found = match found.map(|found| same_kind(expected, found)) {
        Ok(found) if !found.is_empty() => found,
        Ok(_) | Err(Lookup::Missing) => return missing(resolver, domain, expected, name).await,
        Err(Lookup::Failed(e)) => return lookup_failed(name, &e),
    };
    let wanted = normalize(expected.kind, &expected.value);
    if found.iter().any(|f| normalize(expected.kind, f) == wanted) {
        return Check::pass(name, format!("found {}", expected.value));
    }
    let detail = format!(
        "expected {}, found {}",
        expected.value,
        join(found.iter().cloned())
    );
    let fix = format!("replace it by: {}", zone_line(expected));
    Check::new(name, severity(expected), detail, Some(fix))
}

/// A missing record; a missing CNAME is fine when the name has the same
/// addresses as the domain.
async fn missing(resolver: &TokioResolver, domain: &str, expected: &Record, name: String) -> Check {
    if expected.kind == "CNAME" {
        let own = addresses(resolver, &format!("{domain}.")).await;
        let alias = addresses(resolver, &expected.name).await;
        if let (Ok(own), Ok(alias)) = (own, alias)
            && own == alias
        {
            let detail = "no CNAME, but the same A/AAAA records as the domain";
            return Check::pass(name, detail);
        }
    }
    let detail = format!("missing (expected {})", expected.value);
    let fix = format!("publish: {}", zone_line(expected));
    Check::new(name, severity(expected), detail, Some(fix))
}

/// Only the TXT records of the expected kind (its first tag, `v=spf1`,
/// `v=DMARC1`, ...): a name may have several unrelated TXT records.
fn same_kind(expected: &Record, found: Vec<String>) -> Vec<String> {
    if expected.kind != "TXT" {
        return found;
    }
    let tag = |text: &str| {
        let first = text.split([';', ' ']).next().unwrap_or_default();
        first.trim().to_ascii_lowercase()
    };
    let wanted = tag(&expected.value);
    found.into_iter().filter(|f| tag(f) == wanted).collect()
}

/// Record data in a comparable form.
pub(crate) fn normalize(kind: &str, value: &str) -> String {
    if kind == "TXT" {
        let tags = value.split(';').map(|tag| {
            let tag = tag.split_whitespace().collect::<Vec<_>>().join(" ");
            tag.replace(" =", "=").replace("= ", "=")
        });
        return tags.filter(|t| !t.is_empty()).collect::<Vec<_>>().join(";");
    }
    let words = value.split_whitespace().map(|word| {
        let word = word.trim_matches('"').trim_end_matches('.');
        word.to_ascii_lowercase()
    });
    words.collect::<Vec<_>>().join(" ")
}

fn severity(record: &Record) -> Status {
    if record.required {
        Status::Fail
    } else {
        Status::Warn
    }
}

pub(crate) fn lookup_failed(name: String, error: &str) -> Check {
    let fix = "check that the DNS servers answer ([federation] dns_servers, else /etc/resolv.conf)";
    Check::fail(name, format!("lookup failed: {error}"), fix)
}

/// The zone-file line of one record, as `madmail dns` prints it.
pub(crate) fn zone_line(record: &Record) -> String {
    let one = Record {
        name: record.name.clone(),
        kind: record.kind,
        value: record.value.clone(),
        required: true,
    };
    records::zone(&[one]).trim_end().to_owned()
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_tags_compare_without_the_spaces_around_them() {
        let expected = normalize("TXT", "v=DMARC1;p=reject;adkim=s;aspf=s");
        assert_eq!(
            normalize("TXT", "v=DMARC1; p=reject; adkim=s; aspf=s;"),
            expected
        );
        assert_ne!(normalize("TXT", "v=DMARC1; p=none"), expected);
        assert_eq!(normalize("TXT", "v=spf1  a ~all"), "v=spf1 a ~all");
    }

    #[test]
    fn host_data_compares_without_case_dots_and_quotes() {
        assert_eq!(
            normalize("MX", "10 Chat.Example.org."),
            "10 chat.example.org"
        );
        assert_eq!(
            normalize("CAA", "0 issue \"letsencrypt.org\""),
            normalize("CAA", "0 issue letsencrypt.org")
        );
        assert_eq!(normalize("SRV", "0 1 993 chat.test."), "0 1 993 chat.test");
    }

    #[test]
    fn only_txt_records_of_the_same_kind_are_compared() {
        let spf = Record {
            name: "chat.test.".into(),
            kind: "TXT",
            value: "v=spf1 a ~all".into(),
            required: false,
        };
        let found = vec!["google-site-verification=x".into(), "v=spf1 mx ~all".into()];
        assert_eq!(same_kind(&spf, found), ["v=spf1 mx ~all"]);
    }

    #[test]
    fn the_fix_is_the_zone_line_of_madmail_dns() {
        let mx = Record {
            name: "chat.test.".into(),
            kind: "MX",
            value: "10 chat.test.".into(),
            required: true,
        };
        assert_eq!(zone_line(&mx), "chat.test. 3600 IN MX 10 chat.test.");
    }
}
