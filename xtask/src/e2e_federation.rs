//! The federation relays of `cargo xtask e2e` and the DNS server they find
//! each other through.
//!
//! Flow of [`start`]:
//! 1. four relays on the standard ports of their own loopback address:
//!    `_relay1.test` (127.0.0.2) and `_relay2.test` (127.0.0.3) deliver to
//!    each other as in production (MX lookup, `POST /mxdeliv`, SMTP
//!    fallback); `_relay3.test` (127.0.0.4) and `_relay4.test` (127.0.0.5)
//!    reach each other through static routes without an HTTPS port, so only
//!    SMTP on port 25 can carry their mail;
//! 2. each relay's config is written and `madmail dns --json` run on it,
//!    which creates the DKIM key and prints the records to publish;
//! 3. `dnsmasq` on 127.0.0.1 (a free port) serves those MX and TXT records
//!    plus an A record per domain; every named relay asks only it;
//! 4. unless `--no-cmping`, two IP-only relays (127.0.0.1 and 127.0.0.6)
//!    for `cmping` on one relay and across two;
//! 5. two pytest runs: every scenario with relay 1 as `MADMAIL_*` and
//!    relay 2 as `MADMAIL2_*` (federation expected over `/mxdeliv`), then
//!    `test_federation.py` against relays 3 and 4 (expected over SMTP).
//!
//! Invariant: the DNS server outlives the relays (it is dropped after them)
//! and is killed when dropped.

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::{E2eOptions, PytestRun, Relay, RelaySpec, Topology};

/// Debian's `dnsmasq-base` installs it here.
const DNSMASQ: &str = "/usr/sbin/dnsmasq";
/// How long dnsmasq may take to answer its first query.
const DNS_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest character-string in a TXT record (RFC 1035 §3.3.14).
const TXT_CHUNK: usize = 255;

