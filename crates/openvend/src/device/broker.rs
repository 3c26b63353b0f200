//! The embedded MQTT broker: MQTT 3.1.1 over TCP, just what the device channel needs, on the
//! server's own runtime, with per-topic access control.
//!
//! - CONNECT is checked by an [`Authenticator`]: the server's username and password, or a
//!   machine (username = client id = machine code, password = its secret).
//! - Access control: a machine may publish only on its own event topic and subscribe only to
//!   its own command topic; the server may do anything. A refused subscription is answered
//!   with a failure code; a refused publish is acknowledged and dropped (as Mosquitto does),
//!   so a machine cannot even reach the server on another machine's topic.
//! - QoS 0 and 1 (a QoS 2 publish is accepted with the QoS 2 handshake and delivered at
//!   QoS 1), each subscriber sent at most the QoS it was granted. At most [`MAX_INFLIGHT`]
//!   QoS 1 messages await a client's PUBACK; the rest wait. Retained messages are dropped:
//!   the protocol never retains.
//! - A peer not yet admitted may send a CONNECT of at most 4 KiB; a write that a client does
//!   not take within 30 s closes its connection.
//! - Sessions: with `clean_session = false` a client's subscriptions and the QoS 1 messages
//!   sent to it while it is away (up to [`OFFLINE_QUEUE`], oldest dropped first) survive a
//!   reconnect, and messages it had not acknowledged are sent again with DUP set. A second
//!   connection with the same client id takes the session over.
//! - Memory per idle connection is a few kilobytes (one task, a small read buffer), so ten
//!   thousand machines fit in a modest server.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, Publish, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{Error as WireError, QoS};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::bytes::BytesMut;
use tokio_util::sync::CancellationToken;

/// Largest packet accepted or sent (device messages are at most 16 KiB).
const MAX_PACKET: usize = 64 * 1024;
/// Largest first packet (a CONNECT): a peer not yet admitted makes the broker hold no more.
const MAX_CONNECT_PACKET: usize = 4 * 1024;
/// The least a connection's read buffer holds before a read. A machine's packets are a few
/// hundred bytes, so one read takes what has arrived, up to that room, where reading just the
/// bytes the parser asks for (a header, then its length, then the body) took two or three
/// system calls a packet. Past that room, a packet's rest asks for just the bytes it lacks,
/// as every read did before, so a large packet grows the buffer no more than it did then.
const READ_ROOM: usize = 1024;
/// QoS 1 messages sent to one connection and not yet acknowledged. Further messages wait
/// for a PUBACK (and, behind them, the connection's outbox fills and the session queues),
/// so a client that never acknowledges holds a bounded amount and never exhausts the packet
/// ids.
const MAX_INFLIGHT: usize = 64;
/// How long one write to a client may take before the connection is dropped: a peer that
/// stops reading must not hold its task, its socket and its buffers for ever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// QoS 1 messages kept for a disconnected persistent session.
pub const OFFLINE_QUEUE: usize = 1000;
/// Messages waiting to be written to one machine connection.
const MACHINE_OUTBOX: usize = 256;
/// How long a new connection has to send CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections that have not yet logged in, at most (each holds a task, a socket and up to
/// [`MAX_CONNECT_PACKET`] for up to [`CONNECT_TIMEOUT`]). Past it the oldest is closed to make
/// room ([`Arrivals`]).
const MAX_ARRIVALS: usize = 4096;
/// How long the check of a CONNECT's credentials (a store read) may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Who a connection is, once admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The OpenVend server: may publish and subscribe anywhere.
    Server,
    /// A machine, by code: only its own two topics.
    Machine(String),
}

/// What the check of a CONNECT's credentials found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// Admitted as this role.
    Admitted(Role),
    /// Wrong or unknown credentials.
    Refused,
    /// They could not be checked now (the store failed): the client should try again later,
    /// not give up on its credentials.
    Unavailable,
}

