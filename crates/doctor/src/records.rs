//! The DNS records a relay needs, as `madmail dns` prints them (a
//! zone-file fragment or JSON) and as the checks compare them with what is
//! published.

use chatmail_config::{MailDomain, Settings};
use chatmail_dkim::DkimKey;
use serde::Serialize;

/// One resource record.
#[derive(Debug, Serialize)]
pub struct Record {
    /// Fully qualified owner name, with the trailing dot.
    pub name: String,
    /// Record type (`MX`, `TXT`, ...).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Record data as it appears in a zone file (TXT data unquoted: the
    /// zone rendering splits and quotes it).
    pub value: String,
    /// Whether the relay cannot work without it (the rest is recommended).
    pub required: bool,
}

/// The records for `settings`, given the DKIM key. An IP-only relay needs
/// none.
pub fn records(settings: &Settings, dkim: &DkimKey) -> Vec<Record> {
    build(settings, Some(dkim))
}

/// [`records`], without the DKIM record when there is no key yet.
pub(crate) fn build(settings: &Settings, dkim: Option<&DkimKey>) -> Vec<Record> {
    let MailDomain::Name(domain) = &settings.domain else {
        return Vec::new();
    };
    let fq = format!("{domain}.");
    let mut out = vec![record(fq.clone(), "MX", format!("10 {fq}"), true)];
    if let Some(dkim) = dkim {
        let name = dkim.record_name(domain);
        out.push(record(name, "TXT", dkim.txt_record(), true));
    }
    out.extend(fixed(&fq, domain));
    out.extend(services(settings, &fq, domain));
    out
}

fn record(name: String, kind: &'static str, value: String, required: bool) -> Record {
    Record {
        name,
        kind,
        value,
        required,
    }
}

/// The records every named relay has: MTA-STS, the web names, SPF, DMARC,
/// CAA and the mail SRV records (RFC 6186).
fn fixed(fq: &str, domain: &str) -> Vec<Record> {
    let srv = |service: &str, port: u16| {
        record(
            format!("_{service}._tcp.{fq}"),
            "SRV",
            format!("0 1 {port} {fq}"),
            false,
        )
    };
    vec![
        record(
            format!("_mta-sts.{fq}"),
            "TXT",
            format!("v=STSv1; id={}", mta_sts_id(domain)),
            true,
        ),
        record(format!("mta-sts.{fq}"), "CNAME", fq.into(), true),
        record(format!("www.{fq}"), "CNAME", fq.into(), true),
        record(fq.into(), "TXT", "v=spf1 a ~all".into(), false),
        record(
            format!("_dmarc.{fq}"),
            "TXT",
            "v=DMARC1;p=reject;adkim=s;aspf=s".into(),
            false,
        ),
        record(
            fq.into(),
            "CAA",
            "0 issue \"letsencrypt.org\"".into(),
            false,
        ),
        srv("submission", 587),
        srv("submissions", 465),
        srv("imap", 143),
        srv("imaps", 993),
    ]
}

/// The records of optional services: TURN's SRV records, the proxy host.
fn services(settings: &Settings, fq: &str, domain: &str) -> Vec<Record> {
    let mut out = Vec::new();
    let turn = &settings.config.turn;
    if turn.enabled {
        // RFC 5928 §4: `_turn._udp` and `_turn._tcp`.
        let host = turn
            .host
            .as_ref()
            .map_or(fq.to_owned(), |host| format!("{host}."));
        let value = format!("0 1 {} {host}", turn.port);
        for transport in ["udp", "tcp"] {
            let name = format!("_turn._{transport}.{fq}");
            out.push(record(name, "SRV", value.clone(), false));
        }
    }
    let proxy = &settings.config.shadowsocks;
    if proxy.enabled
        && let Some(host) = &proxy.host
        && host.parse::<std::net::IpAddr>().is_err()
        && !host.eq_ignore_ascii_case(domain)
    {
        // The `ss://` link names this host: it must lead here.
        out.push(record(format!("{host}."), "CNAME", fq.into(), true));
    }
    out
}

