//! The DKIM record at `<selector>._domainkey.<domain>` against the key
//! the relay signs with (`<state_dir>/dkim/dkim-<selector>.pem`, only
//! read here, never created).
//!
//! Comparison by tags (RFC 6376 §3.6.1): the `p=` public key with all
//! whitespace removed (§3.6.2.2 lets it span strings and lines), and the
//! `k=` key type, `rsa` when absent. Other tags (`h=`, `t=`, `n=`) may
//! differ. An empty `p=` is a revoked key (§3.6.1).

use std::collections::BTreeMap;

use chatmail_config::{MailDomain, Settings};
use chatmail_dkim::{DkimError, DkimKey};
use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::RecordType;

use crate::Check;
use crate::dns::{self, Lookup};
use crate::records::Record;

/// The relay's key: `None` before its first start.
pub(crate) type KeyState = Result<Option<DkimKey>, DkimError>;

/// Reads the relay's key without creating one.
pub(crate) fn load(settings: &Settings) -> KeyState {
    DkimKey::load(&key_dir(settings), &settings.config.dkim.selector)
}

fn key_dir(settings: &Settings) -> std::path::PathBuf {
    settings.config.state_dir.join("dkim")
}

/// The owner name of the key record, fully qualified.
fn record_name(settings: &Settings, domain: &str) -> String {
    format!("{}._domainkey.{domain}.", settings.config.dkim.selector)
}

/// Whether `record` is the DKIM key record (checked here, not by the
/// generic comparison in module `dns`).
pub(crate) fn is_dkim_record(settings: &Settings, record: &Record) -> bool {
    let MailDomain::Name(domain) = &settings.domain else {
        return false;
    };
    record.kind == "TXT" && record.name == record_name(settings, domain)
}

/// The check of the published key.
pub(crate) async fn check(
    resolver: &TokioResolver,
    settings: &Settings,
    domain: &str,
    key: &KeyState,
) -> Check {
    let owner = record_name(settings, domain);
    let name = format!("dkim {owner}");
    let key = match key {
        Ok(Some(key)) => key,
        Ok(None) => {
            let path = DkimKey::path(&key_dir(settings), &settings.config.dkim.selector);
            let detail = format!("no DKIM key at {} yet", path.display());
            let fix = "start the relay once (it creates the key), then publish the \
                       record `madmail dns` prints";
            return Check::fail(name, detail, fix);
        }
        Err(e) => return Check::fail(name, e.to_string(), unreadable_fix(e)),
    };
    let line = dns::zone_line(&Record {
        name: owner.clone(),
        kind: "TXT",
        value: key.txt_record(),
        required: true,
    });
    match dns::lookup(resolver, &owner, RecordType::TXT).await {
        Ok(published) => compare(name, key, &published, &line),
        Err(Lookup::Missing) => {
            let fix = format!("publish: {line}");
            Check::fail(name, "no TXT record: other relays refuse our mail", &fix)
        }
        Err(Lookup::Failed(e)) => dns::lookup_failed(name, &e),
    }
}

/// What to do about a key file that does not load.
fn unreadable_fix(error: &DkimError) -> &'static str {
    match error {
        DkimError::Read { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            "run the check as root or as the relay's user (runuser -u madmail -- madmail doctor)"
        }
        _ => "restore the key file from a backup, or choose a new [dkim] selector",
    }
}

/// The published TXT records of the key name against `key`.
fn compare(name: String, key: &DkimKey, published: &[String], line: &str) -> Check {
    let ours = tags(&key.txt_record());
    let key_type = |tags: &BTreeMap<String, String>| {
        tags.get("k")
            .map_or("rsa".to_owned(), |k| k.to_ascii_lowercase())
    };
    let records: Vec<BTreeMap<String, String>> = published
        .iter()
        .map(|text| tags(text))
        .filter(|tags| tags.contains_key("p"))
        .collect();
    let fix = format!("publish (replacing the old record): {line}");
    if records.is_empty() {
        let detail = format!("no key record (no p= tag) among {published:?}");
        return Check::fail(name, detail, &fix);
    }
    if records
        .iter()
        .any(|r| r.get("p") == ours.get("p") && key_type(r) == key_type(&ours))
    {
        let detail = format!(
            "the published key is the relay's key (k={})",
            key_type(&ours)
        );
        return Check::pass(name, detail);
    }
    let found: Vec<String> = records
        .iter()
        .map(|r| match r.get("p").map(String::as_str) {
            Some("") => "an empty p= (revoked key)".to_owned(),
            Some(p) => format!("k={} p={}", key_type(r), abbreviate(p)),
            None => String::new(),
        })
        .collect();
    let own_key = ours.get("p").map_or("", String::as_str);
    let expected = format!("k={} p={}", key_type(&ours), abbreviate(own_key));
    let detail = format!(
        "the published key differs from the relay's: expected {expected}, found {}; \
         other relays will refuse our mail",
        found.join(", ")
    );
    Check::fail(name, detail, &fix)
}

/// `tag=value` pairs, tag names lower-cased, values without whitespace.
fn tags(text: &str) -> BTreeMap<String, String> {
    text.split(';')
        .filter_map(|pair| pair.split_once('='))
        .map(|(tag, value)| {
            let value: String = value.chars().filter(|c| !c.is_whitespace()).collect();
            (tag.trim().to_ascii_lowercase(), value)
        })
        .collect()
}

/// The start and end of a long key.
fn abbreviate(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 24 {
        return key.to_owned();
    }
    let start: String = chars[..12].iter().collect();
    let end: String = chars[chars.len() - 8..].iter().collect();
    format!("{start}…{end} ({} chars)", chars.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;

    fn key() -> DkimKey {
        let der = DkimKey::generate_pkcs8(chatmail_dkim::Algorithm::Ed25519).unwrap();
        DkimKey::from_pkcs8_der("opendkim", &der).unwrap()
    }

    #[test]
    fn the_same_key_passes_however_it_is_spaced() {
        let key = key();
        let spaced = key.txt_record().replace("; ", " ;  ").replace("p=", "p = ");
        let other = "v=spf1 a ~all".to_owned();
        let check = compare("dkim x".into(), &key, &[other, spaced], "line");
        assert_eq!(check.status, Status::Pass, "{check:?}");
    }

    #[test]
    fn another_key_fails_and_shows_both() {
        let (ours, theirs) = (key(), key());
        let check = compare("dkim x".into(), &ours, &[theirs.txt_record()], "line");
        assert_eq!(check.status, Status::Fail);
        assert!(check.detail.contains("differs"), "{check:?}");
        assert!(check.detail.contains("expected k=ed25519 p="), "{check:?}");
        assert_eq!(
            check.fix.as_deref(),
            Some("publish (replacing the old record): line")
        );
    }

    #[test]
    fn a_revoked_key_or_a_wrong_type_fails() {
        let key = key();
        let revoked = compare("x".into(), &key, &["v=DKIM1; p=".into()], "line");
        assert!(revoked.detail.contains("revoked"), "{revoked:?}");
        let rsa = key.txt_record().replace("k=ed25519", "k=rsa");
        assert_eq!(compare("x".into(), &key, &[rsa], "l").status, Status::Fail);
    }

    #[test]
    fn load_does_not_create_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "mail_domain = \"chat.test\"\nstate_dir = {:?}\n[tls]\nmode = \"self-signed\"\n",
            dir.path().display().to_string()
        );
        let settings = chatmail_config::parse(&text).unwrap();
        assert!(load(&settings).unwrap().is_none());
        assert!(!dir.path().join("dkim").exists());
    }
}