/// Decides who may connect. Given client id, username and password.
pub type Authenticator = Arc<
    dyn Fn(
            String,
            String,
            String,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Login> + Send>>
        + Send
        + Sync,
>;

/// A running broker.
#[derive(Clone)]
pub struct Broker {
    state: Arc<State>,
    /// The address it listens on.
    pub listen: SocketAddr,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

struct State {
    auth: Authenticator,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Session>,
    /// Exact filters → client ids subscribed.
    exact: HashMap<String, HashSet<String>>,
    /// Filters with `+` or `#` → client ids subscribed (few: the server's).
    wildcard: HashMap<String, HashSet<String>>,
    next_conn: u64,
}

struct Session {
    clean: bool,
    /// Filters with the QoS granted for each.
    filters: Vec<(String, QoS)>,
    conn: Option<Conn>,
    /// QoS 1 messages for a persistent session while it is away.
    queue: VecDeque<Publish>,
}

struct Conn {
    id: u64,
    tx: Outbox,
    /// Cancelled when another connection takes the client id over, or the server closes it.
    taken_over: CancellationToken,
}

#[derive(Clone)]
enum Outbox {
    Bounded(mpsc::Sender<Out>),
    Unbounded(mpsc::UnboundedSender<Out>),
}

impl Outbox {
    /// Hands `out` to the connection; false if it is gone or (for a machine) too far behind.
    fn send(&self, out: Out) -> bool {
        match self {
            Outbox::Bounded(tx) => tx.try_send(out).is_ok(),
            Outbox::Unbounded(tx) => tx.send(out).is_ok(),
        }
    }
}

enum Out {
    Publish(Publish),
}

impl Broker {
    /// Binds `listen` and serves until `shutdown` is cancelled.
    pub async fn start(
        listen: SocketAddr,
        auth: Authenticator,
        shutdown: CancellationToken,
    ) -> std::io::Result<Broker> {
        Self::start_admitting(listen, auth, shutdown, MAX_ARRIVALS).await
    }

    /// [`start`](Self::start) with at most `arrivals` connections not yet logged in.
    async fn start_admitting(
        listen: SocketAddr,
        auth: Authenticator,
        shutdown: CancellationToken,
        arrivals: usize,
    ) -> std::io::Result<Broker> {
        let arrivals = Arrivals::new(arrivals);
        let listener = TcpListener::bind(listen).await?;
        let listen = listener.local_addr()?;
        let state = Arc::new(State {
            auth,
            inner: Mutex::new(Inner::default()),
        });
        let accepting = state.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = shutdown.cancelled() => break,
                    a = listener.accept() => a,
                };
                match accepted {
                    Ok((socket, peer)) => {
                        let arrival = arrivals.arrive();
                        let state = accepting.clone();
                        let stop = shutdown.clone();
                        tokio::spawn(async move {
                            if let Err(e) = serve(state, socket, stop, arrival).await {
                                tracing::debug!(%peer, error = %e, "MQTT connection ended");
                            }
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors, usually: wait rather than spin.
                        tracing::warn!(error = %e, "MQTT accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(Broker { state, listen })
    }

    /// How many clients are connected now.
    pub fn connected(&self) -> usize {
        self.state
            .inner
            .lock()
            .map(|i| i.sessions.values().filter(|s| s.conn.is_some()).count())
            .unwrap_or(0)
    }
}

/// The server's own session in the embedded broker, in memory: what machines publish on
/// the filter arrives over a channel, and [`LocalSession::publisher`] routes the server's
/// commands. No loopback TCP, no MQTT encoding, no acknowledgements: nothing can be lost
/// between two parts of one process. Ends (and unsubscribes) when dropped.
pub struct LocalSession {
    rx: mpsc::UnboundedReceiver<Out>,
    broker: Broker,
    client_id: String,
    conn_id: u64,
}

impl std::fmt::Debug for LocalSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSession")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl LocalSession {
    /// A handle that publishes through the broker as the server. It does not keep the broker
    /// alive: the broker's authenticator holds the device channel, which holds this handle.
    pub fn publisher(&self) -> LocalPublisher {
        LocalPublisher(Arc::downgrade(&self.broker.state))
    }

    /// The next message published on the session's filter: its topic and payload.
    pub async fn recv(&mut self) -> Option<(String, Vec<u8>)> {
        match self.rx.recv().await? {
            Out::Publish(p) => Some((p.topic, p.payload.to_vec())),
        }
    }
}

impl Drop for LocalSession {
    fn drop(&mut self) {
        detach(
            &self.broker.state,
            &self.client_id,
            self.conn_id,
            Vec::new(),
        );
    }
}

impl Broker {
    /// Opens the server's in-memory session, subscribed to `filter`. `client_id` must not be
    /// one a machine can log in with (machine codes have no `$`).
    pub fn attach_local(&self, client_id: &str, filter: &str) -> LocalSession {
        let (tx, rx) = mpsc::unbounded_channel();
        let (conn_id, _, _) = attach(
            &self.state,
            client_id,
            true,
            Outbox::Unbounded(tx),
            CancellationToken::new(),
        );
        subscribe(&self.state, client_id, filter, QoS::AtLeastOnce);
        LocalSession {
            rx,
            broker: self.clone(),
            client_id: client_id.to_owned(),
            conn_id,
        }
    }
}

/// Publishes as the server through an embedded broker, while the broker exists.
#[derive(Clone)]
pub struct LocalPublisher(std::sync::Weak<State>);

impl std::fmt::Debug for LocalPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPublisher").finish_non_exhaustive()
    }
}

impl LocalPublisher {
    /// Routes a message the server publishes (QoS 1, not retained) to the sessions
    /// subscribed: a connected machine's connection, or its queue while it is away. False
    /// when the broker has stopped.
    pub fn publish(&self, topic: String, payload: Vec<u8>) -> bool {
        let Some(state) = self.0.upgrade() else {
            return false;
        };
        deliver(&state, Publish::new(topic, QoS::AtLeastOnce, payload));
        true
    }

    /// Closes the connection of `client_id`, if it has one; its session (and the messages
    /// queued for it) stays, as for any dropped connection.
    pub fn disconnect(&self, client_id: &str) {
        let Some(state) = self.0.upgrade() else {
            return;
        };
        let Ok(inner) = state.inner.lock() else {
            return;
        };
        if let Some(conn) = inner.sessions.get(client_id).and_then(|s| s.conn.as_ref()) {
            conn.taken_over.cancel();
        }
    }
}

/// Why a connection is closed before it logged in, to make room.
const PUSHED_OUT: &str = "closed to make room: too many connections not logged in";

/// The connections that have not logged in yet, oldest first. Past the limit the oldest is
/// closed to make room for the newest: a flood of idle connections cannot keep machines from
/// logging in (it would have to open connections faster than a machine logs in), and a
/// fleet reconnecting together stays far below the limit.
struct Arrivals {
    limit: usize,
    waiting: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    next: u64,
    by_age: BTreeMap<u64, CancellationToken>,
}

/// One connection until it has logged in (or gave up); leaves [`Arrivals`] when dropped.
struct Arrival {
    arrivals: Arc<Arrivals>,
    id: u64,
    /// Cancelled when it is closed to make room.
    pushed_out: CancellationToken,
}

impl Arrivals {
    fn new(limit: usize) -> Arc<Arrivals> {
        Arc::new(Arrivals {
            limit: limit.max(1),
            waiting: Mutex::new(Waiting::default()),
        })
    }

    /// Counts a new connection in, closing the oldest if there is no room.
    fn arrive(self: &Arc<Self>) -> Arrival {
        let pushed_out = CancellationToken::new();
        let mut id = 0;
        if let Ok(mut w) = self.waiting.lock() {
            while w.by_age.len() >= self.limit {
                match w.by_age.pop_first() {
                    Some((_, oldest)) => oldest.cancel(),
                    None => break,
                }
            }
            id = w.next;
            w.next += 1;
            w.by_age.insert(id, pushed_out.clone());
        }
        Arrival {
            arrivals: self.clone(),
            id,
            pushed_out,
        }
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        if let Ok(mut w) = self.arrivals.waiting.lock() {
            w.by_age.remove(&self.id);
        }
    }
}

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Wire(String),
    #[error("{0}")]
    Refused(&'static str),
}

impl From<WireError> for ConnError {
    fn from(e: WireError) -> Self {
        ConnError::Wire(e.to_string())
    }
}

async fn serve(
    state: Arc<State>,
    mut socket: TcpStream,
    shutdown: CancellationToken,
    arrival: Arrival,
) -> Result<(), ConnError> {
    socket.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(READ_ROOM);
    let first = tokio::select! {
        () = arrival.pushed_out.cancelled() => return Err(ConnError::Refused(PUSHED_OUT)),
        read = tokio::time::timeout(
            CONNECT_TIMEOUT,
            read_packet(&mut socket, &mut buf, MAX_CONNECT_PACKET),
        ) => read.map_err(|_| ConnError::Refused("no CONNECT in time"))??,
    };
    let Some(Packet::Connect(connect)) = first else {
        return Err(ConnError::Refused("first packet is not CONNECT"));
    };
    let (user, pass) = connect
        .login
        .as_ref()
        .map(|l| (l.username.clone(), l.password.clone()))
        .unwrap_or_default();
    let login = if connect.client_id.is_empty() {
        Login::Refused
    } else {
        let check = (state.auth)(connect.client_id.clone(), user.clone(), pass);
        tokio::select! {
            () = arrival.pushed_out.cancelled() => return Err(ConnError::Refused(PUSHED_OUT)),
            checked = tokio::time::timeout(LOGIN_TIMEOUT, check) => checked.unwrap_or_else(|_| {
                tracing::warn!(client_id = %connect.client_id, "MQTT CONNECT: the credential check timed out");
                Login::Unavailable
            }),
        }
    };
    // Logged in or refused: no longer arriving.
    drop(arrival);
    let role = match login {
        Login::Admitted(role) => role,
        Login::Refused => {
            tracing::warn!(username = %user, client_id = %connect.client_id, "MQTT CONNECT refused: bad credentials");
            let refused = ConnAck::new(ConnectReturnCode::BadUserNamePassword, false);
            write(&mut socket, Packet::ConnAck(refused)).await?;
            return Err(ConnError::Refused("bad credentials"));
        }
        Login::Unavailable => {
            let later = ConnAck::new(ConnectReturnCode::ServiceUnavailable, false);
            write(&mut socket, Packet::ConnAck(later)).await?;
            return Err(ConnError::Refused("credentials could not be checked now"));
        }
    };
    let client_id = connect.client_id.clone();
    let (tx, mut rx_bounded, mut rx_unbounded) = if role == Role::Server {
        let (tx, rx) = mpsc::unbounded_channel();
        (Outbox::Unbounded(tx), None, Some(rx))
    } else {
        let (tx, rx) = mpsc::channel(MACHINE_OUTBOX);
        (Outbox::Bounded(tx), Some(rx), None)
    };
    let taken_over = CancellationToken::new();
    let (conn_id, session_present, backlog) = attach(
        &state,
        &client_id,
        connect.clean_session,
        tx,
        taken_over.clone(),
    );
    let mut link = Link {
        state: &state,
        role: &role,
        client_id: &client_id,
        inflight: HashMap::new(),
        waiting: backlog.into(),
        next_pkid: 0,
        sent: 0,
        out: BytesMut::new(),
    };
    let keep_alive = match connect.keep_alive {
        0 => Duration::from_secs(24 * 3600),
        s => Duration::from_millis(u64::from(s) * 1500),
    };
    // From here on every way out goes through `detach` below: what this connection was
    // handed and did not deliver goes back to its session.
    let result = async {
        write(
            &mut socket,
            Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, session_present)),
        )
        .await?;
        link.send_waiting(&mut socket).await?;
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = taken_over.cancelled() => return Err(ConnError::Refused("session taken over or closed by the server")),
                r = tokio::time::timeout(keep_alive, read_packet(&mut socket, &mut buf, MAX_PACKET)) => match r {
                    Err(_) => return Err(ConnError::Refused("keep-alive expired")),
                    Ok(Err(e)) => return Err(e),
                    Ok(Ok(None)) => return Ok(()),
                    Ok(Ok(Some(p))) => Event::In(p),
                },
                // Taken from the outbox only while the window has room: behind a client that
                // does not acknowledge, the outbox fills and later messages wait in its session.
                Some(out) = recv(&mut rx_bounded, &mut rx_unbounded), if link.has_room() => Event::Out(out),
            };
            match event {
                Event::In(Packet::Disconnect) => return Ok(()),
                Event::In(p) => link.incoming(&mut socket, p).await?,
                Event::Out(Out::Publish(p)) => link.send(&mut socket, p).await?,
            }
        }
    }
    .await;
    // Whatever was queued for this connection but not written goes back to the session, in
    // the order it was sent.
    let mut inflight: Vec<(u64, Publish)> = link.inflight.into_values().collect();
    inflight.sort_by_key(|(sent, _)| *sent);
    let mut unsent: Vec<Publish> = inflight.into_iter().map(|(_, p)| p).collect();
    unsent.extend(link.waiting);
    // Closed first, so that nothing is handed to this connection after it was drained: a
    // delivery that finds it closed keeps the message in the session.
    if let Some(rx) = rx_bounded.as_mut() {
        rx.close();
        while let Ok(Out::Publish(p)) = rx.try_recv() {
            unsent.push(p);
        }
    }
    if let Some(rx) = rx_unbounded.as_mut() {
        rx.close();
        while let Ok(Out::Publish(p)) = rx.try_recv() {
            unsent.push(p);
        }
    }
    detach(&state, &client_id, conn_id, unsent);
    result
}

