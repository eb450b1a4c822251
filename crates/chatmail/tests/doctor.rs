//! `madmail doctor` and `madmail dns --check` against a real relay process
//! and a real DNS server: relay N of these tests has the domain
//! `_doctorN.test` and listens on `127.0.66.N`; a `dnsmasq` on 127.0.0.1
//! (a free port, named in the relay's `[federation] dns_servers`) serves
//! the records `madmail dns --json` prints plus an A record for the
//! relay's address. Each test then breaks one thing (the DKIM record, the
//! certificate, a listener, a record) and expects that check, and only
//! that one, to fail with its name. Skipped when dnsmasq is not
//! installed (Debian's `dnsmasq-base`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chatmail_testkit::relay::{RelayOptions, RelayProcess, closed_port};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use serde_json::Value;

const DNSMASQ: &str = "/usr/sbin/dnsmasq";
/// ed25519 keys: generating RSA keys in a debug build is slow.
const EXTRA: &str = "[dkim]\nalgorithm = \"ed25519\"\n";

fn binary() -> &'static Path {
    env!("CARGO_BIN_EXE_madmail").as_ref()
}

fn dnsmasq_missing() -> bool {
    let missing = !Path::new(DNSMASQ).exists();
    if missing {
        eprintln!("skipped: {DNSMASQ} is missing (install Debian's `dnsmasq-base`)");
    }
    missing
}

/// One record of `madmail dns --json`.
#[derive(Debug, Clone)]
struct Published {
    name: String,
    kind: String,
    value: String,
}

