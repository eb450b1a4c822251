//! chatmail-shadowsocks: the Shadowsocks proxy that lets clients behind
//! censoring networks reach this relay, and the `ss://` link they import.
//!
//! Flow: [`server::bind`] listens; each connection is decrypted with the
//! installation's key ([`password`]) by the `shadowsocks` crate, which
//! reads the destination the client asks for; [`Targets::resolve`] maps it
//! to one of the relay's own listeners (or refuses it); the proxy then
//! copies bytes between the client and that listener until either side
//! closes. [`link`] gives the SIP002 `ss://` link of the proxy.
//!
//! Invariants:
//! - the proxy never connects anywhere but the relay's own client
//!   listeners (IMAP, submission, HTTPS): a destination naming another host
//!   or another port is closed unanswered, so the proxy is no open relay
//!   and no door into the operator's network;
//! - connections to a loopback listener come from a loopback source address
//!   derived from the client's address (keyed hash into 127.0.0.0/8), so the
//!   services behind keep counting per-client limits per client instead of
//!   seeing every proxied client as one;
//! - a failed handshake is answered like the reference servers answer it
//!   (read until the client gives up, or reset for Shadowsocks 2022), so a
//!   prober learns nothing; nothing here logs an address.

pub mod server;
mod targets;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use shadowsocks::config::{ServerAddr, ServerConfig, ServerConfigError};

pub use server::{Options, Server, bind};
pub use shadowsocks::crypto::CipherKind;
pub use targets::Targets;

/// The password of `method` made from the installation secret: Shadowsocks
/// 2022 wants the base64 of exactly a key's length of bytes, the older
/// AEAD ciphers take any string (they derive the key from it).
pub fn password(secret: &[u8; 32], method: CipherKind) -> String {
    if method.is_aead_2022() {
        STANDARD.encode(&secret[..method.key_len().min(secret.len())])
    } else {
        STANDARD.encode(secret)
    }
}

/// Why no `ss://` link could be made: the password does not fit the
/// cipher (a Shadowsocks 2022 cipher wants the base64 of a key of its
/// length, see [`password`]).
#[derive(Debug, thiserror::Error)]
#[error("proxy password does not fit the cipher: {0}")]
pub struct LinkError(#[from] ServerConfigError);

/// The SIP002 `ss://` link for a proxy at `host:port`, labelled `remark`.
pub fn link(
    host: &str,
    port: u16,
    method: CipherKind,
    password: &str,
    remark: &str,
) -> Result<String, LinkError> {
    let addr = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ServerAddr::SocketAddr((ip, port).into()),
        Err(_) => ServerAddr::DomainName(host.to_owned(), port),
    };
    let mut config = ServerConfig::new(addr, password, method)?;
    config.set_remarks(remark);
    Ok(config.to_url())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_carry_the_cipher_password_and_address() {
        let secret = [7; 32];
        let method = CipherKind::CHACHA20_POLY1305;
        let pw = password(&secret, method);
        let url = link("relay.example", 8388, method, &pw, "relay.example").unwrap();
        let parsed = ServerConfig::from_url(&url).unwrap();
        assert_eq!(parsed.method(), method);
        assert_eq!(parsed.password(), pw);
        assert_eq!(parsed.addr().to_string(), "relay.example:8388");
        assert_eq!(parsed.remarks(), Some("relay.example"));
    }

    #[test]
    fn a_2022_cipher_refuses_a_password_that_is_no_key() {
        let method = CipherKind::AEAD2022_BLAKE3_AES_128_GCM;
        let got = link("relay.example", 8388, method, "not base64!", "x");
        assert!(matches!(got, Err(LinkError(_))), "{got:?}");
    }

    #[test]
    fn shadowsocks_2022_passwords_are_keys_of_the_cipher_length() {
        let secret = std::array::from_fn(|i| i as u8);
        for method in [
            CipherKind::AEAD2022_BLAKE3_AES_128_GCM,
            CipherKind::AEAD2022_BLAKE3_AES_256_GCM,
            CipherKind::AEAD2022_BLAKE3_CHACHA20_POLY1305,
        ] {
            let pw = password(&secret, method);
            assert_eq!(STANDARD.decode(&pw).unwrap().len(), method.key_len());
            let url = link("192.0.2.1", 8388, method, &pw, "x").unwrap();
            assert_eq!(ServerConfig::from_url(&url).unwrap().password(), pw);
        }
    }
}