enum Event {
    In(Packet),
    Out(Out),
}

async fn recv(
    bounded: &mut Option<mpsc::Receiver<Out>>,
    unbounded: &mut Option<mpsc::UnboundedReceiver<Out>>,
) -> Option<Out> {
    match (bounded, unbounded) {
        (Some(rx), _) => rx.recv().await,
        (_, Some(rx)) => rx.recv().await,
        _ => std::future::pending().await,
    }
}

/// One admitted connection's protocol state.
struct Link<'a> {
    state: &'a State,
    role: &'a Role,
    client_id: &'a str,
    /// QoS 1 messages sent and not yet acknowledged, by packet id (at most
    /// [`MAX_INFLIGHT`]), each with its place in the order of sending.
    inflight: HashMap<u16, (u64, Publish)>,
    /// QoS 1 messages waiting for room in `inflight` (the session's backlog at first).
    waiting: VecDeque<Publish>,
    next_pkid: u16,
    /// QoS 1 messages sent so far: the order of `inflight` (packet ids wrap).
    sent: u64,
    out: BytesMut,
}

impl Link<'_> {
    async fn incoming(&mut self, socket: &mut TcpStream, packet: Packet) -> Result<(), ConnError> {
        match packet {
            Packet::Publish(p) => {
                let (qos, pkid) = (p.qos, p.pkid);
                self.route(p);
                match qos {
                    QoS::AtMostOnce => Ok(()),
                    QoS::AtLeastOnce => self.write(socket, Packet::PubAck(PubAck::new(pkid))).await,
                    QoS::ExactlyOnce => self.write(socket, Packet::PubRec(PubRec::new(pkid))).await,
                }
            }
            Packet::PubRel(r) => {
                self.write(socket, Packet::PubComp(PubComp::new(r.pkid)))
                    .await
            }
            Packet::PubAck(a) => {
                self.inflight.remove(&a.pkid);
                // The window has room again: what waited goes out first.
                self.send_waiting(socket).await
            }
            Packet::Subscribe(s) => {
                let mut codes = Vec::with_capacity(s.filters.len());
                for f in &s.filters {
                    codes.push(if may_subscribe(self.role, &f.path) {
                        let granted = match f.qos {
                            QoS::AtMostOnce => QoS::AtMostOnce,
                            _ => QoS::AtLeastOnce,
                        };
                        subscribe(self.state, self.client_id, &f.path, granted);
                        SubscribeReasonCode::Success(granted)
                    } else {
                        tracing::warn!(client_id = %self.client_id, filter = %f.path, "MQTT subscription refused by ACL");
                        SubscribeReasonCode::Failure
                    });
                }
                self.write(socket, Packet::SubAck(SubAck::new(s.pkid, codes)))
                    .await
            }
            Packet::Unsubscribe(u) => {
                for t in &u.topics {
                    unsubscribe(self.state, self.client_id, t);
                }
                self.write(socket, Packet::UnsubAck(UnsubAck::new(u.pkid)))
                    .await
            }
            Packet::PingReq => self.write(socket, Packet::PingResp).await,
            Packet::Connect(_) => Err(ConnError::Refused("second CONNECT")),
            Packet::Disconnect
            | Packet::PubRec(_)
            | Packet::PubComp(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => Ok(()),
        }
    }

    /// Passes a publish on to every session subscribed, if the sender may publish there.
    fn route(&self, mut p: Publish) {
        if p.retain {
            tracing::warn!(client_id = %self.client_id, topic = %p.topic, "retained MQTT message dropped");
            return;
        }
        if !may_publish(self.role, &p.topic) {
            tracing::warn!(client_id = %self.client_id, topic = %p.topic, "MQTT publish refused by ACL");
            return;
        }
        if p.qos == QoS::ExactlyOnce {
            p.qos = QoS::AtLeastOnce;
        }
        p.dup = false;
        deliver(self.state, p);
    }

    /// Whether another message may be taken from the outbox now.
    fn has_room(&self) -> bool {
        self.inflight.len() < MAX_INFLIGHT && self.waiting.is_empty()
    }

    /// Writes a publish to this client, tracking it until acknowledged if QoS 1; with the
    /// window full it waits for a PUBACK.
    async fn send(&mut self, socket: &mut TcpStream, mut p: Publish) -> Result<(), ConnError> {
        if p.qos != QoS::AtMostOnce {
            if self.inflight.len() >= MAX_INFLIGHT {
                self.waiting.push_back(p);
                return Ok(());
            }
            p.pkid = self.new_pkid();
            self.sent += 1;
            self.inflight.insert(p.pkid, (self.sent, p.clone()));
        }
        self.write(socket, Packet::Publish(p)).await
    }

    /// Sends what waits, as far as the window allows.
    async fn send_waiting(&mut self, socket: &mut TcpStream) -> Result<(), ConnError> {
        while self.inflight.len() < MAX_INFLIGHT
            && let Some(p) = self.waiting.pop_front()
        {
            self.send(socket, p).await?;
        }
        Ok(())
    }

    /// A packet id not in flight. With at most [`MAX_INFLIGHT`] in flight, one is found
    /// within that many + 1 steps.
    fn new_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    async fn write(&mut self, socket: &mut TcpStream, p: Packet) -> Result<(), ConnError> {
        self.out.clear();
        p.write(&mut self.out, MAX_PACKET)?;
        write_all(socket, &self.out).await
    }
}