/// `127.0.0.<last>`.
fn loopback(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// Starts the DNS server and every relay; returns them with the pytest runs.
pub(crate) fn start(madmail: &Path, scratch: &Path, opts: &E2eOptions) -> Result<Topology> {
    let dns_port = free_udp_port()?;
    let named = named_relays(dns_port)?;
    let mut zone = String::new();
    for spec in &named {
        let config = Relay::write_config(scratch, spec, &opts.log_level)?;
        let records = published_records(madmail, &config)?;
        zone.push_str(&zone_lines(spec, &records)?);
    }
    let dns = Dnsmasq::start(scratch, dns_port, &zone)?;
    dns.wait_answering(&named[0].domain)?;

    let mut specs = named;
    if !opts.no_cmping {
        specs.push(RelaySpec::standard("cmping1", "127.0.0.1", loopback(1)));
        specs.push(RelaySpec::standard("cmping2", "127.0.0.6", loopback(6)));
    }
    let mut relays = Vec::new();
    for spec in &specs {
        relays.push(Relay::start(madmail, scratch, spec, &opts.log_level)?);
    }
    for (relay, spec) in relays.iter_mut().zip(&specs) {
        relay.wait_ready().with_context(|| {
            format!(
                "relay {} needs ports 993, 465, 143, 587, 443 and 25 on {} \
                 (free, and root to bind them); --no-federation runs without it",
                spec.name,
                spec.ip()
            )
        })?;
    }
    let runs = pytest_runs(&specs, &relays, opts);
    Ok(Topology {
        relays,
        runs,
        _dns: Some(dns),
    })
}

/// Relays 1 to 4 (see the module docs), all resolving through
/// `127.0.0.1:dns_port`.
fn named_relays(dns_port: u16) -> Result<Vec<RelaySpec>> {
    let dns = format!("\n[federation]\ndns_servers = [\"127.0.0.1:{dns_port}\"]\n");
    let smtp_only = |peer: &str, ip: Ipv4Addr| {
        format!("{dns}\n[federation.static_routes.\"{peer}\"]\nhost = \"{ip}\"\nsmtp_port = 25\n")
    };
    let relay = |name, domain, last, extra: String| {
        let mut spec = RelaySpec::standard(name, domain, loopback(last));
        spec.extra_toml = extra;
        spec
    };
    Ok(vec![
        relay("relay1", "_relay1.test", 2, dns.clone()).with_features()?,
        relay("relay2", "_relay2.test", 3, dns.clone()).with_features()?,
        relay(
            "relay3",
            "_relay3.test",
            4,
            smtp_only("_relay4.test", loopback(5)),
        ),
        relay(
            "relay4",
            "_relay4.test",
            5,
            smtp_only("_relay3.test", loopback(4)),
        ),
    ])
}

/// The pytest runs over `specs` (relays 1 to 4, then the cmping pair).
fn pytest_runs(specs: &[RelaySpec], relays: &[Relay], opts: &E2eOptions) -> Vec<PytestRun> {
    let pair = |first: usize, via: &str| {
        let mut env = specs[first].scenario_env("MADMAIL");
        env.extend(specs[first + 1].scenario_env("MADMAIL2"));
        env.push((
            "MADMAIL_LOG".into(),
            relays[first].log.display().to_string(),
        ));
        env.push((
            "MADMAIL_CONFIG".into(),
            relays[first].config.display().to_string(),
        ));
        env.push((
            "MADMAIL2_LOG".into(),
            relays[first + 1].log.display().to_string(),
        ));
        env.push(("MADMAIL_FEDERATION_VIA".into(), via.to_owned()));
        env
    };
    let mut everything = pair(0, "mxdeliv");
    if !opts.no_cmping {
        env_push(&mut everything, "MADMAIL_CMPING_RELAY", &specs[4].domain);
        env_push(&mut everything, "MADMAIL_CMPING_RELAY2", &specs[5].domain);
    }
    vec![
        PytestRun {
            label: "relays 1 and 2, federation over /mxdeliv",
            paths: vec!["tests-vm/scenarios"],
            env: everything,
        },
        PytestRun {
            label: "relays 3 and 4, federation over SMTP only",
            paths: vec!["tests-vm/scenarios/test_federation.py"],
            env: pair(2, "smtp"),
        },
    ]
}

fn env_push(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    env.push((key.to_owned(), value.to_owned()));
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
fn free_udp_port() -> Result<u16> {
    let socket = UdpSocket::bind("127.0.0.1:0").context("finding a free UDP port")?;
    Ok(socket.local_addr()?.port())
}

/// One record as printed by `madmail dns --json`.
#[derive(Debug, Default, PartialEq)]
struct Published {
    name: String,
    kind: String,
    value: String,
}

/// Runs `madmail dns --config CONFIG --json` (which creates the DKIM key
/// if missing) and returns its records.
fn published_records(madmail: &Path, config: &Path) -> Result<Vec<Published>> {
    let output = Command::new(madmail)
        .args(["dns", "--json", "--config"])
        .arg(config)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {} dns", madmail.display()))?;
    ensure!(
        output.status.success(),
        "madmail dns --config {} failed: {}",
        config.display(),
        output.status
    );
    let text = String::from_utf8(output.stdout).context("madmail dns printed non-UTF-8")?;
    let records = json_records(&text)?;
    ensure!(!records.is_empty(), "madmail dns printed no records");
    Ok(records)
}

/// dnsmasq configuration lines for one relay: an A record for its domain
/// and every MX and TXT record the relay asks for.
fn zone_lines(spec: &RelaySpec, records: &[Published]) -> Result<String> {
    let mut out = format!("host-record={},{}\n", spec.domain, spec.ip());
    for record in records {
        let name = record.name.trim_end_matches('.');
        match record.kind.as_str() {
            "MX" => {
                let (preference, exchange) = record
                    .value
                    .split_once(' ')
                    .with_context(|| format!("MX value {:?}", record.value))?;
                let exchange = exchange.trim_end_matches('.');
                writeln!(out, "mx-host={name},{exchange},{preference}")?;
            }
            "TXT" => writeln!(out, "txt-record={name},{}", txt_strings(&record.value)?)?,
            _ => {}
        }
    }
    Ok(out)
}

/// TXT data as dnsmasq's quoted, comma-separated character-strings of at
/// most 255 bytes each (RFC 1035 §3.3.14).
fn txt_strings(value: &str) -> Result<String> {
    ensure!(
        value.is_ascii() && !value.contains(['"', '\\', '\n']),
        "TXT data {value:?} needs quoting dnsmasq does not do"
    );
    let chunks: Vec<String> = value
        .as_bytes()
        .chunks(TXT_CHUNK)
        .map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk)))
        .collect();
    Ok(chunks.join(","))
}

