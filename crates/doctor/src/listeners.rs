//! Every `[listen]` address, answered as a client would see it: a TCP
//! connection, then the TLS handshake (implicit, or after `STARTTLS` on
//! 587, 143 and 25) and the greeting (SMTP `220`, IMAP `* OK`, an HTTP
//! status line). Each certificate shown is judged by module `cert`.

use std::net::SocketAddr;

use chatmail_config::schema::ListenConfig;
use chatmail_config::{MailDomain, Settings};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::probe::{self, Lines, ProbeError};
use crate::tls::Client;
use crate::{Check, cert};

/// One kind of listener, named like its `[listen]` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Submissions,
    Submission,
    Imaps,
    Imap,
    Https,
    Smtp,
    Http,
}

impl Service {
    const ALL: [Service; 7] = [
        Service::Submissions,
        Service::Submission,
        Service::Imaps,
        Service::Imap,
        Service::Https,
        Service::Smtp,
        Service::Http,
    ];

    /// The `[listen]` key.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Service::Submissions => "submissions",
            Service::Submission => "submission",
            Service::Imaps => "imaps",
            Service::Imap => "imap",
            Service::Https => "https",
            Service::Smtp => "smtp",
            Service::Http => "http",
        }
    }

    pub(crate) fn addresses(self, listen: &ListenConfig) -> &[SocketAddr] {
        match self {
            Service::Submissions => &listen.submissions,
            Service::Submission => &listen.submission,
            Service::Imaps => &listen.imaps,
            Service::Imap => &listen.imap,
            Service::Https => &listen.https,
            Service::Smtp => &listen.smtp,
            Service::Http => &listen.http,
        }
    }
}

/// What a listener answered, and the certificate it showed.
struct Answer {
    detail: String,
    chain: Option<Vec<CertificateDer<'static>>>,
}

/// One check per listener, and one per certificate presented.
pub(crate) async fn check(settings: &Settings) -> Vec<Check> {
    let client = match Client::new(settings) {
        Ok(client) => client,
        Err(e) => return vec![Check::fail("listen", e.to_string(), "check mail_domain")],
    };
    let listen = &settings.config.listen;
    let all = Service::ALL
        .iter()
        .flat_map(|&service| service.addresses(listen).iter().map(move |&a| (service, a)));
    let checks = all.map(|(service, addr)| check_one(settings, &client, service, addr));
    let mut out: Vec<Check> = futures::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .collect();
    if out.is_empty() {
        out.push(Check::fail(
            "listen",
            "no [listen] address is configured",
            "list the relay's addresses under [listen]",
        ));
    }
    out
}

async fn check_one(
    settings: &Settings,
    client: &Client,
    service: Service,
    addr: SocketAddr,
) -> Vec<Check> {
    let label = format!("{} {addr}", service.key());
    let target = probe::target(addr);
    match probe(client, service, target, &ehlo_host(settings)).await {
        Ok(answer) => {
            let mut checks = vec![Check::pass(format!("listen {label}"), answer.detail)];
            if let Some(chain) = answer.chain {
                checks.push(cert::check(settings, &label, &chain));
            }
            checks
        }
        Err(e) => {
            let detail = format!("{target}: {e}");
            let fix = unreachable_fix(service, addr, &e);
            vec![Check::fail(format!("listen {label}"), detail, &fix)]
        }
    }
}

async fn probe(
    client: &Client,
    service: Service,
    addr: SocketAddr,
    host: &str,
) -> Result<Answer, ProbeError> {
    let tcp = probe::connect(addr).await?;
    match service {
        Service::Submissions => implicit_smtp(client, tcp).await,
        Service::Imaps => implicit_imap(client, tcp).await,
        Service::Https => https(client, tcp, host).await,
        Service::Submission | Service::Smtp => {
            let mut session = smtp_starttls(client, tcp, host).await?;
            let _ = session.lines.quit().await;
            let detail = format!("SMTP greeting 220, STARTTLS to {}", session.version);
            Ok(Answer::tls(detail, session.chain))
        }
        Service::Imap => imap_starttls(client, tcp).await,
        Service::Http => {
            let mut lines = Lines::new(tcp);
            let (status, _) = lines.http(&probe::request("GET", "/", host)).await?;
            Ok(Answer::plain(format!("HTTP {status}")))
        }
    }
}

impl Answer {
    fn tls(detail: String, chain: Vec<CertificateDer<'static>>) -> Self {
        Self {
            detail,
            chain: Some(chain),
        }
    }