/// Reads the next packet; `None` when the peer closed the connection cleanly.
async fn read_packet(
    socket: &mut TcpStream,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Packet>, ConnError> {
    loop {
        match Packet::read(buf, max) {
            Ok(p) => return Ok(Some(p)),
            Err(WireError::InsufficientBytes(n)) => {
                buf.reserve(n.max(READ_ROOM.saturating_sub(buf.len())));
            }
            Err(e) => return Err(e.into()),
        }
        if socket.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(ConnError::Wire("connection closed mid-packet".into()))
            };
        }
    }
}

async fn write(socket: &mut TcpStream, p: Packet) -> Result<(), ConnError> {
    let mut out = BytesMut::new();
    p.write(&mut out, MAX_PACKET)?;
    write_all(socket, &out).await
}

/// Writes `bytes` within [`WRITE_TIMEOUT`].
async fn write_all(socket: &mut TcpStream, bytes: &[u8]) -> Result<(), ConnError> {
    tokio::time::timeout(WRITE_TIMEOUT, socket.write_all(bytes))
        .await
        .map_err(|_| ConnError::Refused("a write to the client timed out"))??;
    Ok(())
}

/// The access rules: a machine owns exactly its two topics.
fn may_publish(role: &Role, topic: &str) -> bool {
    match role {
        Role::Server => true,
        Role::Machine(code) => topic == super::mqtt::evt_topic(code),
    }
}