/// Reads the flat array of objects `madmail dns --json` prints, keeping
/// the string members `name`, `type` and `value`.
fn json_records(text: &str) -> Result<Vec<Published>> {
    let mut records = Vec::new();
    let mut chars = text.chars().peekable();
    let mut current: Option<Published> = None;
    let mut key: Option<String> = None;
    while let Some(c) = chars.next() {
        match c {
            '{' => current = Some(Published::default()),
            '}' => records.extend(current.take()),
            '"' => {
                let string = json_string(&mut chars)?;
                match (key.take(), current.as_mut()) {
                    (Some(k), Some(record)) => match k.as_str() {
                        "name" => record.name = string,
                        "type" => record.kind = string,
                        "value" => record.value = string,
                        _ => {}
                    },
                    (None, Some(_)) => key = Some(string),
                    _ => bail!("string outside an object in madmail dns output"),
                }
            }
            // A non-string member value (`true`): the key is used up.
            ',' => key = None,
            _ => {}
        }
    }
    Ok(records)
}

/// The rest of a JSON string after its opening quote, unescaped.
fn json_string(chars: &mut impl Iterator<Item = char>) -> Result<String> {
    let mut out = String::new();
    loop {
        match chars.next().context("unterminated string in JSON")? {
            '"' => return Ok(out),
            '\\' => match chars.next().context("unterminated escape in JSON")? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    let code = u32::from_str_radix(&hex, 16).context("bad \\u escape")?;
                    out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
}

/// A dnsmasq process serving the relays' records; killed when dropped.
pub(crate) struct Dnsmasq {
    child: Child,
    port: u16,
}

impl Dnsmasq {
    /// Writes `zone` (dnsmasq option lines) to a config file and starts
    /// dnsmasq on `127.0.0.1:port`, answering NXDOMAIN for every other
    /// name under `.test` and forwarding nothing.
    fn start(scratch: &Path, port: u16, zone: &str) -> Result<Self> {
        ensure!(
            Path::new(DNSMASQ).exists(),
            "{DNSMASQ} is missing: install Debian's `dnsmasq-base` \
             (or run with --no-federation)"
        );
        let dir = scratch.join("dns");
        fs::create_dir_all(&dir)?;
        let config: PathBuf = dir.join("dnsmasq.conf");
        fs::write(&config, zone).with_context(|| format!("writing {}", config.display()))?;
        let log = fs::File::create(dir.join("dnsmasq.log"))?;
        let child = Command::new(DNSMASQ)
            .arg("--no-daemon")
            .args([
                "--no-resolv",
                "--no-hosts",
                "--pid-file=",
                "--bind-interfaces",
            ])
            .args([
                "--listen-address=127.0.0.1",
                "--local=/test/",
                "--log-queries",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--conf-file={}", config.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {DNSMASQ}"))?;
        println!("dnsmasq on 127.0.0.1:{port}, zone: {}", config.display());
        Ok(Self { child, port })
    }

    /// Polls until dnsmasq answers an A query for `name` with an address.
    fn wait_answering(&self, name: &str) -> Result<()> {
        let deadline = Instant::now() + DNS_READY_TIMEOUT;
        while Instant::now() < deadline {
            if query_a(self.port, name).unwrap_or(false) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "dnsmasq on 127.0.0.1:{} does not answer for {name}",
            self.port
        )
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        // It may have exited on its own: nothing left to do then.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one A query for `name` to `127.0.0.1:port`; `Ok(true)` when the
/// answer has no error and at least one record (RFC 1035 §4.1).
fn query_a(port: u16, name: &str) -> Result<bool> {
    let mut query = vec![0x6d, 0x6d, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        ensure!(label.len() < 64, "label {label:?} too long");
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(300)))?;
    socket.send_to(&query, ("127.0.0.1", port))?;
    let mut answer = [0u8; 512];
    let len = socket.recv(&mut answer)?;
    ensure!(len >= 12 && answer[..2] == query[..2], "not an answer");
    let rcode = answer[3] & 0x0f;
    let answers = u16::from_be_bytes([answer[6], answer[7]]);
    Ok(rcode == 0 && answers > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DNS_JSON: &str = r#"[
  {
    "name": "_relay1.test.",
    "type": "MX",
    "value": "10 _relay1.test.",
    "required": true
  },
  {
    "name": "opendkim._domainkey._relay1.test.",
    "type": "TXT",
    "value": "v=DKIM1; k=rsa; p=AB\/CD",
    "required": true
  },
  {
    "name": "_relay1.test.",
    "type": "CAA",
    "value": "0 issue \"letsencrypt.org\"",
    "required": false
  }
]"#;

    fn relay1() -> RelaySpec {
        named_relays(5353).unwrap().remove(0)
    }

    #[test]
    fn json_records_keep_name_type_and_unescaped_value() {
        let records = json_records(DNS_JSON).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[1].name, "opendkim._domainkey._relay1.test.");
        assert_eq!(records[1].kind, "TXT");
        assert_eq!(records[1].value, "v=DKIM1; k=rsa; p=AB/CD");
        assert_eq!(records[2].value, "0 issue \"letsencrypt.org\"");
    }

    #[test]
    fn zone_serves_the_domain_its_mx_and_its_txt_records_only() {
        let zone = zone_lines(&relay1(), &json_records(DNS_JSON).unwrap()).unwrap();
        assert_eq!(
            zone,
            "host-record=_relay1.test,127.0.0.2\n\
             mx-host=_relay1.test,_relay1.test,10\n\
             txt-record=opendkim._domainkey._relay1.test,\"v=DKIM1; k=rsa; p=AB/CD\"\n"
        );
    }

    #[test]
    fn long_txt_data_is_split_into_strings_of_at_most_255_bytes() {
        let value = "x".repeat(600);
        let strings = txt_strings(&value).unwrap();
        let parts: Vec<&str> = strings.split(',').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].len(), 255 + 2);
        assert_eq!(parts[2].len(), 90 + 2);
        assert!(txt_strings("a\"b").is_err());
    }

    #[test]
    fn smtp_only_relays_route_to_each_other_without_an_https_port() {
        let specs = named_relays(5353).unwrap();
        let settings =
            chatmail_config::parse(&specs[2].config_toml(Path::new("/tmp/s"), "info")).unwrap();
        let route = &settings.config.federation.static_routes["_relay4.test"];
        assert_eq!((route.host.as_str(), route.https_port), ("127.0.0.5", None));
        assert_eq!(route.smtp_port, 25);
        let first =
            chatmail_config::parse(&specs[0].config_toml(Path::new("/tmp/s"), "info")).unwrap();
        assert!(first.config.federation.static_routes.is_empty());
        assert_eq!(first.config.federation.dns_servers[0].port(), 5353);
    }

    #[test]
    fn dnsmasq_serves_a_relay_domain_with_an_underscore() {
        if !Path::new(DNSMASQ).exists() {
            eprintln!("skipped: {DNSMASQ} missing");
            return;
        }
        let scratch = std::env::temp_dir().join(format!("xtask-dns-{}", std::process::id()));
        let port = free_udp_port().unwrap();
        let zone = zone_lines(&relay1(), &json_records(DNS_JSON).unwrap()).unwrap();
        let dns = Dnsmasq::start(&scratch, port, &zone).unwrap();
        dns.wait_answering("_relay1.test").unwrap();
        assert!(!query_a(port, "_nowhere.test").unwrap());
        drop(dns);
        let _ = fs::remove_dir_all(scratch);
    }
}