    fn plain(detail: String) -> Self {
        Self {
            detail,
            chain: None,
        }
    }
}

async fn implicit_smtp(client: &Client, tcp: TcpStream) -> Result<Answer, ProbeError> {
    let tls = client.mail(tcp).await?;
    let mut lines = Lines::new(tls.stream);
    lines.smtp_expect(220).await?;
    let _ = lines.quit().await;
    let detail = format!("SMTP greeting 220 over {}", tls.version);
    Ok(Answer::tls(detail, tls.chain))
}

async fn implicit_imap(client: &Client, tcp: TcpStream) -> Result<Answer, ProbeError> {
    let tls = client.mail(tcp).await?;
    let mut lines = Lines::new(tls.stream);
    lines.imap_greeting().await?;
    let _ = lines.imap_command("d2", "LOGOUT").await;
    let detail = format!("IMAP greeting over {}", tls.version);
    Ok(Answer::tls(detail, tls.chain))
}

async fn imap_starttls(client: &Client, tcp: TcpStream) -> Result<Answer, ProbeError> {
    let mut lines = Lines::new(tcp);
    lines.imap_greeting().await?;
    // RFC 9051 §6.2.1: the handshake starts after the tagged OK.
    lines.imap_command("d1", "STARTTLS").await?;
    let tls = client.mail(lines.into_inner()).await?;
    let mut lines = Lines::new(tls.stream);
    let _ = lines.imap_command("d2", "LOGOUT").await;
    let detail = format!("IMAP greeting, STARTTLS to {}", tls.version);
    Ok(Answer::tls(detail, tls.chain))
}

async fn https(client: &Client, tcp: TcpStream, host: &str) -> Result<Answer, ProbeError> {
    let tls = client.web(tcp).await?;
    let mut lines = Lines::new(tls.stream);
    let (status, _) = lines.http(&probe::request("GET", "/", host)).await?;
    let detail = format!("HTTP {status} over {}", tls.version);
    Ok(Answer::tls(detail, tls.chain))
}

/// An SMTP session after `EHLO` and `STARTTLS` (RFC 3207), ready for the
/// next command over TLS.
pub(crate) struct SmtpTls {
    pub lines: Lines<TlsStream<TcpStream>>,
    pub version: String,
    pub chain: Vec<CertificateDer<'static>>,
}

/// Greeting, `EHLO host` (which must offer `STARTTLS`), `STARTTLS`, then
/// the handshake.
pub(crate) async fn smtp_starttls(
    client: &Client,
    tcp: TcpStream,
    host: &str,
) -> Result<SmtpTls, ProbeError> {
    let mut lines = Lines::new(tcp);
    lines.smtp_expect(220).await?;
    let extensions = lines.ehlo(host).await?;
    if !extensions
        .iter()
        .any(|e| e.eq_ignore_ascii_case("STARTTLS"))
    {
        return Err(ProbeError::NoStartTls);
    }
    lines.send("STARTTLS").await?;
    lines.smtp_expect(220).await?;
    let tls = client.mail(lines.into_inner()).await?;
    Ok(SmtpTls {
        lines: Lines::new(tls.stream),
        version: tls.version,
        chain: tls.chain,
    })
}

/// The relay's own name, as `EHLO` argument and HTTP `Host`.
pub(crate) fn ehlo_host(settings: &Settings) -> String {
    match &settings.domain {
        MailDomain::Name(name) => name.clone(),
        MailDomain::Ip(ip) => format!("[{ip}]"),
    }
}

/// What to do when `addr` of `service` does not answer as it should.
pub(crate) fn unreachable_fix(service: Service, addr: SocketAddr, error: &ProbeError) -> String {
    let key = service.key();
    match error {
        ProbeError::Refused => format!(
            "start the relay (systemctl start madmail); if it runs, check that \
             [listen] {key} lists {addr} and read its log: another program may hold the port"
        ),
        ProbeError::Timeout(_) | ProbeError::Connect(_) => format!(
            "a firewall drops connections to {addr}, or the relay is overloaded: \
             check the firewall and the relay's log"
        ),
        ProbeError::Tls(_) | ProbeError::TlsSetup(_) => {
            "TLS does not work there: check the [tls] settings and the relay's log".into()
        }
        _ => format!("something else answers on {addr}, or the relay failed: read its log"),
    }
}
