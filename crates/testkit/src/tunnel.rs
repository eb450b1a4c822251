//! A TLS-terminating tunnel: plain TCP in, TLS to the relay out, trusting
//! exactly the relay's certificate. Clients that verify against the public
//! web roots only (iroh's relay client) reach a self-signed relay's HTTPS
//! port through it with an `http://` URL, while the relay still sees a
//! TLS connection on its real port.

use std::net::SocketAddr;
use std::path::PathBuf;

use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

use crate::Result;

/// Where a tunnel leads.
#[derive(Debug, Clone)]
pub struct Target {
    /// The relay's HTTPS address.
    pub addr: SocketAddr,
    /// The relay's certificate (PEM), read at each connection: the relay
    /// may write it after the tunnel starts.
    pub cert: PathBuf,
    /// The name the certificate is verified for (a DNS name or an IP
    /// address).
    pub server_name: String,
}

/// Accepts on `listener` forever, copying each connection to and from a
/// TLS connection to `target`.
pub async fn serve(listener: TcpListener, target: Target) -> Result<()> {
    loop {
        let (plain, _) = listener.accept().await?;
        let target = target.clone();
        tokio::spawn(async move {
            if let Err(e) = carry(plain, &target).await {
                eprintln!("tunnel to {}: {e}", target.addr);
            }
        });
    }
}

/// [`serve`] on a thread of its own (for callers without a runtime).
pub fn spawn_thread(listener: std::net::TcpListener, target: Target) -> Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        let served =
            runtime.block_on(async move { serve(TcpListener::from_std(listener)?, target).await });
        if let Err(e) = served {
            eprintln!("tunnel stopped: {e}");
        }
    });
    Ok(())
}

async fn carry(mut plain: TcpStream, target: &Target) -> Result<()> {
    let tls = crate::client::tls_config(&target.cert)?;
    let tcp = TcpStream::connect(target.addr).await?;
    tcp.set_nodelay(true)?;
    plain.set_nodelay(true)?;
    let name = ServerName::try_from(target.server_name.clone())?;
    let mut secure = TlsConnector::from(tls).connect(name, tcp).await?;
    tokio::io::copy_bidirectional(&mut plain, &mut secure).await?;
    Ok(())
}
