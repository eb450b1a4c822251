use super::*;

fn config(dir: &Path, directory: &str) -> AcmeConfig {
    AcmeConfig {
        directory: directory.into(),
        contact: None,
        ca_root: None,
        names: vec!["chat.example.org".into(), "www.chat.example.org".into()],
        dir: dir.join("acme"),
    }
}

/// Stores a certificate as if `config`'s CA had issued it.
fn store_issued(config: &AcmeConfig) {
    let (cert, key) = crate::generate(&config.names).unwrap();
    let dir = &config.dir;
    crate::write_private(dir, &dir.join("cert.pem"), cert.as_bytes()).unwrap();
    crate::write_private(dir, &dir.join("key.pem"), key.as_bytes()).unwrap();
    crate::write_private(dir, &dir.join("order.txt"), order_id(config).as_bytes()).unwrap();
}

#[test]
fn renewal_is_due_after_two_thirds_of_the_lifetime() {
    let not_before = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let validity = Validity {
        not_before,
        not_after: not_before + Duration::from_secs(90 * 86400),
    };
    assert_eq!(
        validity.renew_at(),
        not_before + Duration::from_secs(60 * 86400)
    );
}

#[test]
fn retries_back_off_from_five_minutes_to_six_hours() {
    assert_eq!(retry_delay(1), Duration::from_secs(5 * 60));
    assert_eq!(retry_delay(2), Duration::from_secs(10 * 60));
    assert_eq!(retry_delay(7), Duration::from_secs(320 * 60));
    assert_eq!(retry_delay(8), Duration::from_secs(6 * 3600));
    assert_eq!(retry_delay(u32::MAX), Duration::from_secs(6 * 3600));
}

#[test]
fn first_start_serves_a_temporary_certificate_and_renews_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let acme = Acme::new(config(dir.path(), "https://ca.test/dir")).unwrap();
    assert!(!acme.issued());
    assert_eq!(acme.until_renewal(), Duration::ZERO);
}

#[test]
fn stored_certificate_is_served_only_for_the_same_ca_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let issued = config(dir.path(), "https://ca.test/dir");
    store_issued(&issued);
    let acme = Acme::new(issued.clone()).unwrap();
    assert!(acme.issued());
    // A fresh certificate is not due for renewal.
    assert!(acme.until_renewal() > Duration::from_secs(86400));

    let other_ca = config(dir.path(), "https://other-ca.test/dir");
    assert!(!Acme::new(other_ca).unwrap().issued());
    let mut other_names = issued;
    other_names.names.push("mta-sts.chat.example.org".into());
    assert!(!Acme::new(other_names).unwrap().issued());
}

#[test]
fn account_key_is_created_once_and_kept_private() {
    let dir = tempfile::tempdir().unwrap();
    let acme_dir = dir.path().join("acme");
    let first = load_or_create_account_key(&acme_dir).unwrap();
    let second = load_or_create_account_key(&acme_dir).unwrap();
    assert_eq!(first, second);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(acme_dir.join("account.pem")).unwrap();
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
}

#[test]
fn unreadable_ca_root_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = config(dir.path(), "https://ca.test/dir");
    bad.ca_root = Some(dir.path().join("missing-root.pem"));
    let err = Acme::new(bad).err().unwrap();
    assert!(err.to_string().contains("missing-root.pem"), "{err}");
}
