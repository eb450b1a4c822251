//! The TURN server (RFC 8656) for Delta Chat calls: UDP and TCP on one
//! address, relayed addresses over UDP.
//!
//! Flow: [`serve`] runs one actor per transport. Each actor owns a sans-IO
//! [`TurnServer`] (the `turn-server-proto` crate: allocations, permissions,
//! channels, nonces, lifetimes) and does all of its I/O: datagrams or TCP
//! bytes from clients, datagrams from peers on the relayed sockets it binds
//! when the protocol asks for one, and the transmits the protocol returns,
//! routed by their source address (the listening address: to a client; a
//! relayed address: to a peer).
//!
//! Before a client's message reaches the protocol, [`Guard`] applies what
//! the protocol leaves to its user: the REST credential (a request without
//! one is challenged with 401 here; the username is the expiry in Unix
//! seconds; an expired or malformed one is answered 401 here, a valid one
//! whose integrity checks out under the installation secret is registered
//! with the protocol), and the peer rule
//! ([`Peers`]: a CreatePermission or ChannelBind naming a denied peer is
//! answered 403, a Send indication to one is dropped).
//!
//! Invariants:
//! - no datagram reaches a peer the rule denies, and none from such a peer
//!   reaches a client (checked again on every relayed datagram);
//! - allocations are capped in total and per client address (IPv6 per
//!   /64); a refused one is answered 508 (Insufficient Capacity);
//! - TCP connections take a slot of a [`Slots`] pool (a fifth per client):
//!   when it is full, the connection that has waited longest without an
//!   allocation is closed to make room, so idle or trickling connections
//!   cannot shut newcomers out; one that holds an allocation is kept;
//! - each allocation relays at most `max_bandwidth` bytes a second (both
//!   directions together); the excess is dropped, as UDP allows;
//! - channels between tasks are bounded; a full one drops datagrams, it
//!   never blocks a reader or grows;
//! - nothing here logs an address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use chatmail_limits::{Slot, Slots};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use turn_server_proto::api::{
    SocketAllocateError, TcpConnectError, TurnServerApi, TurnServerPollRet,
};
use turn_server_proto::server::TurnServer;
use turn_server_proto::stun::agent::Transmit;
use turn_server_proto::types::{AddressFamily, Instant, TransportType};

use crate::caps::{Bucket, Quota, Quotas};
use crate::credentials::{Credentials, unix_now};
use crate::guard::{Guard, Verdict};
use crate::peers::Peers;

/// Largest datagram read or relayed.
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams and TCP chunks waiting for an actor.
const INPUT_QUEUE: usize = 1024;
/// Chunks waiting for one TCP client's writer.
const TCP_WRITE_QUEUE: usize = 256;
/// A TCP connection that sends nothing for this long is closed (a client
/// refreshes its allocation and permissions well within it).
const TCP_IDLE: Duration = Duration::from_secs(600);
/// Attempts at a free relay port before an allocation is refused.
const PORT_ATTEMPTS: usize = 32;
/// How often an idle actor starts its protocol state afresh (see
/// [`Actor::renew_when_idle`]).
const RENEW_IDLE: Duration = Duration::from_secs(3600);
/// Shortest wait between two polls of the protocol.
const MIN_POLL: Duration = Duration::from_millis(10);

/// What one TURN server listens on and allows.
#[derive(Debug, Clone)]
pub struct Options {
    /// The realm (the mail domain).
    pub realm: String,
    /// The address UDP and TCP listen on.
    pub listen: SocketAddr,
    /// Serve TURN over UDP.
    pub udp: bool,
    /// Serve TURN over TCP.
    pub tcp: bool,
    /// The addresses handed out as relayed addresses, one per family
    /// (relayed sockets bind the unspecified address of that family).
    pub relay_addresses: Vec<IpAddr>,
    /// Ports relayed sockets bind.
    pub relay_ports: RangeInclusive<u16>,
    /// The peer rule.
    pub peers: Peers,
    /// Allocations at once, in total.
    pub max_allocations: usize,
    /// Allocations at once, per client address (IPv6: per /64).
    pub max_allocations_per_client: usize,
    /// Relayed bytes a second per allocation; 0: unlimited.
    pub max_bandwidth: u64,
    /// TCP connections at once, in total (a fifth per client).
    pub max_tcp_connections: usize,
}

