//! Certificates made with rcgen, judged at a fixed time.

use super::*;

/// 2027-01-15 08:00 UTC.
const NOW: i64 = 1_800_000_000;

fn settings(text: &str) -> Settings {
    chatmail_config::parse(text).unwrap()
}

fn public() -> Settings {
    settings(
        "mail_domain = \"chat.example.org\"\n[tls]\nmode = \"files\"\n\
         cert_path = \"/etc/madmail/cert.pem\"\nkey_path = \"/etc/madmail/key.pem\"\n",
    )
}

fn trial() -> Settings {
    settings("mail_domain = \"_chat.test\"\n[tls]\nmode = \"self-signed\"\n")
}

/// A self-signed certificate for `names`, valid between the two dates.
fn cert(names: &[&str], from: (i32, u8, u8), until: (i32, u8, u8)) -> CertificateDer<'static> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().der().clone()
}

fn all(domain: &str) -> Vec<String> {
    vec![
        domain.to_owned(),
        format!("mta-sts.{domain}"),
        format!("www.{domain}"),
    ]
}

fn judge(settings: &Settings, cert: CertificateDer<'static>) -> Check {
    evaluate(settings, "certificate imaps 127.0.0.1:993", &[cert], NOW)
}

#[test]
fn dates_are_civil_utc_days() {
    assert_eq!(date(0), "1970-01-01");
    assert_eq!(date(951_782_400), "2000-02-29");
    assert_eq!(date(NOW), "2027-01-15");
    assert_eq!(date(-DAY), "1969-12-31");
}

#[test]
fn a_good_self_signed_certificate_of_a_trial_relay_only_warns() {
    let names = all("_chat.test");
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let check = judge(&trial(), cert(&names, (2026, 1, 1), (2030, 1, 1)));
    assert_eq!(check.status, Status::Warn, "{check:?}");
    assert!(
        check
            .detail
            .starts_with("self-signed: fine for a trial relay"),
        "{check:?}"
    );
}

#[test]
fn an_expired_certificate_fails_with_its_expiry_date() {
    let names = all("_chat.test");
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let check = judge(&trial(), cert(&names, (2020, 1, 1), (2021, 1, 1)));
    assert_eq!(check.status, Status::Fail, "{check:?}");
    assert!(
        check.detail.contains("expired on 2021-01-01 ("),
        "{check:?}"
    );
    assert!(check.fix.unwrap().contains("tls"));
}

#[test]
fn a_certificate_expiring_within_two_weeks_warns_and_one_not_yet_valid_fails() {
    let names = all("_chat.test");
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let soon = judge(&trial(), cert(&names, (2026, 1, 1), (2027, 1, 20)));
    assert_eq!(soon.status, Status::Warn);
    assert!(
        soon.detail.contains("expires on 2027-01-20 (in 4 days)"),
        "{soon:?}"
    );
    let early = judge(&trial(), cert(&names, (2027, 6, 1), (2028, 1, 1)));
    assert_eq!(early.status, Status::Fail);
    assert!(
        early.detail.contains("not valid before 2027-06-01"),
        "{early:?}"
    );
}

#[test]
fn a_name_the_relay_serves_must_be_covered() {
    let check = judge(
        &public(),
        cert(&["chat.example.org"], (2026, 1, 1), (2030, 1, 1)),
    );
    assert_eq!(check.status, Status::Fail);
    assert!(
        check
            .detail
            .contains("not valid for mta-sts.chat.example.org, www.chat.example.org"),
        "{check:?}"
    );
    assert!(check.fix.unwrap().contains("issue the certificate for"));
}

#[test]
fn a_wildcard_covers_one_label() {
    assert!(covers("*.chat.example.org", "www.chat.example.org"));
    assert!(!covers("*.chat.example.org", "chat.example.org"));
    assert!(!covers("*.chat.example.org", "a.b.chat.example.org"));
    assert!(covers("chat.example.org", "CHAT.example.org"));
}

#[test]
fn a_self_signed_certificate_on_a_public_relay_fails() {
    let check = judge(
        &public(),
        cert(
            &["chat.example.org", "*.chat.example.org"],
            (2026, 1, 1),
            (2030, 1, 1),
        ),
    );
    assert_eq!(check.status, Status::Fail, "{check:?}");
    assert!(
        check.detail.starts_with("self-signed: other relays refuse"),
        "{check:?}"
    );
}

#[test]
fn an_ip_relay_certificate_names_its_address() {
    let ip = settings("mail_domain = \"203.0.113.7\"\n");
    let check = judge(&ip, cert(&["203.0.113.7"], (2026, 1, 1), (2030, 1, 1)));
    assert_eq!(check.status, Status::Warn, "{check:?}");
    let wrong = judge(&ip, cert(&["203.0.113.8"], (2026, 1, 1), (2030, 1, 1)));
    assert_eq!(wrong.status, Status::Fail);
    assert!(
        wrong.detail.contains("not valid for 203.0.113.7"),
        "{wrong:?}"
    );
}

#[test]
fn no_certificate_fails() {
    let check = evaluate(&trial(), "certificate x", &[], NOW);
    assert_eq!(check.status, Status::Fail);
}