fn may_subscribe(role: &Role, filter: &str) -> bool {
    match role {
        Role::Server => valid_filter(filter),
        Role::Machine(code) => filter == super::mqtt::cmd_topic(code),
    }
}

fn valid_filter(filter: &str) -> bool {
    let levels: Vec<&str> = filter.split('/').collect();
    !filter.is_empty()
        && levels.iter().enumerate().all(|(i, l)| match *l {
            "#" => i == levels.len() - 1,
            "+" => true,
            l => !l.contains(['+', '#']),
        })
}

/// Whether `topic` matches `filter` (`+` one level, `#` the rest).
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut t = topic.split('/');
    for f in filter.split('/') {
        match f {
            "#" => return true,
            "+" => {
                if t.next().is_none() {
                    return false;
                }
            }
            level => {
                if t.next() != Some(level) {
                    return false;
                }
            }
        }
    }
    t.next().is_none()
}

/// Registers a connection for `client_id`; returns its id, whether a session was kept, and
/// what the session has waiting.
fn attach(
    state: &State,
    client_id: &str,
    clean: bool,
    tx: Outbox,
    taken_over: CancellationToken,
) -> (u64, bool, Vec<Publish>) {
    let Ok(mut inner) = state.inner.lock() else {
        return (0, false, Vec::new());
    };
    inner.next_conn += 1;
    let id = inner.next_conn;
    if clean {
        // A connection still holding the client id is closed, whatever its session.
        if let Some(old) = inner
            .sessions
            .get_mut(client_id)
            .and_then(|s| s.conn.take())
        {
            old.taken_over.cancel();
        }
        drop_session(&mut inner, client_id);
    }
    let session = inner
        .sessions
        .entry(client_id.to_owned())
        .or_insert_with(|| Session {
            clean,
            filters: Vec::new(),
            conn: None,
            queue: VecDeque::new(),
        });
    let present = !clean && (!session.filters.is_empty() || !session.queue.is_empty());
    session.clean = clean;
    if let Some(old) = session.conn.replace(Conn { id, tx, taken_over }) {
        old.taken_over.cancel();
    }
    let backlog = session.queue.drain(..).collect();
    (id, present, backlog)
}

