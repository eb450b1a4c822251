//! A `madmail` process on loopback with its own state directory and free
//! ports, for tests that need the real binary (restarts, SIGKILL) and for
//! benchmarks.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::Result;

/// The relay's listening ports.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub submissions: u16,
    pub submission: u16,
    pub imaps: u16,
    pub imap: u16,
    pub https: u16,
    pub smtp: u16,
}

impl Ports {
    /// Five currently free loopback ports.
    pub fn free() -> Result<Self> {
        let mut holders = Vec::new();
        let mut next = || -> Result<u16> {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let port = listener.local_addr()?.port();
            holders.push(listener);
            Ok(port)
        };
        Ok(Self {
            submissions: next()?,
            submission: next()?,
            imaps: next()?,
            imap: next()?,
            https: next()?,
            smtp: next()?,
        })
    }
}

/// A running relay process.
pub struct RelayProcess {
    binary: PathBuf,
    /// Keeps the state directory alive; removed on drop.
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Where the relay listens.
    pub ports: Ports,
    /// The relay's mail domain (an IP literal: `127.0.0.1`).
    pub domain: String,
}

impl RelayProcess {
    /// Writes a configuration (IP-only domain `127.0.0.1`, self-signed TLS,
    /// `extra` appended verbatim) and starts `binary` with it.
    pub async fn start(binary: &Path, extra: &str) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("madmail-test-").tempdir()?;
        let ports = Ports::free()?;
        let at = |port: u16| format!("[\"127.0.0.1:{port}\"]");
        let config = format!(
            "mail_domain = \"127.0.0.1\"\nstate_dir = {:?}\n{extra}\n\
             [log]\nno_log = false\nlevel = \"warn\"\n\
             [listen]\nsubmissions = {}\nsubmission = {}\nimaps = {}\nimap = {}\nhttps = {}\nsmtp = {}\n\
             [tls]\nmode = \"self-signed\"\n",
            dir.path().join("state").display().to_string(),
            at(ports.submissions),
            at(ports.submission),
            at(ports.imaps),
            at(ports.imap),
            at(ports.https),
            at(ports.smtp),
        );
        std::fs::write(dir.path().join("chatmail.toml"), config)?;
        let mut relay = Self {
            binary: binary.to_owned(),
            dir,
            child: None,
            ports,
            domain: "127.0.0.1".into(),
        };
        relay.spawn().await?;
        Ok(relay)
    }

    async fn spawn(&mut self) -> Result<()> {
        let child = Command::new(&self.binary)
            .arg("run")
            .arg("--config")
            .arg(self.dir.path().join("chatmail.toml"))
            .stdin(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        for _ in 0..200 {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(format!("madmail exited early: {status}").into());
            }
            let ready = [self.ports.imaps, self.ports.submissions, self.ports.https]
                .iter()
                .all(|port| std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok());
            if ready {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("madmail did not start listening within 10 s".into())
    }

    /// Kills the process with SIGKILL (no chance to clean up) and waits.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again with the same state and ports.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn().await
    }

    /// The relay's self-signed certificate (PEM).
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("state/tls/cert.pem")
    }

    /// The configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("chatmail.toml")
    }

    /// A loopback socket address for `port`.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
