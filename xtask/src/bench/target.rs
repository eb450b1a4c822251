//! `cargo xtask bench --target`: the server under load is not a relay the
//! bench starts but any SMTP/IMAP server already running (madmail, or
//! another relay for a side-by-side run), given by its address, its
//! implicit-TLS ports, the CA its certificate chains to, and accounts.
//!
//! The credentials file holds one account per line, `address password`
//! (blank lines and `#` comments skipped): the first `--senders` lines
//! submit, the next `--recipients` lines wait in IDLE. The accounts must
//! exist, unless the server creates them on first login as a chatmail
//! relay does. The certificate must name the target's IP address.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// Where the load goes: submission and IMAP over implicit TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) submissions: SocketAddr,
    pub(crate) imaps: SocketAddr,
}

impl std::str::FromStr for Target {
    type Err = anyhow::Error;

    /// `IP:SMTPS,IMAPS`, e.g. `127.0.0.1:465,993`.
    fn from_str(text: &str) -> anyhow::Result<Self> {
        let usage = || anyhow::anyhow!("--target {text:?}: expected IP:SMTPS_PORT,IMAPS_PORT");
        let (ip, ports) = text.rsplit_once(':').ok_or_else(usage)?;
        let ip: IpAddr = ip.trim_matches(['[', ']']).parse().map_err(|_| usage())?;
        let (smtps, imaps) = ports.split_once(',').ok_or_else(usage)?;
        let port = |p: &str| p.trim().parse::<u16>().map_err(|_| usage());
        Ok(Self {
            submissions: SocketAddr::new(ip, port(smtps)?),
            imaps: SocketAddr::new(ip, port(imaps)?),
        })
    }
}

/// One account of the credentials file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Account {
    pub(crate) address: String,
    pub(crate) password: String,
}

/// The senders and the recipients, in this order, from `text`.
pub(crate) fn split_accounts(
    text: &str,
    senders: usize,
    recipients: usize,
) -> anyhow::Result<(Vec<Account>, Vec<Account>)> {
    let mut accounts = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((address, password)) = line.split_once(char::is_whitespace) else {
            anyhow::bail!("credentials line {}: expected `address password`", n + 1);
        };
        let password = password.trim().to_owned();
        accounts.push(Account {
            address: address.to_owned(),
            password,
        });
    }
    let needed = senders + recipients;
    if accounts.len() < needed {
        anyhow::bail!(
            "the credentials file holds {} accounts; {senders} senders and {recipients} \
             recipients need {needed}",
            accounts.len()
        );
    }
    let recipients = accounts[senders..needed].to_vec();
    accounts.truncate(senders);
    Ok((accounts, recipients))
}

/// [`split_accounts`] of the file at `path`.
pub(crate) fn read_accounts(
    path: &Path,
    senders: usize,
    recipients: usize,
) -> anyhow::Result<(Vec<Account>, Vec<Account>)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("credentials {}: {e}", path.display()))?;
    split_accounts(&text, senders, recipients)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_names_the_ip_and_both_ports() {
        let target: Target = "127.0.0.7:465,993".parse().unwrap();
        assert_eq!(target.submissions, "127.0.0.7:465".parse().unwrap());
        assert_eq!(target.imaps, "127.0.0.7:993".parse().unwrap());
        let v6: Target = "[::1]:10465,10993".parse().unwrap();
        assert_eq!(v6.imaps, "[::1]:10993".parse().unwrap());
        for bad in [
            "127.0.0.7",
            "127.0.0.7:465",
            "host:465,993",
            "127.0.0.7:465,x",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }

    #[test]
    fn senders_come_first_then_recipients() {
        let text = "# accounts\na@x pw a\n\nb@x pwb\nc@x pwc\n";
        let (senders, recipients) = split_accounts(text, 1, 2).unwrap();
        assert_eq!(senders[0].address, "a@x");
        assert_eq!(senders[0].password, "pw a");
        let addresses: Vec<_> = recipients.iter().map(|a| a.address.as_str()).collect();
        assert_eq!(addresses, ["b@x", "c@x"]);
        assert!(
            split_accounts(text, 2, 2).is_err(),
            "four needed, three given"
        );
        assert!(split_accounts("lonely\n", 1, 0).is_err());
    }
}