/// Unregisters connection `conn_id`: a clean session goes, a persistent one keeps what was
/// not delivered.
fn detach(state: &State, client_id: &str, conn_id: u64, unsent: Vec<Publish>) {
    let Ok(mut inner) = state.inner.lock() else {
        return;
    };
    let Some(session) = inner.sessions.get_mut(client_id) else {
        return;
    };
    let current = session.conn.as_ref().is_some_and(|c| c.id == conn_id);
    if session.clean {
        if current {
            drop_session(&mut inner, client_id);
        }
        return;
    }
    // Put back what this connection did not deliver, ahead of newer messages. QoS 0 ones
    // are not kept for a session, as for any client away.
    for mut p in unsent.into_iter().rev() {
        if p.qos == QoS::AtMostOnce {
            continue;
        }
        p.dup = true;
        session.queue.push_front(p);
    }
    while session.queue.len() > OFFLINE_QUEUE {
        session.queue.pop_front();
    }
    if current {
        session.conn = None;
    } else if let Some(conn) = &session.conn {
        // A newer connection took over: hand it what this one left. What its outbox cannot
        // take stays queued, and the newer connection is closed so that its client connects
        // again and is handed the queue whole.
        while let Some(p) = session.queue.pop_front() {
            if !conn.tx.send(Out::Publish(p.clone())) {
                session.queue.push_front(p);
                conn.taken_over.cancel();
                break;
            }
        }
    }
}

fn drop_session(inner: &mut Inner, client_id: &str) {
    if let Some(old) = inner.sessions.remove(client_id) {
        for (f, _) in old.filters {
            remove_route(inner, client_id, &f);
        }
    }
}

fn subscribe(state: &State, client_id: &str, filter: &str, qos: QoS) {
    let Ok(mut inner) = state.inner.lock() else {
        return;
    };
    let Some(session) = inner.sessions.get_mut(client_id) else {
        return;
    };
    match session.filters.iter_mut().find(|(f, _)| f == filter) {
        Some(existing) => existing.1 = qos,
        None => session.filters.push((filter.to_owned(), qos)),
    }
    let table = if filter.contains(['+', '#']) {
        &mut inner.wildcard
    } else {
        &mut inner.exact
    };
    table
        .entry(filter.to_owned())
        .or_default()
        .insert(client_id.to_owned());
}

fn unsubscribe(state: &State, client_id: &str, filter: &str) {
    let Ok(mut inner) = state.inner.lock() else {
        return;
    };
    if let Some(session) = inner.sessions.get_mut(client_id) {
        session.filters.retain(|(f, _)| f != filter);
    }
    remove_route(&mut inner, client_id, filter);
}

fn remove_route(inner: &mut Inner, client_id: &str, filter: &str) {
    for table in [&mut inner.exact, &mut inner.wildcard] {
        if let Some(clients) = table.get_mut(filter) {
            clients.remove(client_id);
            if clients.is_empty() {
                table.remove(filter);
            }
        }
    }
}

