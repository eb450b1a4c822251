//! `madmail demo`: a complete relay on loopback for a quick trial.
//!
//! The relay is IP-only (`user@[127.0.0.1]`) with a self-signed certificate
//! in a temporary state directory that is deleted on exit. Two accounts are
//! created and printed as `dclogin:` links and terminal QR codes that name
//! the hosts and ports, so a Delta Chat client on this machine can scan or
//! paste them. The admin API and its web UI are on, and the UI's address
//! and token are printed.

use std::net::{IpAddr, SocketAddr};

use chatmail_config::Settings;

/// Options of `madmail demo`.
#[derive(clap::Args)]
pub struct DemoOptions {
    /// Address to listen on (an IPv4 address; it is also the mail domain).
    #[arg(long, default_value = "127.0.0.1")]
    ip: std::net::Ipv4Addr,
    /// Use the standard ports (465, 587, 993, 143, 443, 25; needs
    /// privileges) instead of 10465, 10587, 10993, 10143, 10443, 10025.
    #[arg(long)]
    standard_ports: bool,
    /// Keep state in this directory instead of a temporary one.
    #[arg(long)]
    state_dir: Option<std::path::PathBuf>,
    /// Log filter (tracing syntax); the demo logs at `info` by default.
    #[arg(long, default_value = "info")]
    log: String,
}

struct Ports {
    submissions: u16,
    submission: u16,
    imaps: u16,
    imap: u16,
    https: u16,
    smtp: u16,
}

impl Ports {
    fn new(standard: bool) -> Self {
        let offset = if standard { 0 } else { 10_000 };
        Self {
            submissions: 465 + offset,
            submission: 587 + offset,
            imaps: 993 + offset,
            imap: 143 + offset,
            https: 443 + offset,
            smtp: 25 + offset,
        }
    }
}

/// Runs the demo relay until Ctrl-C.
pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let temp = tempfile::Builder::new().prefix("madmail-demo-").tempdir()?;
    let state_dir = options
        .state_dir
        .clone()
        .unwrap_or_else(|| temp.path().into());
    let ports = Ports::new(options.standard_ports);
    let settings = settings(&options, &ports, &state_dir)?;
    crate::logging::init(&settings.config.log);
    let relay = crate::server::start(settings, None).await?;
    println!(
        "madmail demo relay on {} (state in {})\n",
        options.ip,
        state_dir.display()
    );
    for name in ["first", "second"] {
        let (email, password) = relay.accounts.generate();
        relay.accounts.add(&email, &password).await?;
        let link = dclogin(&email, &password, options.ip.into(), &ports);
        println!("Account {name}: {email}\n{}\n{link}\n", qr(&link));
    }
    println!(
        "More accounts: POST {}/new  (or scan DCACCOUNT:{}/new)",
        relay.base_url, relay.base_url
    );
    let token = chatmail_admin::load_token(&state_dir, false)?;
    println!(
        "Admin web UI: {}{}/  (sign in with {token})",
        relay.base_url,
        admin_web_path()
    );
    println!("Press Ctrl-C to stop.");
    tokio::signal::ctrl_c().await?;
    relay.stop().await;
    Ok(())
}

fn settings(
    options: &DemoOptions,
    ports: &Ports,
    state_dir: &std::path::Path,
) -> anyhow::Result<Settings> {
    let at = |port: u16| format!("[\"{}\"]", SocketAddr::new(options.ip.into(), port));
    let text = format!(
        "mail_domain = \"{ip}\"\nstate_dir = {state:?}\n\
         [log]\nno_log = false\nlevel = {log:?}\n\
         [listen]\nsubmissions = {}\nsubmission = {}\nimaps = {}\nimap = {}\nhttps = {}\nsmtp = {}\nhttp = []\n\
         [tls]\nmode = \"self-signed\"\n[admin]\nenabled = true\nweb_path = {web:?}\n",
        at(ports.submissions),
        at(ports.submission),
        at(ports.imaps),
        at(ports.imap),
        at(ports.https),
        at(ports.smtp),
        ip = options.ip,
        state = state_dir.display().to_string(),
        log = options.log,
        web = admin_web_path(),
    );
    Ok(chatmail_config::parse(&text)?)
}

/// Where the demo serves the admin web UI.
fn admin_web_path() -> &'static str {
    "/admin"
}

/// A login link with explicit servers, since the demo uses its own ports.
fn dclogin(email: &str, password: &str, ip: IpAddr, ports: &Ports) -> String {
    format!(
        "dclogin:{email}?p={}&v=1&ih={ip}&ip={}&is=ssl&sh={ip}&sp={}&ss=ssl&ic=3",
        urlencoding::encode(password),
        ports.imaps,
        ports.submissions,
    )
}

fn qr(text: &str) -> String {
    match qrcode::QrCode::new(text.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::unicode::Dense1x2>()
            .quiet_zone(true)
            .build(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_links_name_servers_and_ports() {
        let link = dclogin(
            "abc@[127.0.0.1]",
            "pw",
            "127.0.0.1".parse().unwrap(),
            &Ports::new(false),
        );
        assert_eq!(
            link,
            "dclogin:abc@[127.0.0.1]?p=pw&v=1&ih=127.0.0.1&ip=10993&is=ssl&sh=127.0.0.1&sp=10465&ss=ssl&ic=3"
        );
        assert!(qr(&link).lines().count() > 20);
    }
}