/// Serves TURN on `options.listen` until `shutdown`.
pub async fn serve(
    options: Options,
    credentials: Arc<Credentials>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    bind(options, credentials).await?.run(shutdown).await
}

/// Binds the listening sockets of `options`, so that an address in use is
/// an error at start-up rather than in a task.
pub async fn bind(options: Options, credentials: Arc<Credentials>) -> std::io::Result<Bound> {
    let udp = match options.udp {
        true => Some(UdpSocket::bind(options.listen).await?),
        false => None,
    };
    let tcp = match options.tcp {
        true => Some(TcpListener::bind(options.listen).await?),
        false => None,
    };
    let shared = Arc::new(Shared {
        quotas: Quotas::new(options.max_allocations, options.max_allocations_per_client),
        options,
        credentials,
    });
    Ok(Bound { shared, udp, tcp })
}

/// A TURN server whose sockets are bound.
pub struct Bound {
    /// Settings, credentials and counts.
    shared: Arc<Shared>,
    /// The UDP listening socket, if UDP is served.
    udp: Option<UdpSocket>,
    /// The TCP listener, if TCP is served.
    tcp: Option<TcpListener>,
}

impl Bound {
    /// Serves until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let mut actors = JoinSet::new();
        if let Some(socket) = self.udp {
            let listen = socket.local_addr()?;
            let socket = Arc::new(socket);
            let (actor, inputs) = Actor::new(
                TransportType::Udp,
                listen,
                Some(socket.clone()),
                self.shared.clone(),
            );
            actors.spawn(actor.run_udp(socket, inputs, shutdown.clone()));
        }
        if let Some(listener) = self.tcp {
            let listen = listener.local_addr()?;
            let (actor, inputs) = Actor::new(TransportType::Tcp, listen, None, self.shared.clone());
            let accepts = actor.inputs.clone();
            let max = self.shared.options.max_tcp_connections;
            actors.spawn(accept_tcp(listener, accepts, max, shutdown.clone()));
            actors.spawn(actor.run(inputs, shutdown.clone()));
        }
        while let Some(done) = actors.join_next().await {
            done.map_err(std::io::Error::other)??;
        }
        Ok(())
    }
}

/// What the actors of one server share.
struct Shared {
    /// The configuration.
    options: Options,
    /// Verifies REST credentials.
    credentials: Arc<Credentials>,
    /// Allocation counts.
    quotas: Quotas,
}

/// A TCP client as the actor holds it.
struct TcpClient {
    /// Takes the bytes for the client.
    writer: mpsc::Sender<Vec<u8>>,
    /// Its place in the pool, protected once it holds an allocation.
    slot: Arc<Slot>,
}

/// Input for an actor from its other tasks.
enum Input {
    /// Bytes a TURN client sent over TCP.
    FromClient { from: SocketAddr, data: Vec<u8> },
    /// A datagram a peer sent to a relayed address.
    FromPeer {
        relayed: SocketAddr,
        from: SocketAddr,
        data: Vec<u8>,
    },
    /// A TCP client connected; its writer takes the bytes for it.
    TcpOpened {
        client: SocketAddr,
        connection: TcpClient,
    },
    /// A TCP client is gone.
    TcpClosed { client: SocketAddr },
}

