//! `tls.mode = "acme"`: the certificate for `<domain>`, `mta-sts.<domain>`
//! and `www.<domain>` comes from the configured ACME CA and is renewed by a
//! background task for as long as the relay runs.
//!
//! [`start`] returns at once with the certificate source for every
//! listener (the stored certificate, or a temporary self-signed one until
//! the first order succeeds) and the HTTP-01 challenge store that port 80
//! answers from; the task stops on shutdown.

use std::sync::Arc;

use anyhow::Context;
use chatmail_config::Settings;
use chatmail_tls::Certs;
use chatmail_tls::acme::{Acme, AcmeConfig, ChallengeStore};
use tokio_util::sync::CancellationToken;

/// What the listeners need from ACME.
pub struct AcmeTls {
    /// Build every listener's rustls configuration from this.
    pub certs: Certs,
    /// Pending HTTP-01 challenges, for `/.well-known/acme-challenge/` on
    /// port 80.
    pub challenges: Arc<ChallengeStore>,
}

/// The ACME order of this relay, from its settings.
pub fn config(settings: &Settings) -> AcmeConfig {
    let host = settings.domain.host();
    let tls = &settings.config.tls;
    AcmeConfig {
        directory: tls.acme_directory.clone(),
        contact: tls.acme_contact.clone(),
        ca_root: tls.acme_ca_root.clone(),
        names: vec![
            host.clone(),
            format!("mta-sts.{host}"),
            format!("www.{host}"),
        ],
        dir: settings.config.state_dir.join("acme"),
    }
}

/// Loads the current certificate and spawns the renewal task on `tasks`.
pub fn start(
    settings: &Settings,
    shutdown: &CancellationToken,
    tasks: &mut crate::supervise::Tasks,
) -> anyhow::Result<AcmeTls> {
    let acme = Arc::new(Acme::new(config(settings)).context("setting up ACME")?);
    let tls = AcmeTls {
        certs: acme.certs(),
        challenges: acme.challenges(),
    };
    let stop = shutdown.clone();
    tasks.spawn("certificate renewal", async move {
        tokio::select! {
            () = acme.run() => {}
            () = stop.cancelled() => {}
        }
        Ok(())
    });
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &std::path::Path) -> Settings {
        let text = format!(
            "mail_domain = \"chat.example.org\"\nstate_dir = \"{}\"\n\
             [tls]\nmode = \"acme\"\nacme_contact = \"ops@example.org\"\n",
            dir.display()
        );
        chatmail_config::parse(&text).unwrap()
    }

    #[test]
    fn order_covers_the_domain_mta_sts_and_www() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(&settings(dir.path()));
        assert_eq!(
            config.names,
            [
                "chat.example.org",
                "mta-sts.chat.example.org",
                "www.chat.example.org"
            ]
        );
        assert_eq!(config.dir, dir.path().join("acme"));
        assert!(config.directory.starts_with("https://acme-v02."));
        assert_eq!(config.contact.as_deref(), Some("ops@example.org"));
    }

    #[tokio::test]
    async fn listeners_get_a_certificate_before_the_first_order_and_the_task_stops() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = settings(dir.path());
        // Unreachable CA: the first order fails and is retried later.
        settings.config.tls.acme_directory = "https://127.0.0.1:9/dir".into();
        let shutdown = CancellationToken::new();
        let mut tasks = crate::supervise::Tasks::new(shutdown.clone());
        let tls = start(&settings, &shutdown, &mut tasks).unwrap();
        assert!(tls.certs.relay_config().is_ok());
        assert!(tls.certs.multiplex_config(true).is_ok());
        assert_eq!(tls.challenges.get("token"), None);
        assert!(dir.path().join("acme/account.pem").exists());
        shutdown.cancel();
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), tasks.next_exit());
        assert_eq!(
            ended.await.unwrap().to_string(),
            "certificate renewal stopped: returned"
        );
    }
}
