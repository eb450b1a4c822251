//! The control socket: how the `madmail` CLI reaches the running relay.
//!
//! The relay listens on `<state_dir>/control.sock` (mode 0600, so only its
//! own user, and root, can connect). A client writes one admin envelope
//! (`chatmail_admin::Request`) as a JSON line and reads one reply line.
//! Requests here are trusted: the socket's permissions are the
//! authentication, so no token is needed. The CLI never writes the store
//! behind the relay's back: when nothing listens, it says the relay is not
//! running.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chatmail_admin::{Admin, MAX_REQUEST, Reply, Request};
use chatmail_config::Settings;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

/// The socket's file name in the state directory.
pub const SOCKET: &str = "control.sock";
/// How long one exchange may take on either side.
const TIMEOUT: Duration = Duration::from_secs(30);

pub fn socket_path(settings: &Settings) -> PathBuf {
    settings.config.state_dir.join(SOCKET)
}

/// Binds the socket, refusing to take it over from a relay that still
/// answers on it.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        anyhow::bail!(
            "another madmail answers on {}; stop it first",
            path.display()
        );
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Answers requests on `listener` until `stop`; removes the socket then.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    admin: Arc<Admin>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    // Requests in progress; each ends by its timeout, and with this loop.
    let mut requests = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            Some(_) = requests.join_next(), if !requests.is_empty() => continue,
            () = stop.cancelled() => break,
        };
        let admin = admin.clone();
        requests.spawn(async move {
            if tokio::time::timeout(TIMEOUT, exchange(stream, &admin))
                .await
                .is_err()
            {
                tracing::debug!("control socket: a client took too long");
            }
        });
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

async fn exchange(stream: tokio::net::UnixStream, admin: &Admin) {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let limit = u64::try_from(MAX_REQUEST).unwrap_or(u64::MAX) + 1;
    let mut reader = tokio::io::BufReader::new(read).take(limit);
    let reply = match reader.read_until(b'\n', &mut line).await {
        Ok(_) if line.len() > MAX_REQUEST => chatmail_admin::Api::too_large(),
        Ok(_) => match serde_json::from_slice::<Request>(&line) {
            Ok(request) => admin.handle(request).await,
            Err(_) => Reply::error(400, "", "invalid JSON request body"),
        },
        Err(_) => return,
    };
    let Ok(mut out) = serde_json::to_vec(&reply) else {
        return;
    };
    out.push(b'\n');
    let _ = write.write_all(&out).await;
}

/// Sends one request to the running relay (blocking; for the CLI).
pub fn call(settings: &Settings, request: &Request) -> anyhow::Result<Reply> {
    let path = socket_path(settings);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).map_err(|e| {
        use std::io::ErrorKind::{ConnectionRefused, NotFound, PermissionDenied};
        match e.kind() {
            NotFound | ConnectionRefused => anyhow::anyhow!(
                "the relay is not running (nothing answers on {}); start it first, \
                 changes are only made through the running relay",
                path.display()
            ),
            PermissionDenied => anyhow::anyhow!(
                "no permission to open {}: run as root or as the relay's user",
                path.display()
            ),
            _ => anyhow::anyhow!("connecting to {}: {e}", path.display()),
        }
    })?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .context("reading the relay's reply")?;
    serde_json::from_str(&reply).context("the relay's reply is not an admin envelope")
}