/// One relayed address.
struct Relay {
    /// The socket bound for it.
    socket: Arc<UdpSocket>,
    /// The task reading peers' datagrams from `socket`.
    reader: AbortHandle,
    /// Bytes it may still relay this second.
    bucket: Bucket,
    /// Its place in the allocation count, given back on drop.
    _quota: Quota,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The state of one transport's server.
struct Actor {
    /// The protocol.
    server: TurnServer,
    /// UDP or TCP.
    transport: TransportType,
    /// The listening address (the source of every transmit to a client).
    listen: SocketAddr,
    /// The listening socket of the UDP actor (the TCP actor writes to its
    /// clients through `tcp_clients`).
    udp: Option<Arc<UdpSocket>>,
    /// Credentials, the peer rule and the allocation caps.
    guard: Guard,
    /// The shared settings and counts.
    shared: Arc<Shared>,
    /// Relayed addresses, by the address handed to the client.
    relays: HashMap<SocketAddr, Relay>,
    /// Writers of connected TCP clients.
    tcp_clients: HashMap<SocketAddr, TcpClient>,
    /// Handed to readers of relayed sockets.
    inputs: mpsc::Sender<Input>,
    /// Where the protocol's clock starts.
    epoch: std::time::Instant,
    /// When the protocol state was last started afresh.
    renewed: std::time::Instant,
}

impl Actor {
    fn new(
        transport: TransportType,
        listen: SocketAddr,
        udp: Option<Arc<UdpSocket>>,
        shared: Arc<Shared>,
    ) -> (Self, mpsc::Receiver<Input>) {
        let (inputs, receiver) = mpsc::channel(INPUT_QUEUE);
        let realm = shared.options.realm.clone();
        let actor = Actor {
            server: TurnServer::new(transport, listen, realm.clone()),
            transport,
            listen,
            udp,
            guard: Guard::new(
                realm,
                shared.credentials.clone(),
                shared.options.peers.clone(),
            ),
            shared,
            relays: HashMap::new(),
            tcp_clients: HashMap::new(),
            inputs,
            epoch: std::time::Instant::now(),
            renewed: std::time::Instant::now(),
        };
        (actor, receiver)
    }

    /// The protocol's clock.
    fn now(&self) -> Instant {
        Instant::from_std(self.epoch)
    }

