//! The Shadowsocks proxy of `[shadowsocks]`: starting it, and its `ss://`
//! link (`madmail proxy-link`, the index page).

use std::net::SocketAddr;

use anyhow::Context as _;
use chatmail_config::Settings;
use chatmail_config::schema::ShadowsocksCipher;
use chatmail_config::secret::{self, SecretError};
use chatmail_shadowsocks::{CipherKind, Options, Targets};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The installation's proxy key inside the state directory.
pub const KEY_FILE: &str = "shadowsocks.key";

/// Binds and spawns the proxy when `[shadowsocks] enabled`; returns its
/// link (shown on the index page) while it runs.
pub async fn start(
    settings: &Settings,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<Option<String>> {
    let config = &settings.config.shadowsocks;
    if !config.enabled {
        return Ok(None);
    }
    let secret = secret::load_or_create(&settings.config.state_dir, KEY_FILE)?;
    let method = method(config.cipher);
    let password = chatmail_shadowsocks::password(&secret, method);
    let targets = targets(settings);
    for &listen in &config.listen {
        let options = Options {
            listen,
            method,
            password: password.clone(),
            targets: targets.clone(),
            max_connections: config.max_connections,
        };
        let server = chatmail_shadowsocks::bind(options)
            .await
            .with_context(|| format!("cannot listen for Shadowsocks on {listen}"))?;
        let stop = shutdown.clone();
        tasks.spawn(async move { Ok(server.run(stop).await?) });
    }
    Ok(Some(link(settings, &password)?))
}

/// `madmail proxy-link`: the link of a relay that has run with the proxy
/// enabled (it creates the key on its first start).
pub fn print_link(settings: &Settings) -> anyhow::Result<std::process::ExitCode> {
    let config = &settings.config.shadowsocks;
    anyhow::ensure!(
        config.enabled,
        "the Shadowsocks proxy is off: set `[shadowsocks] enabled = true`"
    );
    let secret = match secret::load(&settings.config.state_dir, KEY_FILE) {
        Err(SecretError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!(
                "no proxy key yet: the relay creates it when it first starts with the proxy enabled"
            )
        }
        other => other?,
    };
    let password = chatmail_shadowsocks::password(&secret, method(config.cipher));
    println!("{}", link(settings, &password)?);
    Ok(std::process::ExitCode::SUCCESS)
}

fn link(settings: &Settings, password: &str) -> anyhow::Result<String> {
    let config = &settings.config.shadowsocks;
    let host = config
        .host
        .clone()
        .unwrap_or_else(|| settings.domain.host());
    let port = config
        .port
        .or_else(|| config.listen.first().map(SocketAddr::port))
        .unwrap_or(8388);
    let remark = settings.domain.host();
    chatmail_shadowsocks::link(&host, port, method(config.cipher), password, &remark)
        .map_err(|e| anyhow::anyhow!("building the proxy link: {e}"))
}

fn method(cipher: ShadowsocksCipher) -> CipherKind {
    match cipher {
        ShadowsocksCipher::Chacha20IetfPoly1305 => CipherKind::CHACHA20_POLY1305,
        ShadowsocksCipher::Aes128Gcm => CipherKind::AES_128_GCM,
        ShadowsocksCipher::Aes256Gcm => CipherKind::AES_256_GCM,
        ShadowsocksCipher::Blake3Aes128Gcm => CipherKind::AEAD2022_BLAKE3_AES_128_GCM,
        ShadowsocksCipher::Blake3Aes256Gcm => CipherKind::AEAD2022_BLAKE3_AES_256_GCM,
        ShadowsocksCipher::Blake3Chacha20Poly1305 => CipherKind::AEAD2022_BLAKE3_CHACHA20_POLY1305,
    }
}

/// The relay's own client listeners (IMAP, submission, HTTPS) under its
/// names; port 25 and port 80 are not for clients and stay out of reach.
fn targets(settings: &Settings) -> Targets {
    let host = settings.domain.host();
    let names = match settings.domain {
        chatmail_config::MailDomain::Name(_) => {
            vec![format!("mta-sts.{host}"), format!("www.{host}"), host]
        }
        chatmail_config::MailDomain::Ip(_) => vec![host],
    };
    let listen = &settings.config.listen;
    let listeners = [
        &listen.imaps,
        &listen.imap,
        &listen.submissions,
        &listen.submission,
        &listen.https,
    ];
    Targets::new(names, listeners.into_iter().flatten().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configurable_cipher_has_its_name() {
        for cipher in [
            ShadowsocksCipher::Chacha20IetfPoly1305,
            ShadowsocksCipher::Aes128Gcm,
            ShadowsocksCipher::Aes256Gcm,
            ShadowsocksCipher::Blake3Aes128Gcm,
            ShadowsocksCipher::Blake3Aes256Gcm,
            ShadowsocksCipher::Blake3Chacha20Poly1305,
        ] {
            assert_eq!(method(cipher).to_string(), cipher.as_str());
        }
    }
}
