//! Starting and stopping the relay: open the store, load TLS, bind every
//! configured socket, spawn one server task per socket, and stop them all on
//! SIGINT/SIGTERM. With `[turn] enabled`, the TURN server runs
//! (`crate::turn`); with `[iroh] enabled` (the default), the iroh relay
//! runs on loopback behind port 443 (`chatmail_iroh`); with
//! `[shadowsocks] enabled`, the proxy runs (`crate::proxy`). With
//! `[metrics] enabled`, the Prometheus endpoint
//! (`chatmail_metrics::serve`) runs on `[metrics] listen`; the queue
//! gauges are read from the store at each scrape. The admin core
//! (`chatmail_admin`) answers on the control socket (`crate::control`)
//! and, with `[admin] enabled`, on the HTTPS API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chatmail_accounts::Accounts;
use chatmail_config::Settings;
use chatmail_store::{Store, StoreOptions};
use chatmail_tls::Identity;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::services;
use crate::supervise::Tasks;

/// How long in-flight connections get to finish after a stop request.
const GRACE: Duration = Duration::from_secs(10);

/// A started relay.
pub struct Relay {
    /// The long-lived tasks, each named; aborted if the relay is dropped.
    tasks: Tasks,
    /// Cancelled to stop every service.
    shutdown: CancellationToken,
    /// The account service (the demo creates accounts through it).
    pub accounts: Accounts,
    /// Where clients reach HTTPS (`https://host[:port]`).
    pub base_url: String,
    /// The admin core (SIGHUP reloads through it).
    admin: Arc<chatmail_admin::Admin>,
}

/// Runs the relay until SIGINT or SIGTERM; SIGHUP reloads `config_file`.
/// A long-lived task that ends meanwhile stops the relay with an error
/// (module [`crate::supervise`]), so that the service manager restarts it.
pub async fn run(settings: Settings, config_file: PathBuf) -> anyhow::Result<()> {
    let mut relay = start(settings, Some(config_file)).await?;
    eprintln!("madmail {} running", env!("CARGO_PKG_VERSION"));
    let admin = relay.admin.clone();
    let ended = tokio::select! {
        signal = wait_for_signal(&admin) => {
            signal?;
            None
        }
        exit = relay.tasks.next_exit() => Some(exit),
    };
    match ended {
        None => {
            eprintln!("madmail stopping");
            relay.stop().await;
            Ok(())
        }
        Some(exit) => {
            tracing::error!("{exit}; stopping the relay");
            relay.stop().await;
            Err(anyhow::anyhow!("{exit}"))
        }
    }
}

