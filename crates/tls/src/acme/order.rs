//! One certificate order, RFC 8555 §7: discover the directory, find or
//! create the account (its key is kept by the caller), order the names,
//! answer each authorization's HTTP-01 challenge through the
//! [`ChallengeStore`], finalize with a CSR for a fresh ECDSA P-256 key, and
//! download the chain.
//!
//! Every wait on the CA is a bounded poll: at most [`POLL_ATTEMPTS`]
//! requests per object, spaced from 250 ms up to 4 s.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls_acme::acme::{Account, AuthStatus, Directory, Order, OrderStatus, Problem};

use super::AcmeError;
use super::challenges::ChallengeStore;

/// Most status requests for one authorization or order (about 4 minutes).
pub const POLL_ATTEMPTS: u32 = 64;

/// How to reach the CA and who we are there.
pub(crate) struct Client {
    pub tls: Arc<ClientConfig>,
    pub directory: String,
    pub contact: Vec<String>,
    /// PKCS#8 DER of the account's ECDSA P-256 key.
    pub account_key: Vec<u8>,
}

/// A freshly issued certificate.
pub(crate) struct Issued {
    /// The PEM chain, leaf first, as the CA sent it.
    pub chain_pem: String,
    /// The PEM PKCS#8 private key of the leaf.
    pub key_pem: String,
}

/// Orders and downloads a certificate for `names`.
pub(crate) async fn issue(
    client: &Client,
    names: &[String],
    challenges: &Arc<ChallengeStore>,
) -> Result<Issued, AcmeError> {
    let tls = &client.tls;
    let directory = Directory::discover(tls, &client.directory).await?;
    // RFC 8555 §7.3: an existing key finds its account again.
    let account =
        Account::create_with_keypair(tls, directory, &client.contact, &client.account_key).await?;
    let (order_url, order) = account.new_order(tls, names.to_vec()).await?;
    for auth_url in &order.authorizations {
        authorize(&account, tls, auth_url, challenges).await?;
    }
    let order = poll_order(&account, tls, &order_url, |s| *s != OrderStatus::Pending).await?;
    if order.status != OrderStatus::Ready {
        return Err(rejected("order", &order.status, order.error.as_ref()));
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let csr = rcgen::CertificateParams::new(names.to_vec())?.serialize_request(&key)?;
    // RFC 8555 §7.4: finalize, then wait while the CA is processing.
    let order = account.finalize(tls, &order.finalize, csr.der()).await?;
    let order = match order.status {
        OrderStatus::Valid { .. } => order,
        _ => poll_order(&account, tls, &order_url, |s| *s != OrderStatus::Processing).await?,
    };
    let OrderStatus::Valid { certificate } = &order.status else {
        return Err(rejected("order", &order.status, order.error.as_ref()));
    };
    let chain_pem = account.certificate(tls, certificate).await?;
    Ok(Issued {
        chain_pem,
        key_pem: key.serialize_pem(),
    })
}

/// RFC 8555 §7.5.1: answers a pending authorization's HTTP-01 challenge and
/// waits for the CA's verdict.
async fn authorize(
    account: &Account,
    tls: &Arc<ClientConfig>,
    url: &str,
    challenges: &Arc<ChallengeStore>,
) -> Result<(), AcmeError> {
    let auth = account.auth(tls, url).await?;
    match auth.status {
        AuthStatus::Valid => return Ok(()),
        AuthStatus::Pending => {}
        other => return Err(AcmeError::Rejected(format!("authorization {other:?}"))),
    }
    let (challenge, key_authorization) = account.http_01(&auth.challenges)?;
    let _published = challenges
        .publish(challenge.token.clone(), key_authorization)
        .ok_or(AcmeError::TooManyChallenges)?;
    account.challenge(tls, &challenge.url).await?;
    for attempt in 0..POLL_ATTEMPTS {
        tokio::time::sleep(poll_delay(attempt)).await;
        let auth = account.auth(tls, url).await?;
        match auth.status {
            AuthStatus::Pending => continue,
            AuthStatus::Valid => return Ok(()),
            other => {
                let problem = auth.challenges.iter().find_map(|c| c.error.as_ref());
                return Err(rejected("authorization", &other, problem));
            }
        }
    }
    Err(AcmeError::Timeout("authorization"))
}

/// Fetches the order until `done` holds for its status.
async fn poll_order(
    account: &Account,
    tls: &Arc<ClientConfig>,
    url: &str,
    done: impl Fn(&OrderStatus) -> bool,
) -> Result<Order, AcmeError> {
    for attempt in 0..POLL_ATTEMPTS {
        tokio::time::sleep(poll_delay(attempt)).await;
        let order = account.order(tls, url).await?;
        if done(&order.status) {
            return Ok(order);
        }
    }
    Err(AcmeError::Timeout("order"))
}

/// 250 ms, doubling up to 4 s.
fn poll_delay(attempt: u32) -> Duration {
    Duration::from_millis(250 << attempt.min(4))
}

fn rejected(what: &str, status: &dyn std::fmt::Debug, problem: Option<&Problem>) -> AcmeError {
    let detail = problem
        .and_then(|p| p.detail.as_deref())
        .unwrap_or("no detail");
    // The CA's text, bounded: it ends up in logs.
    let detail: String = detail.chars().take(300).collect();
    AcmeError::Rejected(format!("{what} {status:?}: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_backs_off_to_four_seconds() {
        assert_eq!(poll_delay(0), Duration::from_millis(250));
        assert_eq!(poll_delay(3), Duration::from_secs(2));
        assert_eq!(poll_delay(40), Duration::from_secs(4));
    }
}