/// The MTA-STS policy the relay publishes (RFC 8461 §3.2).
pub fn mta_sts_policy(domain: &str) -> String {
    format!("version: STSv1\nmode: enforce\nmx: {domain}\nmax_age: 2419200\n")
}

/// The policy id: a digest of the policy, so it changes exactly when the
/// policy does (RFC 8461 §3.1).
fn mta_sts_id(domain: &str) -> String {
    let policy = mta_sts_policy(domain);
    let sum = policy.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{sum:016x}")
}

/// Renders records as a zone-file fragment; long TXT data is split into
/// strings of at most 255 bytes (RFC 1035 §3.3.14).
pub fn zone(records: &[Record]) -> String {
    let mut out = String::new();
    for r in records {
        let value = match r.kind {
            "TXT" => {
                let chunks: Vec<String> = r
                    .value
                    .as_bytes()
                    .chunks(255)
                    .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
                    .collect();
                format!("( {} )", chunks.join(" "))
            }
            _ => r.value.clone(),
        };
        let note = if r.required { "" } else { " ; recommended" };
        out.push_str(&format!("{} 3600 IN {} {value}{note}\n", r.name, r.kind));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> DkimKey {
        let der = DkimKey::generate_pkcs8(chatmail_dkim::Algorithm::Rsa).unwrap();
        DkimKey::from_pkcs8_der("opendkim", &der).unwrap()
    }

    #[test]
    fn zone_lists_mx_dkim_and_mta_sts_with_short_txt_strings() {
        let settings = chatmail_config::parse(
            "mail_domain = \"chat.example.org\"\n[tls]\nmode = \"self-signed\"\n",
        )
        .unwrap();
        let key = key();
        let zone = zone(&records(&settings, &key));
        assert!(
            zone.contains("chat.example.org. 3600 IN MX 10 chat.example.org.\n"),
            "{zone}"
        );
        assert!(
            zone.contains(
                "opendkim._domainkey.chat.example.org. 3600 IN TXT ( \"v=DKIM1; k=rsa; p="
            )
        );
        assert!(zone.contains("_mta-sts.chat.example.org. 3600 IN TXT ( \"v=STSv1; id="));
        assert!(zone.contains(
            "_imaps._tcp.chat.example.org. 3600 IN SRV 0 1 993 chat.example.org. ; recommended"
        ));
        for quoted in zone.split('"').skip(1).step_by(2) {
            assert!(quoted.len() <= 255);
        }
    }

    #[test]
    fn a_proxy_host_of_its_own_gets_a_cname() {
        let settings = chatmail_config::parse(
            "mail_domain = \"chat.example.org\"\n[tls]\nmode = \"self-signed\"\n\
             [shadowsocks]\nenabled = true\nhost = \"proxy.example.net\"\n",
        )
        .unwrap();
        let own_host = zone(&records(&settings, &key()));
        assert!(
            own_host.contains("proxy.example.net. 3600 IN CNAME chat.example.org."),
            "{own_host}"
        );
        let default_host = chatmail_config::parse(
            "mail_domain = \"chat.example.org\"\n[tls]\nmode = \"self-signed\"\n\
             [shadowsocks]\nenabled = true\n",
        )
        .unwrap();
        let default_zone = zone(&records(&default_host, &key()));
        assert_eq!(default_zone.matches("CNAME").count(), 2, "{default_zone}");
    }

    #[test]
    fn a_relay_with_turn_lists_its_srv_records() {
        let settings = chatmail_config::parse(
            "mail_domain = \"chat.example.org\"\n[tls]\nmode = \"self-signed\"\n\
             [turn]\nenabled = true\nrelay_addresses = [\"203.0.113.7\"]\n",
        )
        .unwrap();
        let zone = zone(&records(&settings, &key()));
        for transport in ["udp", "tcp"] {
            let line = format!(
                "_turn._{transport}.chat.example.org. 3600 IN SRV 0 1 3478 chat.example.org. ; recommended"
            );
            assert!(zone.contains(&line), "{zone}");
        }
    }

    #[test]
    fn ip_only_relay_needs_no_records() {
        let settings = chatmail_config::parse("mail_domain = \"1.2.3.4\"").unwrap();
        assert!(records(&settings, &key()).is_empty());
    }
}