    /// The UDP actor: client datagrams from `socket`, peers' from `inputs`.
    async fn run_udp(
        mut self,
        socket: Arc<UdpSocket>,
        mut inputs: mpsc::Receiver<Input>,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let mut buf = vec![0; MAX_DATAGRAM];
        let mut wake = self.drive();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                received = socket.recv_from(&mut buf) => {
                    // ICMP errors surface as failed receives: not fatal.
                    if let Ok((len, from)) = received {
                        self.handle_client(from, &buf[..len]);
                    }
                }
                Some(input) = inputs.recv() => self.input(input),
                () = tokio::time::sleep_until(wake) => {}
            }
            wake = self.drive();
        }
    }

    /// The TCP actor: everything arrives on `inputs`.
    async fn run(
        mut self,
        mut inputs: mpsc::Receiver<Input>,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let mut wake = self.drive();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                Some(input) = inputs.recv() => self.input(input),
                () = tokio::time::sleep_until(wake) => {}
            }
            wake = self.drive();
        }
    }

    fn input(&mut self, input: Input) {
        match input {
            Input::FromClient { from, data } => self.handle_client(from, &data),
            Input::FromPeer {
                relayed,
                from,
                data,
            } => self.handle_peer(relayed, from, &data),
            Input::TcpOpened { client, connection } => {
                self.tcp_clients.insert(client, connection);
            }
            Input::TcpClosed { client } => {
                self.tcp_clients.remove(&client);
            }
        }
    }

    /// A client's message or channel data, through the guard to the
    /// protocol.
    fn handle_client(&mut self, from: SocketAddr, data: &[u8]) {
        let now = self.now();
        match self.guard.check(data, unix_now()) {
            Verdict::Pass => {}
            Verdict::AddUser { username, password } => self.server.add_user(username, password),
            Verdict::Answer(reply) => {
                let reply = Transmit::new(reply, self.transport, self.listen, from);
                return self.send(reply);
            }
            Verdict::Drop => return,
        }
        let transmit = Transmit::new(data, self.transport, from, self.listen);
        if let Some(reply) = self.server.recv(transmit, now) {
            self.send(reply.build());
        }
    }

    /// A peer's datagram to a relayed address.
    fn handle_peer(&mut self, relayed: SocketAddr, from: SocketAddr, data: &[u8]) {
        if !self.shared.options.peers.allows(from.ip()) {
            return;
        }
        let Some(relay) = self.relays.get_mut(&relayed) else {
            return;
        };
        if !relay.bucket.take(data.len()) {
            return;
        }
        chatmail_metrics::turn_relayed(data.len());
        let now = self.now();
        let transmit = Transmit::new(data, TransportType::Udp, from, relayed);
        if let Some(reply) = self.server.recv(transmit, now) {
            self.send(reply.build());
        }
    }

    /// Sends what the protocol produced: from the listening address to a
    /// client, from a relayed address to a peer.
    fn send(&mut self, transmit: Transmit<Vec<u8>>) {
        if transmit.from == self.listen {
            match &self.udp {
                Some(socket) => {
                    let _ = socket.try_send_to(&transmit.data, transmit.to);
                }
                None => {
                    if let Some(TcpClient { writer, .. }) = self.tcp_clients.get(&transmit.to) {
                        let _ = writer.try_send(transmit.data);
                    }
                }
            }
            return;
        }
        let Some(relay) = self.relays.get_mut(&transmit.from) else {
            return;
        };
        if !self.shared.options.peers.allows(transmit.to.ip()) {
            return;
        }
        if relay.bucket.take(transmit.data.len()) {
            chatmail_metrics::turn_relayed(transmit.data.len());
            let _ = relay.socket.try_send_to(&transmit.data, transmit.to);
        }
    }

    /// Starts the protocol state afresh once an hour while nothing is
    /// allocated and no TCP client is connected: the protocol keeps a nonce
    /// for every client address and every username it was given, and
    /// never forgets one.
    fn renew_when_idle(&mut self) {
        let idle = self.relays.is_empty() && self.tcp_clients.is_empty();
        if idle && self.renewed.elapsed() >= RENEW_IDLE {
            let realm = self.shared.options.realm.clone();
            self.server = TurnServer::new(self.transport, self.listen, realm);
            self.guard.forget_users();
            self.renewed = std::time::Instant::now();
        }
    }

    /// Lets the protocol act on time and on what arrived; returns when to
    /// call again.
    fn drive(&mut self) -> tokio::time::Instant {
        self.renew_when_idle();
        loop {
            let now = self.now();
            match self.server.poll(now) {
                TurnServerPollRet::WaitUntil(at) => {
                    while let Some(transmit) = self.server.poll_transmit(now) {
                        self.send(transmit);
                    }
                    let at = at
                        .to_std(self.epoch)
                        .max(std::time::Instant::now() + MIN_POLL);
                    return tokio::time::Instant::from_std(at);
                }
                TurnServerPollRet::AllocateSocket {
                    transport,
                    listen_addr,
                    client_addr,
                    allocation_transport,
                    family,
                } => {
                    let relayed = self.allocate(client_addr, allocation_transport, family);
                    if relayed.is_ok()
                        && let Some(connection) = self.tcp_clients.get(&client_addr)
                    {
                        // An authenticated client: its connection stays.
                        connection.slot.protect();
                    }
                    self.server.allocated_socket(
                        transport,
                        listen_addr,
                        client_addr,
                        allocation_transport,
                        family,
                        relayed,
                        now,
                    );
                }
                TurnServerPollRet::TcpConnect {
                    relayed_addr,
                    peer_addr,
                    listen_addr,
                    client_addr,
                } => {
                    // TCP allocations (RFC 6062) are not offered.
                    let refused = Err(TcpConnectError::Forbidden);
                    self.server.tcp_connected(
                        relayed_addr,
                        peer_addr,
                        listen_addr,
                        client_addr,
                        refused,
                        now,
                    );
                }
                TurnServerPollRet::TcpClose {
                    local_addr,
                    remote_addr,
                } => {
                    if local_addr == self.listen {
                        self.tcp_clients.remove(&remote_addr);
                    }
                }
                TurnServerPollRet::SocketClose { listen_addr, .. } => {
                    if self.relays.remove(&listen_addr).is_some() {
                        chatmail_metrics::turn_allocation(false);
                    }
                }
            }
        }
    }

    /// Binds a relayed socket for `client` if the caps allow one.
    fn allocate(
        &mut self,
        client: SocketAddr,
        transport: TransportType,
        family: AddressFamily,
    ) -> Result<SocketAddr, SocketAllocateError> {
        if transport != TransportType::Udp {
            return Err(SocketAllocateError::InsufficientCapacity);
        }
        let options = &self.shared.options;
        let wanted_v4 = family == AddressFamily::IPV4;
        let address = options
            .relay_addresses
            .iter()
            .find(|ip| ip.is_ipv4() == wanted_v4)
            .copied()
            .ok_or(SocketAllocateError::AddressFamilyNotSupported)?;
        let quota = self
            .shared
            .quotas
            .acquire(client.ip())
            .ok_or(SocketAllocateError::InsufficientCapacity)?;
        let (socket, port) = bind_relay(address, &options.relay_ports)
            .ok_or(SocketAllocateError::InsufficientCapacity)?;
        let relayed = SocketAddr::new(address, port);
        let socket = Arc::new(socket);
        let reader = read_peers(socket.clone(), relayed, self.inputs.clone());
        // Aborted when the relay is dropped (closed, or with the actor).
        let reader = tokio::spawn(reader).abort_handle();
        let relay = Relay {
            socket,
            reader,
            bucket: Bucket::new(options.max_bandwidth),
            _quota: quota,
        };
        self.relays.insert(relayed, relay);
        chatmail_metrics::turn_allocation(true);
        Ok(relayed)
    }
}