/// Opens everything and starts serving; with `config_file`, the admin
/// core can reload it.
pub async fn start(settings: Settings, config_file: Option<PathBuf>) -> anyhow::Result<Relay> {
    let settings = Arc::new(settings);
    let store = Store::open(StoreOptions {
        path: settings.sqlite_path.clone(),
        max_batch: settings.config.storage.max_commit_batch,
    })
    .await?;
    store.set_quota(Some(settings.limits().max_mailbox_size));
    let accounts = Accounts::new(store.clone(), settings.clone());
    accounts
        .load_operator_state()
        .await
        .context("loading the operator's settings")?;
    let control_path = crate::control::socket_path(&settings);
    let control = crate::control::bind(&control_path)?;
    let listen = &settings.config.listen;
    let shutdown = CancellationToken::new();
    let base_url = base_url(&settings, listen.https.first());
    let mut tasks = Tasks::new(shutdown.clone());
    let (certs, acme_challenges) = if settings.config.tls.mode == chatmail_config::TlsMode::Acme {
        let acme = crate::acme::start(&settings, &shutdown, &mut tasks)?;
        (acme.certs, Some(acme.challenges))
    } else {
        (identity(&settings)?, None)
    };
    let relay_tls = certs.relay_config()?;
    // Without the writer nothing is durable.
    let writer = store.clone();
    tasks.watch("store writer", async move { writer.writer_stopped().await });
    let (rules, log) = (
        crate::expire::rules(&settings.config.retention),
        !settings.config.log.no_log,
    );
    let stop = shutdown.clone();
    tasks.spawn_restarting("expiry", move || {
        let expiry = crate::expire::spawn_expiry(store.clone(), rules, stop.clone(), log);
        async move { Ok(expiry.await?) }
    });
    let stop = shutdown.clone();
    tasks.spawn_restarting("memory trim", move || {
        let stop = stop.clone();
        async move {
            let mut every = tokio::time::interval(crate::memory::TRIM_EVERY);
            loop {
                tokio::select! {
                    _ = every.tick() => crate::memory::trim(),
                    () = stop.cancelled() => return Ok(()),
                }
            }
        }
    });

    let push = start_push(&settings, &accounts, &shutdown, &mut tasks)?;
    let federation =
        crate::federation::start(&settings, &accounts, push.clone(), &shutdown).await?;
    // Without the scheduler nothing leaves.
    let queue = federation.queue.clone();
    tasks.watch("queue scheduler", async move { queue.stopped().await });
    // One set of SMTP limits for 465, 587, 25 and submission on 443.
    let smtp = Arc::new(chatmail_smtp::Shared::new(Arc::new(
        chatmail_smtp::Context {
            settings: settings.clone(),
            accounts: accounts.clone(),
            tls: relay_tls.clone(),
            mx_tls: Some(certs.mx_config()?),
            inbound: federation.inbound.clone(),
            queue: Some(federation.queue.clone()),
            push,
        },
    )));
    let turn = Arc::new(chatmail_turn::Credentials::load_or_create(
        &settings.config.state_dir,
        settings.config.turn.credential_lifetime,
    )?);
    let turn_runs = start_turn(&settings, &turn, &shutdown, &mut tasks).await?;
    let iroh = start_iroh(&settings, &shutdown, &mut tasks).await?;
    let proxy_link = start_proxy(&settings, &shutdown, &mut tasks).await?;
    let imap = Arc::new(chatmail_imap::Context {
        settings: settings.clone(),
        accounts: accounts.clone(),
        tls: relay_tls,
        turn: turn_runs.then_some(turn),
        iroh_relay: iroh_url(&settings, iroh.is_some(), &base_url),
        spools: federation.inbound.spools().clone(),
    });
    let services = chatmail_admin::Services {
        turn: turn_runs,
        iroh: iroh.is_some(),
        shadowsocks: proxy_link.is_some(),
    };
    let mut admin = chatmail_admin::Admin::new(
        settings.clone(),
        accounts.clone(),
        services,
        base_url.clone(),
    )
    .with_queue(federation.queue.clone());
    if let Some(path) = config_file {
        admin = admin.with_config_file(path);
    }
    let admin = Arc::new(admin);
    admin
        .load_state()
        .await
        .context("loading the operator's federation rules")?;
    let token = chatmail_admin::load_token(&settings.config.state_dir, true)?;
    let api = settings
        .config
        .admin
        .enabled
        .then(|| Arc::new(chatmail_admin::Api::new(admin.clone(), token)));
    let stop = shutdown.clone();
    let control = crate::control::serve(control, control_path, admin.clone(), stop);
    tasks.spawn("control socket", control);
    let http = Arc::new(chatmail_http::Context {
        settings: settings.clone(),
        accounts: accounts.clone(),
        base_url: base_url.clone(),
        inbound: federation.inbound.clone(),
        acme_challenges,
        iroh,
        proxy_link,
        admin: api,
    });
    use chatmail_imap::Mode as ImapMode;
    use chatmail_smtp::Mode as SmtpMode;
    for (addrs, mode, kind) in [
        (&listen.submissions, SmtpMode::ImplicitTls, "submissions"),
        (&listen.submission, SmtpMode::StartTls, "submission"),
        (&listen.smtp, SmtpMode::Mx, "smtp"),
    ] {
        for listener in bind(addrs).await? {
            let (ctx, stop) = (smtp.clone(), shutdown.clone());
            let name = listener_name(kind, &listener);
            tasks.spawn(name, async move {
                Ok(chatmail_smtp::serve(listener, mode, ctx, stop).await?)
            });
        }
    }
    // One IMAP connection pool for 993 and 143 (443 has its own).
    let imap_slots = chatmail_imap::slots(&imap);
    for (addrs, mode, kind) in [
        (&listen.imaps, ImapMode::ImplicitTls, "imaps"),
        (&listen.imap, ImapMode::StartTls, "imap"),
    ] {
        for listener in bind(addrs).await? {
            let (ctx, stop, slots) = (imap.clone(), shutdown.clone(), imap_slots.clone());
            let name = listener_name(kind, &listener);
            tasks.spawn(name, async move {
                Ok(chatmail_imap::serve(listener, mode, ctx, slots, stop).await?)
            });
        }
    }
    // Port 443: HTTPS, plus IMAP and submission for clients asking by ALPN.
    let web_tls = certs.multiplex_config(true)?;
    let alpn = alpn_handlers(&settings, &imap, &smtp, &shutdown);
    for listener in bind(&listen.https).await? {
        let (ctx, stop, tls) = (http.clone(), shutdown.clone(), web_tls.clone());
        let alpn = Some(alpn.clone());
        tasks.spawn(listener_name("https", &listener), async move {
            Ok(chatmail_http::serve_multiplexed(listener, tls, ctx, alpn, stop).await?)
        });
    }
    // Port 80: redirects to HTTPS.
    for listener in bind(&listen.http).await? {
        let (ctx, stop) = (http.clone(), shutdown.clone());
        let name = listener_name("http", &listener);
        tasks.spawn(name, async move {
            Ok(chatmail_http::serve_http(listener, ctx, stop).await?)
        });
    }
    start_metrics(&settings, &federation.queue, &shutdown, &mut tasks).await?;
    Ok(Relay {
        tasks,
        shutdown,
        accounts,
        base_url,
        admin,
    })
}