/// Hands a publish to every subscribed session: to its connection, or to its queue while it
/// is away (QoS 1, persistent sessions only).
fn deliver(state: &State, p: Publish) {
    let Ok(mut inner) = state.inner.lock() else {
        return;
    };
    let mut targets: HashSet<String> = inner.exact.get(&p.topic).cloned().unwrap_or_default();
    for (filter, clients) in &inner.wildcard {
        if matches(filter, &p.topic) {
            targets.extend(clients.iter().cloned());
        }
    }
    for client in targets {
        let Some(session) = inner.sessions.get_mut(&client) else {
            continue;
        };
        // Sent at most at the QoS the subscription was granted (the highest of its matching
        // filters): a QoS 0 subscriber is not expected to acknowledge, so its messages are
        // neither tracked nor kept while it is away. A session with one filter (a machine's,
        // the server's) was routed here by that filter, so nothing needs matching again.
        let granted = match session.filters.as_slice() {
            [(_, qos)] => *qos,
            filters => filters
                .iter()
                .filter(|(f, _)| matches(f, &p.topic))
                .map(|(_, q)| *q)
                .max_by_key(|q| *q as u8)
                .unwrap_or(QoS::AtMostOnce),
        };
        let mut p = p.clone();
        if granted == QoS::AtMostOnce {
            p.qos = QoS::AtMostOnce;
        }
        // Behind messages the session still keeps, a new one waits its turn there.
        let delivered = session.queue.is_empty()
            && session
                .conn
                .as_ref()
                .is_some_and(|c| c.tx.send(Out::Publish(p.clone())));
        if !delivered {
            let kept = !session.clean && p.qos == QoS::AtLeastOnce;
            if kept {
                session.queue.push_back(p.clone());
                if session.queue.len() > OFFLINE_QUEUE {
                    session.queue.pop_front();
                }
            }
            // A connection this far behind (its window and outbox full) with a persistent
            // session is closed: its client connects again and is handed what the session
            // kept. A clean session keeps nothing, so closing it would lose more: the
            // message is dropped.
            if let Some(conn) = &session.conn {
                if kept {
                    tracing::warn!(client_id = %client, topic = %p.topic, "MQTT client too far behind; connection closed to hand it its session");
                    conn.taken_over.cancel();
                } else {
                    tracing::warn!(client_id = %client, topic = %p.topic, "MQTT client too far behind; message dropped");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that neither sends nor closes stays open for the whole `within`.
    async fn stays_open(socket: &mut TcpStream, within: Duration) -> bool {
        let mut byte = [0u8; 1];
        tokio::time::timeout(within, socket.read(&mut byte))
            .await
            .is_err()
    }

    #[tokio::test]
    async fn credentials_that_cannot_be_checked_now_are_answered_service_unavailable() {
        let answers = [
            (Login::Unavailable, ConnectReturnCode::ServiceUnavailable),
            (Login::Refused, ConnectReturnCode::BadUserNamePassword),
        ];
        for (login, code) in answers {
            let auth: Authenticator = Arc::new(move |_, _, _| {
                let login = login.clone();
                Box::pin(async move { login })
            });
            let shutdown = CancellationToken::new();
            let broker = Broker::start("127.0.0.1:0".parse().unwrap(), auth, shutdown.clone())
                .await
                .unwrap();
            let mut socket = TcpStream::connect(broker.listen).await.unwrap();
            let mut connect = rumqttc::mqttbytes::v4::Connect::new("VM-1");
            connect.set_login("VM-1", "secret");
            write(&mut socket, Packet::Connect(connect)).await.unwrap();
            let mut buf = BytesMut::new();
            let answer = read_packet(&mut socket, &mut buf, MAX_PACKET).await;
            assert!(
                matches!(&answer, Ok(Some(Packet::ConnAck(a))) if a.code == code),
                "{answer:?}"
            );
            shutdown.cancel();
        }
    }

    /// The next `n` packets from the broker, each within 5 s.
    async fn answers(socket: &mut TcpStream, buf: &mut BytesMut, n: usize) -> Vec<Packet> {
        let mut answers = Vec::new();
        for _ in 0..n {
            let answer =
                tokio::time::timeout(Duration::from_secs(5), read_packet(socket, buf, MAX_PACKET))
                    .await;
            assert!(answer.is_ok(), "no answer in time after {answers:?}");
            if let Ok(answer) = answer {
                answers.push(answer.unwrap().expect("a packet"));
            }
        }
        answers
    }

    fn event(pkid: u16, size: usize) -> Packet {
        let mut p = Publish::new(
            super::super::mqtt::evt_topic("VM-1"),
            QoS::AtLeastOnce,
            vec![b'x'; size],
        );
        p.pkid = pkid;
        Packet::Publish(p)
    }

    fn encode(packets: impl IntoIterator<Item = Packet>) -> BytesMut {
        let mut bytes = BytesMut::new();
        for p in packets {
            p.write(&mut bytes, MAX_PACKET).unwrap();
        }
        bytes
    }

    /// The packet ids of `answers`, each of which must be a PUBACK.
    fn acked(answers: &[Packet]) -> Vec<u16> {
        let ids: Vec<u16> = answers
            .iter()
            .filter_map(|a| match a {
                Packet::PubAck(a) => Some(a.pkid),
                _ => None,
            })
            .collect();
        assert_eq!(ids.len(), answers.len(), "not all PUBACKs: {answers:?}");
        ids
    }

    #[tokio::test]
    async fn packets_that_arrive_together_are_each_answered_in_order() {
        let admit: Authenticator =
            Arc::new(|_, _, _| Box::pin(async { Login::Admitted(Role::Machine("VM-1".into())) }));
        let shutdown = CancellationToken::new();
        let broker = Broker::start("127.0.0.1:0".parse().unwrap(), admit, shutdown.clone())
            .await
            .unwrap();
        let mut socket = TcpStream::connect(broker.listen).await.unwrap();
        let mut buf = BytesMut::new();

        // Everything in one write: the broker reads past the CONNECT while the login is
        // checked, and past each packet after it.
        let mut connect = rumqttc::mqttbytes::v4::Connect::new("VM-1");
        connect.set_login("VM-1", "secret");
        let mut subscribe = rumqttc::mqttbytes::v4::Subscribe::new(
            super::super::mqtt::cmd_topic("VM-1"),
            QoS::AtLeastOnce,
        );
        subscribe.pkid = 1;
        let first = [Packet::Connect(connect), Packet::Subscribe(subscribe)]
            .into_iter()
            .chain([event(7, 300), event(8, 300), Packet::PingReq]);
        socket.write_all(&encode(first)).await.unwrap();
        let got = answers(&mut socket, &mut buf, 5).await;
        assert!(
            matches!(&got[0], Packet::ConnAck(a) if a.code == ConnectReturnCode::Success),
            "{got:?}"
        );
        assert!(
            matches!(&got[1], Packet::SubAck(a) if a.pkid == 1),
            "{got:?}"
        );
        assert_eq!(acked(&got[2..4]), [7, 8]);
        assert!(matches!(&got[4], Packet::PingResp), "{got:?}");

        // More than one read's room at once: packets split between two reads.
        socket
            .write_all(&encode((10..16).map(|pkid| event(pkid, 300))))
            .await
            .unwrap();
        assert_eq!(
            acked(&answers(&mut socket, &mut buf, 6).await),
            [10, 11, 12, 13, 14, 15]
        );

        // A packet larger than the room, arriving in two parts.
        let large = encode([event(20, 5000)]);
        let (head, tail) = large.split_at(700);
        socket.write_all(head).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        socket.write_all(tail).await.unwrap();
        assert_eq!(acked(&answers(&mut socket, &mut buf, 1).await), [20]);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_large_packet_in_parts_grows_the_read_buffer_only_to_its_size() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        // A CONNECT of exactly the largest size allowed, its last bytes sent apart.
        let connect = |password_len: usize| {
            let mut c = rumqttc::mqttbytes::v4::Connect::new("VM-1");
            c.set_login("VM-1", "p".repeat(password_len));
            encode([Packet::Connect(c)])
        };
        let bytes = connect(4000 + MAX_CONNECT_PACKET - connect(4000).len());
        assert_eq!(bytes.len(), MAX_CONNECT_PACKET);
        // The server reads while the parts arrive, as a connection's task does.
        let reading = tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(READ_ROOM);
            let packet = read_packet(&mut server, &mut buf, MAX_CONNECT_PACKET).await;
            (packet, buf)
        });
        let (head, tail) = bytes.split_at(MAX_CONNECT_PACKET - 96);
        client.write_all(head).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.write_all(tail).await.unwrap();
        let (packet, buf) = reading.await.unwrap();
        let packet = packet.unwrap();
        assert!(matches!(packet, Some(Packet::Connect(_))), "{packet:?}");
        // What the buffer holds past the packet: nothing was asked for beyond its last bytes.
        assert!(
            buf.capacity() < READ_ROOM,
            "{} bytes of room left past a {MAX_CONNECT_PACKET}-byte packet",
            buf.capacity()
        );
    }

    #[tokio::test]
    async fn past_the_limit_of_connections_not_logged_in_the_oldest_is_closed() {
        let refuse_all: Authenticator = Arc::new(|_, _, _| Box::pin(async { Login::Refused }));
        let shutdown = CancellationToken::new();
        let broker = Broker::start_admitting(
            "127.0.0.1:0".parse().unwrap(),
            refuse_all,
            shutdown.clone(),
            2,
        )
        .await
        .unwrap();
        let connect = || TcpStream::connect(broker.listen);
        let mut first = connect().await.unwrap();
        let mut second = connect().await.unwrap();
        assert!(stays_open(&mut first, Duration::from_millis(200)).await);
        // A third: the oldest makes room.
        let mut third = connect().await.unwrap();
        assert!(
            !stays_open(&mut first, Duration::from_secs(5)).await,
            "the oldest connection not logged in was kept past the limit"
        );
        assert!(stays_open(&mut second, Duration::from_millis(200)).await);
        assert!(stays_open(&mut third, Duration::from_millis(200)).await);
        // One that goes away frees its place: the next pushes nobody out.
        drop(second);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut fourth = connect().await.unwrap();
        assert!(stays_open(&mut third, Duration::from_millis(300)).await);
        assert!(stays_open(&mut fourth, Duration::from_millis(300)).await);
        shutdown.cancel();
    }

    #[test]
    fn filters_match_as_mqtt_says() {
        assert!(matches("openvend/v1/m/+/evt", "openvend/v1/m/VM1/evt"));
        assert!(!matches("openvend/v1/m/+/evt", "openvend/v1/m/VM1/cmd"));
        assert!(!matches("openvend/v1/m/+/evt", "openvend/v1/m/a/b/evt"));
        assert!(matches("openvend/#", "openvend/v1/m/a/b/evt"));
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(valid_filter("openvend/v1/m/+/evt"));
        assert!(!valid_filter("a/#/b"));
        assert!(!valid_filter("a/b+"));
    }

    #[test]
    fn a_machine_owns_exactly_its_two_topics() {
        let m = Role::Machine("VM1".into());
        assert!(may_publish(&m, "openvend/v1/m/VM1/evt"));
        assert!(!may_publish(&m, "openvend/v1/m/VM2/evt"));
        assert!(!may_publish(&m, "openvend/v1/m/VM1/cmd"));
        assert!(may_subscribe(&m, "openvend/v1/m/VM1/cmd"));
        assert!(!may_subscribe(&m, "openvend/v1/m/+/cmd"));
        assert!(!may_subscribe(&m, "#"));
        assert!(may_subscribe(&Role::Server, "openvend/v1/m/+/evt"));
    }
}
