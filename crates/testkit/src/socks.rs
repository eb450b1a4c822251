//! A real Shadowsocks client in front of a relay's proxy: Debian's
//! `ss-local` (package `shadowsocks-libev`) started from an `ss://` link,
//! and a SOCKS5 CONNECT through the SOCKS5 port it opens.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::Result;
use crate::relay::closed_port;

/// The fields of a SIP002 `ss://` link with a base64 user part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub method: String,
    pub password: String,
    pub host: String,
    pub port: u16,
}

impl Link {
    /// Parses `ss://BASE64URL(method:password)@host:port[#tag]`.
    pub fn parse(link: &str) -> Result<Self> {
        let rest = link.strip_prefix("ss://").ok_or("not an ss:// link")?;
        let rest = rest.split('#').next().unwrap_or(rest);
        let (user, server) = rest.rsplit_once('@').ok_or("no @ in the link")?;
        let user = URL_SAFE_NO_PAD
            .decode(user)
            .or_else(|_| URL_SAFE.decode(user))?;
        let user = String::from_utf8(user)?;
        let (method, password) = user.split_once(':').ok_or("no method:password")?;
        let (host, port) = server.rsplit_once(':').ok_or("no port")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(Self {
            method: method.to_owned(),
            password: password.to_owned(),
            host: host.to_owned(),
            port: port.trim_end_matches('/').parse()?,
        })
    }
}

/// A running `ss-local`; killed on drop.
pub struct SsLocal {
    _child: Child,
    /// Its SOCKS5 port.
    pub socks: SocketAddr,
}

impl SsLocal {
    /// Whether `ss-local` is installed.
    pub fn installed() -> bool {
        std::process::Command::new("ss-local")
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    }

    /// Starts `ss-local` for `link` with its SOCKS5 port on loopback, and
    /// waits until that port accepts.
    pub async fn start(link: &str) -> Result<Self> {
        let link = Link::parse(link)?;
        let port = closed_port(Ipv4Addr::LOCALHOST)?;
        let child = Command::new("ss-local")
            .args(["-s", &link.host, "-p", &link.port.to_string()])
            .args(["-k", &link.password, "-m", &link.method])
            .args(["-b", "127.0.0.1", "-l", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let socks = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        for _ in 0..100 {
            if TcpStream::connect(socks).await.is_ok() {
                return Ok(Self {
                    _child: child,
                    socks,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("ss-local did not open its SOCKS5 port".into())
    }

    /// A stream to `host:port` through the proxy.
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream> {
        connect(self.socks, host, port).await
    }
}

/// SOCKS5 CONNECT (no authentication) to `host:port` by name through the
/// SOCKS5 server at `socks`.
pub async fn connect(socks: SocketAddr, host: &str, port: u16) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(socks).await?;
    stream.write_all(&[5, 1, 0]).await?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await?;
    if choice != [5, 0] {
        return Err(format!("SOCKS5 method refused: {choice:?}").into());
    }
    let name = host.as_bytes();
    let len = u8::try_from(name.len())?;
    let mut request = vec![5, 1, 0, 3, len];
    request.extend_from_slice(name);
    request.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&request).await?;
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await?;
    if head[1] != 0 {
        return Err(format!("SOCKS5 CONNECT failed with reply {}", head[1]).into());
    }
    let bound = match head[3] {
        1 => 4,
        4 => 16,
        3 => usize::from(stream.read_u8().await?),
        other => return Err(format!("SOCKS5 address type {other}").into()),
    };
    let mut rest = vec![0u8; bound + 2];
    stream.read_exact(&mut rest).await?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_sip002_link() {
        let user = URL_SAFE_NO_PAD.encode("chacha20-ietf-poly1305:pass/word+=");
        let link = Link::parse(&format!("ss://{user}@relay.example:8388#relay")).unwrap();
        assert_eq!(
            link,
            Link {
                method: "chacha20-ietf-poly1305".into(),
                password: "pass/word+=".into(),
                host: "relay.example".into(),
                port: 8388,
            }
        );
        assert!(Link::parse("http://x").is_err());
    }
}