/// The TURN server under its switch; returns whether it runs.
async fn start_turn(
    settings: &Arc<Settings>,
    credentials: &Arc<chatmail_turn::Credentials>,
    shutdown: &CancellationToken,
    tasks: &mut Tasks,
) -> anyhow::Result<bool> {
    let (settings_, credentials) = (settings.clone(), credentials.clone());
    let start: services::Start = Box::new(move |stop| {
        let (settings, credentials) = (settings_.clone(), credentials.clone());
        Box::pin(async move {
            let mut servers = JoinSet::new();
            crate::turn::start(&settings, &credentials, &stop, &mut servers).await?;
            Ok(servers)
        })
    });
    let service = services::started(chatmail_config::Service::Turn, shutdown, start).await?;
    let runs = service.running.as_ref().is_some_and(|(_, t)| !t.is_empty());
    if runs {
        tasks.spawn(
            "turn switch",
            services::supervise(service, settings.clone(), shutdown.clone()),
        );
    }
    Ok(runs)
}

/// The Shadowsocks proxy under its switch; returns its link while it runs.
async fn start_proxy(
    settings: &Arc<Settings>,
    shutdown: &CancellationToken,
    tasks: &mut Tasks,
) -> anyhow::Result<Option<String>> {
    let link = Arc::new(std::sync::Mutex::new(None));
    let (settings_, slot) = (settings.clone(), link.clone());
    let start: services::Start = Box::new(move |stop| {
        let (settings, slot) = (settings_.clone(), slot.clone());
        Box::pin(async move {
            let mut servers = JoinSet::new();
            let link = crate::proxy::start(&settings, &stop, &mut servers).await?;
            *slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = link;
            Ok(servers)
        })
    });
    let service = services::started(chatmail_config::Service::Shadowsocks, shutdown, start).await?;
    let link = link
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if link.is_some() {
        tasks.spawn(
            "shadowsocks switch",
            services::supervise(service, settings.clone(), shutdown.clone()),
        );
    }
    Ok(link)
}

impl Relay {
    /// Stops accepting, lets connections finish for a grace period, then
    /// aborts what is left and closes the store.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for exit in self.tasks.drain(GRACE).await {
            tracing::error!("while stopping: {exit}");
        }
        // Commits what is queued and checkpoints the write-ahead log, so
        // that the database file alone holds everything.
        self.accounts.store().close().await;
    }
}

/// "smtp 127.0.0.1:25": a listener's task name.
fn listener_name(kind: &str, listener: &TcpListener) -> String {
    match listener.local_addr() {
        Ok(addr) => format!("{kind} listener {addr}"),
        Err(_) => format!("{kind} listener"),
    }
}

/// Serves `GET /metrics` when `[metrics] enabled`.
async fn start_metrics(
    settings: &Settings,
    queue: &chatmail_queue::Queue,
    shutdown: &CancellationToken,
    tasks: &mut Tasks,
) -> anyhow::Result<()> {
    let config = &settings.config.metrics;
    if !config.enabled {
        return Ok(());
    }
    let listener = bind(&[config.listen]).await?.remove(0);
    let queue = queue.clone();
    let refresh = move || {
        let queue = queue.clone();
        async move {
            match queue.stats().await {
                Ok(stats) => chatmail_metrics::set_queue(stats.messages, stats.recipients),
                Err(e) => tracing::warn!(error = %e, "metrics: reading the queue failed"),
            }
        }
    };
    let stop = shutdown.clone();
    tasks.spawn(listener_name("metrics", &listener), async move {
        Ok(chatmail_metrics::serve(listener, refresh, stop).await?)
    });
    Ok(())
}

/// Starts the built-in iroh relay when `[iroh] enabled`; returns where it
/// listens (loopback: port 443 forwards to it) with the tasks of its
/// forwarded connections.
async fn start_iroh(
    settings: &Settings,
    shutdown: &CancellationToken,
    tasks: &mut Tasks,
) -> anyhow::Result<Option<Arc<chatmail_http::iroh::Upstream>>> {
    let config = &settings.config.iroh;
    if !config.enabled || settings.config.listen.https.is_empty() {
        return Ok(None);
    }
    let options = chatmail_iroh::Options {
        max_bandwidth: config.max_bandwidth,
    };
    let relay = chatmail_iroh::spawn(options)
        .await
        .context("starting the iroh relay")?;
    let upstream = Arc::new(chatmail_http::iroh::Upstream::new(
        relay.upstream(),
        shutdown.clone(),
    ));
    tasks.spawn("iroh relay", relay.run(shutdown.clone()));
    let connections = upstream.clone();
    tasks.spawn("iroh relay connections", async move {
        connections.run().await;
        Ok(())
    });
    Ok(Some(upstream))
}