/// A UDP socket on a random free port of `ports`, and that port: on
/// `address` if it is a local address, else (behind 1:1 NAT) on the
/// unspecified address of its family. Binding does not block, so the actor
/// does it in place.
fn bind_relay(address: IpAddr, ports: &RangeInclusive<u16>) -> Option<(UdpSocket, u16)> {
    let mut bind_ip = address;
    for _ in 0..PORT_ATTEMPTS {
        let port = rand::random_range(ports.clone());
        match std::net::UdpSocket::bind((bind_ip, port)) {
            Ok(socket) => {
                socket.set_nonblocking(true).ok()?;
                return Some((UdpSocket::from_std(socket).ok()?, port));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                bind_ip = match address {
                    IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
                    IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
                };
            }
            Err(_) => {}
        }
    }
    None
}

/// Forwards peers' datagrams on `socket` to the actor, dropping them when
/// it is behind.
async fn read_peers(socket: Arc<UdpSocket>, relayed: SocketAddr, inputs: mpsc::Sender<Input>) {
    let mut buf = vec![0; MAX_DATAGRAM];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let data = buf[..len].to_vec();
        match inputs.try_send(Input::FromPeer {
            relayed,
            from,
            data,
        }) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

/// Accepts TURN clients over TCP, at most `max` at once and a fifth of
/// that per client. Over the cap a newcomer is refused; nobody is evicted
/// (a connection may carry a call).
async fn accept_tcp(
    listener: TcpListener,
    inputs: mpsc::Sender<Input>,
    max: usize,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Slots::fifth_per_client(max);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((stream, client)) = accepted else { continue };
                let Ok(slot) = slots.acquire(Some(client.ip())) else { continue };
                let slot = Arc::new(slot);
                let inputs = inputs.clone();
                connections.spawn(async move {
                    tokio::select! {
                        () = serve_tcp(stream, client, Arc::clone(&slot), inputs.clone()) => {}
                        () = slot.evicted() => {
                            let _ = inputs.send(Input::TcpClosed { client }).await;
                        }
                    }
                });
            }
        }
    }
}

/// One TCP client: its bytes to the actor, the actor's bytes to it.
async fn serve_tcp(
    stream: TcpStream,
    client: SocketAddr,
    slot: Arc<Slot>,
    inputs: mpsc::Sender<Input>,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (sender, mut outgoing) = mpsc::channel::<Vec<u8>>(TCP_WRITE_QUEUE);
    if inputs
        .send(Input::TcpOpened {
            client,
            connection: TcpClient {
                writer: sender,
                slot,
            },
        })
        .await
        .is_err()
    {
        return;
    }
    let write = async move {
        while let Some(chunk) = outgoing.recv().await {
            if writer.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    let read = async {
        let mut buf = vec![0; 16 * 1024];
        loop {
            let read = tokio::time::timeout(TCP_IDLE, reader.read(&mut buf)).await;
            let Ok(Ok(len @ 1..)) = read else { return };
            let data = buf[..len].to_vec();
            if inputs
                .send(Input::FromClient { from: client, data })
                .await
                .is_err()
            {
                return;
            }
        }
    };
    tokio::select! {
        () = write => {}
        () = read => {}
    }
    let _ = inputs.send(Input::TcpClosed { client }).await;
}