/// A dnsmasq process, killed when dropped.
struct Dnsmasq {
    child: Child,
    /// Holds the configuration file.
    _dir: tempfile::TempDir,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The dnsmasq configuration line serving `record` (names without the
/// trailing dot; TXT data as quoted strings of at most 255 bytes).
fn option(record: &Published) -> String {
    let name = record.name.trim_end_matches('.');
    let host = |value: &str| value.trim_end_matches('.').to_owned();
    let words: Vec<&str> = record.value.split_whitespace().collect();
    match record.kind.as_str() {
        "MX" => format!("mx-host={name},{},{}", host(words[1]), words[0]),
        "TXT" => {
            let chunks: Vec<String> = record
                .value
                .as_bytes()
                .chunks(255)
                .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
                .collect();
            format!("txt-record={name},{}", chunks.join(","))
        }
        "CNAME" => format!("cname={name},{}", host(&record.value)),
        // SRV data: priority weight port target.
        "SRV" => format!(
            "srv-host={name},{},{},{},{}",
            host(words[3]),
            words[2],
            words[0],
            words[1]
        ),
        // RFC 8659 §4.1: flags, tag length, tag, value.
        "CAA" => {
            let value = words[2].trim_matches('"');
            let mut data = vec![words[0].parse::<u8>().unwrap(), words[1].len() as u8];
            data.extend(words[1].bytes().chain(value.bytes()));
            let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
            format!("dns-rr={name},257,{hex}")
        }
        other => panic!("no dnsmasq option for {other} records"),
    }
}

impl Dnsmasq {
    /// Serves `records` and an A record `domain` → `ip` on 127.0.0.1:`port`,
    /// from a configuration file in `dir` (quoted TXT strings are only
    /// parsed there, not on the command line).
    async fn start(
        dir: tempfile::TempDir,
        port: u16,
        domain: &str,
        ip: Ipv4Addr,
        records: &[Published],
    ) -> Self {
        let mut zone = format!("host-record={domain},{ip}\n");
        for record in records {
            zone.push_str(&option(record));
            zone.push('\n');
        }
        let conf = dir.path().join("dnsmasq.conf");
        std::fs::write(&conf, zone).unwrap();
        let child = Command::new(DNSMASQ)
            .args([
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--pid-file=",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--local=/test/",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--conf-file={}", conf.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {DNSMASQ}: {e}"));
        let server = Self { child, _dir: dir };
        let resolver = resolver(port);
        for _ in 0..50 {
            if resolver.lookup_ip(format!("{domain}.")).await.is_ok() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("dnsmasq on port {port} does not answer");
    }
}

/// A resolver that asks only 127.0.0.1:`port`.
fn resolver(port: u16) -> TokioResolver {
    let (mut udp, mut tcp) = (ConnectionConfig::udp(), ConnectionConfig::tcp());
    udp.port = port;
    tcp.port = port;
    let server = NameServerConfig::new(IpAddr::V4(Ipv4Addr::LOCALHOST), true, vec![udp, tcp]);
    let config = ResolverConfig::from_parts(None, vec![], vec![server]);
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .build()
        .unwrap()
}

fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

/// Test `n`'s relay (configured, not started) asking a DNS server on a
/// free port, and the records it prints.
fn relay(n: u8) -> (RelayProcess, u16, Vec<Published>) {
    let options = RelayOptions {
        ip: Ipv4Addr::new(127, 0, 66, n).into(),
        domain: Some(format!("_doctor{n}.test")),
        extra: EXTRA.into(),
    };
    let relay = RelayProcess::configure(binary(), &options).unwrap();
    let port = free_udp_port();
    relay
        .append_config(&format!(
            "[federation]\ndns_servers = [\"127.0.0.1:{port}\"]\n"
        ))
        .unwrap();
    let json: Value = serde_json::from_str(&relay.cli(&["dns", "--json"]).unwrap()).unwrap();
    let records = json
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Published {
            name: r["name"].as_str().unwrap().into(),
            kind: r["type"].as_str().unwrap().into(),
            value: r["value"].as_str().unwrap().into(),
        })
        .collect();
    (relay, port, records)
}

/// A DNS server for `relay` serving `records`.
async fn dns_for(relay: &RelayProcess, port: u16, records: &[Published]) -> Dnsmasq {
    let IpAddr::V4(ip) = relay.ip else {
        unreachable!()
    };
    Dnsmasq::start(
        tempfile::tempdir().unwrap(),
        port,
        &relay.domain,
        ip,
        records,
    )
    .await
}

/// `madmail <args> --config <config>`: exit code and standard output.
fn madmail(args: &[&str], config: &Path) -> (i32, String) {
    let output = Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.code().unwrap_or(-1), stdout)
}

/// `madmail <args> --json`: exit code and the checks.
fn report(args: &[&str], config: &Path) -> (i32, Vec<Value>) {
    let mut args = args.to_vec();
    args.push("--json");
    let (code, stdout) = madmail(&args, config);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(report["passed"], code == 0, "{stdout}");
    (code, report["checks"].as_array().unwrap().clone())
}

/// Whether a check is about the machine (disk, memory, load), which a
/// test cannot control.
fn about_the_machine(check: &Value) -> bool {
    let name = check["name"].as_str().unwrap();
    name.starts_with("disk ") || name == "memory" || name == "load"
}

/// The names of the checks with `status` that are not about the machine.
fn named(checks: &[Value], status: &str) -> Vec<String> {
    checks
        .iter()
        .filter(|c| c["status"] == status && !about_the_machine(c))
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The exit code expected when only the named checks may fail.
fn expected_exit(checks: &[Value], failing: bool) -> i32 {
    let machine_fails = checks
        .iter()
        .any(|c| about_the_machine(c) && c["status"] == "fail");
    if machine_fails {
        eprintln!("this machine is short of disk or memory: {checks:?}");
    }
    i32::from(failing || machine_fails)
}

fn find<'a>(checks: &'a [Value], name: &str) -> &'a Value {
    let found = checks.iter().find(|c| c["name"] == name);
    found.unwrap_or_else(|| panic!("no check {name:?} in {checks:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_relay_passes_every_check() {
    if dnsmasq_missing() {
        return;
    }
    let (mut relay, port, records) = relay(1);
    let _dns = dns_for(&relay, port, &records).await;
    relay.launch().await.unwrap();
    let (code, checks) = report(&["doctor"], &relay.config_path());

    let warned = named(&checks, "warn");
    assert!(
        warned.iter().all(|name| name.starts_with("certificate ")),
        "only the self-signed certificate may warn: {checks:#?}"
    );
    let failed = named(&checks, "fail");
    assert!(failed.is_empty(), "{checks:#?}");
    assert_eq!(code, expected_exit(&checks, false));
    let at = |port| SocketAddr::new(relay.ip, port);
    for name in [
        format!("listen imaps {}", at(relay.ports.imaps)),
        format!("listen smtp {}", at(relay.ports.smtp)),
        format!("certificate https {}", at(relay.ports.https)),
        format!("federation smtp {}", at(relay.ports.smtp)),
        format!("federation mxdeliv {}", at(relay.ports.https)),
        "dns A/AAAA _doctor1.test.".into(),
        "dns MX _doctor1.test.".into(),
        "dns SRV _imaps._tcp._doctor1.test.".into(),
        "dkim opendkim._domainkey._doctor1.test.".into(),
    ] {
        find(&checks, &name);
    }
    let certificate = find(
        &checks,
        &format!("certificate imaps {}", at(relay.ports.imaps)),
    );
    assert!(
        certificate["detail"]
            .as_str()
            .unwrap()
            .contains("self-signed"),
        "{certificate}"
    );

    let (human_code, text) = madmail(&["doctor"], &relay.config_path());
    assert_eq!(human_code, code);
    let summary = text.lines().last().unwrap();
    assert!(summary.starts_with("doctor: "), "{text}");
    assert!(summary.contains(" passed, "), "{text}");
    assert!(
        text.contains("✓ dkim opendkim._domainkey._doctor1.test.: "),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dkim_record_with_another_key_fails_the_dkim_check() {
    if dnsmasq_missing() {
        return;
    }
    let (mut relay, port, mut records) = relay(2);
    let der = chatmail_dkim::DkimKey::generate_pkcs8(chatmail_dkim::Algorithm::Ed25519).unwrap();
    let other = chatmail_dkim::DkimKey::from_pkcs8_der("opendkim", &der).unwrap();
    let dkim = records
        .iter_mut()
        .find(|r| r.name.contains("._domainkey."))
        .unwrap();
    dkim.value = other.txt_record();
    let _dns = dns_for(&relay, port, &records).await;
    relay.launch().await.unwrap();
    let (code, checks) = report(&["doctor"], &relay.config_path());

    let name = "dkim opendkim._domainkey._doctor2.test.";
    assert_eq!(named(&checks, "fail"), [name], "{checks:#?}");
    let check = find(&checks, name);
    assert!(
        check["detail"]
            .as_str()
            .unwrap()
            .contains("the published key differs from the relay's"),
        "{check}"
    );
    assert!(
        check["fix"].as_str().unwrap().contains("publish"),
        "{check}"
    );
    assert_eq!(code, 1);
}

/// A certificate for `names` that expired on 2021-01-01, as PEM files in
/// `dir`.
fn expired_certificate(dir: &Path, names: &[String]) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(names.to_vec()).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_fails_with_its_expiry_date() {
    if dnsmasq_missing() {
        return;
    }
    let (mut relay, port, records) = relay(3);
    let dir = tempfile::tempdir().unwrap();
    let domain = relay.domain.clone();
    let names = [
        domain.clone(),
        format!("mta-sts.{domain}"),
        format!("www.{domain}"),
    ];
    let (cert, key) = expired_certificate(dir.path(), &names);
    let config = std::fs::read_to_string(relay.config_path()).unwrap();
    let files = format!("mode = \"files\"\ncert_path = {cert:?}\nkey_path = {key:?}");
    let config = config.replace("mode = \"self-signed\"", &files);
    std::fs::write(relay.config_path(), config).unwrap();
    let _dns = dns_for(&relay, port, &records).await;
    relay.launch().await.unwrap();
    let (code, checks) = report(&["doctor"], &relay.config_path());

    let failed = named(&checks, "fail");
    assert_eq!(failed.len(), 6, "one per TLS listener: {checks:#?}");
    for name in &failed {
        assert!(name.starts_with("certificate "), "{checks:#?}");
        let detail = find(&checks, name)["detail"].as_str().unwrap().to_owned();
        assert!(detail.contains("expired on 2021-01-01 ("), "{detail}");
    }
    let fix = find(&checks, &failed[0])["fix"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(fix.contains(&cert), "{fix}");
    assert_eq!(code, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_on_a_closed_port_is_named_as_unreachable() {
    if dnsmasq_missing() {
        return;
    }
    let (mut relay, port, records) = relay(4);
    let _dns = dns_for(&relay, port, &records).await;
    relay.launch().await.unwrap();
    let IpAddr::V4(ip) = relay.ip else {
        unreachable!()
    };
    // The relay keeps running; the doctor reads a configuration whose
    // IMAP listener has moved to a port nothing serves.
    let serving = SocketAddr::new(relay.ip, relay.ports.imaps);
    let closed = SocketAddr::new(relay.ip, closed_port(ip).unwrap());
    let config = std::fs::read_to_string(relay.config_path()).unwrap();
    let moved = config.replace(
        &format!("imaps = [\"{serving}\"]"),
        &format!("imaps = [\"{closed}\"]"),
    );
    assert_ne!(moved, config);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("moved.toml");
    std::fs::write(&path, moved).unwrap();
    let (code, checks) = report(&["doctor"], &path);

    let name = format!("listen imaps {closed}");
    assert_eq!(
        named(&checks, "fail"),
        std::slice::from_ref(&name),
        "{checks:#?}"
    );
    let check = find(&checks, &name);
    let detail = check["detail"].as_str().unwrap();
    assert!(detail.contains("connection refused"), "{check}");
    assert!(check["fix"].as_str().unwrap().contains(&closed.to_string()));
    assert_eq!(code, 1);

    let (_, text) = madmail(&["doctor"], &path);
    assert!(text.contains(&format!("✗ {name}: ")), "{text}");
    assert!(text.contains("\n    fix: start the relay"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_check_names_a_missing_record() {
    if dnsmasq_missing() {
        return;
    }
    // The relay need not run: `dns --check` only reads its key.
    let (relay, port, mut records) = relay(5);
    let missing = "_mta-sts._doctor5.test.";
    records.retain(|r| r.name != missing);
    let _dns = dns_for(&relay, port, &records).await;
    let (code, checks) = report(&["dns", "--check"], &relay.config_path());

    let name = format!("dns TXT {missing}");
    assert_eq!(
        named(&checks, "fail"),
        std::slice::from_ref(&name),
        "{checks:#?}"
    );
    assert!(named(&checks, "warn").is_empty(), "{checks:#?}");
    let check = find(&checks, &name);
    assert!(
        check["detail"]
            .as_str()
            .unwrap()
            .starts_with("missing (expected v=STSv1; id=")
    );
    assert!(
        check["fix"]
            .as_str()
            .unwrap()
            .starts_with(&format!("publish: {missing} 3600 IN TXT")),
        "{check}"
    );
    assert_eq!(code, 1);

    let (human_code, text) = madmail(&["dns", "--check"], &relay.config_path());
    assert_eq!(human_code, 1);
    assert!(text.contains(&format!("✗ {name}: missing")), "{text}");
    assert!(text.ends_with(", 0 warnings, 1 failed\n"), "{text}");
}