/// The `irohrelay` entry: `[iroh] url`, else this relay while its built-in
/// iroh relay runs.
fn iroh_url(settings: &Settings, runs: bool, base_url: &str) -> Option<String> {
    match &settings.config.iroh.url {
        Some(url) => Some(url.clone()),
        None => runs.then(|| format!("{base_url}/")),
    }
}

/// Starts the push notification worker when `[push] enabled`.
fn start_push(
    settings: &Settings,
    accounts: &Accounts,
    shutdown: &CancellationToken,
    tasks: &mut Tasks,
) -> anyhow::Result<Option<chatmail_push::Push>> {
    if !settings.config.push.enabled {
        return Ok(None);
    }
    let options = chatmail_push::PushOptions::new(settings.config.push.url.clone());
    let (push, worker) = chatmail_push::Push::new(accounts.store().clone(), options)?;
    let stop = shutdown.clone();
    tasks.spawn("push worker", async move {
        worker.run(stop).await;
        Ok(())
    });
    Ok(Some(push))
}

/// IMAP and SMTP sessions for connections on 443 that asked for them by
/// ALPN (Delta Chat does on implicit-TLS ports other than 993/465).
fn alpn_handlers(
    settings: &Settings,
    imap: &Arc<chatmail_imap::Context>,
    smtp: &Arc<chatmail_smtp::Shared>,
    shutdown: &CancellationToken,
) -> chatmail_http::AlpnHandlers {
    let (ctx, stop) = (imap.clone(), shutdown.clone());
    let imap = chatmail_http::mail_handler(move |stream, peer, slot| {
        let (ctx, stop) = (ctx.clone(), stop.clone());
        async move {
            let ip = peer.ip();
            let session = chatmail_imap::serve_stream(stream, true, ip, ctx, stop, Some(slot));
            if let Err(e) = session.await {
                tracing::debug!(error = %e, "IMAP session on 443 ended with an error");
            }
        }
    });
    let (ctx, stop) = (smtp.clone(), shutdown.clone());
    let smtp = chatmail_http::mail_handler(move |stream, peer, slot| {
        chatmail_smtp::serve_tls_stream(stream, peer.ip(), ctx.clone(), stop.clone(), slot)
    });
    let limits = settings.limits();
    chatmail_http::AlpnHandlers {
        imap,
        smtp,
        max_connections: limits.max_imap_connections + limits.max_smtp_connections,
    }
}

fn identity(settings: &Settings) -> anyhow::Result<chatmail_tls::Certs> {
    let tls = &settings.config.tls;
    if settings.self_signed {
        let host = settings.domain.host();
        let names = vec![
            host.clone(),
            format!("mta-sts.{host}"),
            format!("www.{host}"),
        ];
        let names = if matches!(settings.domain, chatmail_config::MailDomain::Ip(_)) {
            vec![host]
        } else {
            names
        };
        Ok(Identity::self_signed(&settings.config.state_dir.join("tls"), &names)?.into())
    } else {
        let (Some(cert), Some(key)) = (&tls.cert_path, &tls.key_path) else {
            anyhow::bail!("tls.cert_path and tls.key_path are required");
        };
        Ok(chatmail_tls::Certs::watch_files(cert, key)?)
    }
}

async fn bind(addrs: &[SocketAddr]) -> anyhow::Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        listeners.push(listener);
    }
    Ok(listeners)
}

pub fn base_url(settings: &Settings, https: Option<&SocketAddr>) -> String {
    match https.map(SocketAddr::port) {
        Some(443) | None => format!("https://{}", settings.domain.host()),
        Some(port) => format!("https://{}:{port}", settings.domain.host()),
    }
}

/// Waits for SIGINT or SIGTERM, reloading the configuration file at each
/// SIGHUP meanwhile.
async fn wait_for_signal(admin: &chatmail_admin::Admin) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            result = tokio::signal::ctrl_c() => return Ok(result?),
            _ = term.recv() => return Ok(()),
            _ = hangup.recv() => match admin.reload().await {
                Ok(reloaded) if reloaded.changed.is_empty() => {
                    tracing::info!("reload: the configuration file has not changed");
                }
                Ok(reloaded) => tracing::info!("reload applied: {}", reloaded.changed.join(", ")),
                Err(e) => tracing::error!("reload: {e}"),
            },
        }
    }
}
