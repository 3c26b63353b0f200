//! The MQTT transport: the server's supervised client link, and the embedded broker.
//!
//! Topics, one pair per machine, QoS 1, never retained:
//! - `openvend/v1/m/{machine_code}/cmd`: server → machine, signed command envelopes;
//! - `openvend/v1/m/{machine_code}/evt`: machine → server, signed event envelopes.
//!
//! The link subscribes `openvend/v1/m/+/evt` and passes every message, with the machine
//! code taken from the topic, to [`DeviceChannel::receive_arrived`] (a message a broker took:
//! the machine keeps it until it sees its effect), which checks that the envelope names the
//! same machine and is signed with *that* machine's secret. Retained messages are
//! ignored (a retained event would be replayed to every new subscriber).
//!
//! The embedded broker (`device::broker`) checks per-machine credentials at CONNECT
//! (username = machine code = client id, password = machine secret) and confines each machine
//! to its own two topics. The envelope signature (keyed by the secret of the machine the
//! topic names) is checked on every message anyway, so an external broker without ACLs
//! cannot let one machine speak for another either; configure ACLs there too
//! (docs/device-protocol.md).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ledger::DeviceChannel;
use super::signing;
use crate::config::{MqttSettings, Secret};

/// Prefix of every OpenVend topic.
pub const TOPIC_PREFIX: &str = "openvend/v1/m/";
/// The filter the server subscribes to.
pub const EVT_FILTER: &str = "openvend/v1/m/+/evt";

/// The command topic of a machine.
pub fn cmd_topic(machine: &str) -> String {
    format!("{TOPIC_PREFIX}{machine}/cmd")
}

/// The event topic of a machine.
pub fn evt_topic(machine: &str) -> String {
    format!("{TOPIC_PREFIX}{machine}/evt")
}

/// The machine code an event topic names, if the topic is one.
pub fn machine_of_evt_topic(topic: &str) -> Option<&str> {
    let code = topic.strip_prefix(TOPIC_PREFIX)?.strip_suffix("/evt")?;
    super::protocol::is_valid_id(code).then_some(code)
}

/// Where and as whom the server's MQTT client connects.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id; fixed, so the broker keeps the session (and queued QoS 1 events) across
    /// reconnects.
    pub client_id: String,
    /// Server username.
    pub username: Option<String>,
    /// Server password.
    pub password: Option<Secret>,
    /// Ask the broker to keep the session (subscription and queued QoS 1 events) while the
    /// server is away. True in production; tests on a shared broker turn it off so they
    /// leave no sessions behind.
    pub persistent_session: bool,
}

impl LinkSettings {
    /// From the config: the external broker's `mqtt://host:port`, or the embedded broker's
    /// listen address.
    pub fn from_settings(s: &MqttSettings) -> Result<LinkSettings, String> {
        let (host, port) = match &s.url {
            Some(url) => {
                let rest = url
                    .strip_prefix("mqtt://")
                    .or_else(|| url.strip_prefix("tcp://"))
                    .ok_or_else(|| format!("mqtt.url {url:?}: use mqtt://host:port"))?;
                let (h, p) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| format!("mqtt.url {url:?}: missing port"))?;
                let p: u16 = p
                    .parse()
                    .map_err(|_| format!("mqtt.url {url:?}: bad port"))?;
                (h.to_owned(), p)
            }
            None => {
                let addr: SocketAddr = s.embedded_listen.parse().map_err(|_| {
                    format!(
                        "mqtt.embedded_listen {:?}: not host:port",
                        s.embedded_listen
                    )
                })?;
                (addr.ip().to_string(), addr.port())
            }
        };
        Ok(LinkSettings {
            host,
            port,
            client_id: s.client_id.clone(),
            username: s.username.clone(),
            password: s.password.clone(),
            persistent_session: true,
        })
    }
}

/// Runs the server's MQTT link until `shutdown` is cancelled: connects, subscribes to every
/// machine's event topic, hands incoming events to `channel`, lets `channel` publish
/// commands, and re-delivers pending commands after each (re)connect. Never gives up: on a
/// connection error it backs off (1 s doubling to 30 s) and polls again, which reconnects.
pub async fn run_link(channel: DeviceChannel, settings: LinkSettings, shutdown: CancellationToken) {
    let mut opts = MqttOptions::new(
        settings.client_id.clone(),
        settings.host.clone(),
        settings.port,
    );
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_clean_session(!settings.persistent_session);
    opts.set_max_packet_size(64 * 1024, 64 * 1024);
    // An event is acknowledged to the broker once it is stored (`BrokerAck`), not when it
    // arrives: until then the broker keeps it, and delivers it again after a crash or a
    // reconnect. The machine's own connection to the broker never dropped, so nothing else
    // would make it send the event again.
    opts.set_manual_acks(true);
    if let Some(user) = &settings.username {
        let pass = settings
            .password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .unwrap_or_default();
        opts.set_credentials(user.clone(), pass);
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    channel.attach_mqtt(Some(Publisher::Client(client.clone())));
    let (work_tx, workers) = start_workers(&channel, false, &shutdown);
    let connection = Arc::new(AtomicU64::new(0));

    let mut backoff = Duration::from_secs(1);
    loop {
        let polled = tokio::select! {
            () = shutdown.cancelled() => break,
            polled = eventloop.poll() => polled,
        };
        match polled {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                connection.fetch_add(1, Ordering::SeqCst);
                backoff = Duration::from_secs(1);
                tracing::info!(host = %settings.host, port = settings.port, "MQTT link connected");
                if let Err(e) = client.try_subscribe(EVT_FILTER, QoS::AtLeastOnce) {
                    tracing::warn!(error = %e, "could not queue the subscription");
                }
                if work_tx.send(Work::RedeliverAll).is_err() {
                    tracing::error!("MQTT worker stopped; pending commands not re-delivered");
                }
            }
            Ok(MqttEvent::Incoming(Packet::SubAck(_))) => channel.set_link_up(true),
            Ok(MqttEvent::Incoming(Packet::Publish(mut p))) => {
                let payload = std::mem::take(&mut p.payload);
                let ack = BrokerAck {
                    client: client.clone(),
                    publish: p,
                    on_connection: connection.load(Ordering::SeqCst),
                    connection: connection.clone(),
                };
                if ack.publish.retain {
                    tracing::warn!(topic = %ack.publish.topic, "retained message ignored");
                    tokio::spawn(ack.send());
                    continue;
                }
                let topic = ack.publish.topic.clone();
                hand_over(&channel, &work_tx, &topic, payload.to_vec(), Some(ack));
            }
            Ok(_) => {}
            Err(e) => {
                // Acknowledgements of this connection's messages must not go out on the next
                // one, where a packet id may name another message.
                connection.fetch_add(1, Ordering::SeqCst);
                channel.set_link_up(false);
                tracing::warn!(error = %e, backoff_s = backoff.as_secs(), "MQTT link error; reconnecting");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    // Gone with the event loop, the link's queue refuses what workers still send (an
    // acknowledgement would otherwise wait for room that never comes).
    drop(eventloop);
    stop(&channel, work_tx, workers).await;
}

/// The server's client id inside the embedded broker; `$` keeps it apart from every machine
/// code.
const LOCAL_CLIENT_ID: &str = "$openvend-server";

/// Opens the server's in-memory session in the embedded broker, subscribed to every
/// machine's events. Open it before machines can connect: what they publish before it exists
/// reaches nobody.
pub fn attach_local(broker: &super::broker::Broker) -> super::broker::LocalSession {
    broker.attach_local(LOCAL_CLIENT_ID, EVT_FILTER)
}

/// Runs the server's link to the embedded broker in memory until `shutdown` is cancelled:
/// the same workers and ledger as [`run_link`], without a loopback connection and its TCP,
/// MQTT encoding and acknowledgements.
pub async fn run_local_link(
    channel: DeviceChannel,
    mut session: super::broker::LocalSession,
    shutdown: CancellationToken,
) {
    channel.attach_mqtt(Some(Publisher::Embedded(session.publisher())));
    let (work_tx, workers) = start_workers(&channel, true, &shutdown);
    if work_tx.send(Work::RedeliverAll).is_err() {
        tracing::error!("MQTT worker stopped; pending commands not re-delivered");
    }
    channel.set_link_up(true);
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => break,
            next = session.recv() => next,
        };
        let Some((topic, payload)) = next else { break };
        hand_over(&channel, &work_tx, &topic, payload, None);
    }
    drop(session);
    stop(&channel, work_tx, workers).await;
}

/// Ends a link: the ledger stops publishing through it, and the workers finish what they
/// were handed.
async fn stop(channel: &DeviceChannel, work_tx: Shards, workers: Vec<tokio::task::JoinHandle<()>>) {
    channel.attach_mqtt(None);
    channel.set_link_up(false);
    drop(work_tx);
    for w in workers {
        let _ = w.await;
    }
    tracing::info!("MQTT link stopped");
}

/// Where the ledger publishes commands: the MQTT client of [`run_link`], or the embedded
/// broker itself.
#[derive(Debug, Clone)]
pub enum Publisher {
    /// A client connected to a broker.
    Client(AsyncClient),
    /// The embedded broker, in memory.
    Embedded(super::broker::LocalPublisher),
}

impl Publisher {
    /// Publishes at QoS 1, not retained. An error means the message was not handed over.
    pub async fn publish(&self, topic: String, payload: Vec<u8>) -> Result<(), String> {
        match self {
            Publisher::Client(c) => c
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .map_err(|e| e.to_string()),
            Publisher::Embedded(b) => {
                if b.publish(topic, payload) {
                    Ok(())
                } else {
                    Err("the embedded broker has stopped".into())
                }
            }
        }
    }

    /// Closes a machine's connection to the embedded broker, so it must connect (and be
    /// checked) again. An external broker's connections are its own: there, the operator
    /// revokes the machine's broker account (see docs/device-protocol.md).
    pub fn disconnect(&self, machine: &str) {
        if let Publisher::Embedded(b) = self {
            b.disconnect(machine);
        }
    }
}

/// Starts the workers that handle incoming messages, apart from the link (a handler may
/// publish, and publishing through a client needs its event loop polled). Each machine's
/// messages always go to the same worker, so they are handled in the order they arrived,
/// while different machines proceed in parallel. The link never waits on a worker. With
/// `bounded` (the embedded broker, which can close a machine's connection) what a machine has
/// waiting is bounded ([`MACHINE_BACKLOG_BYTES`]); through an external broker nothing is
/// dropped, and going over is only logged: what waits is bounded there by the broker, which
/// sends no more than its in-flight window of events it has no acknowledgement for.
fn start_workers(
    channel: &DeviceChannel,
    bounded: bool,
    shutdown: &CancellationToken,
) -> (Shards, Vec<tokio::task::JoinHandle<()>>) {
    let backlog = Backlog::default();
    let mut shards = Vec::with_capacity(INCOMING_WORKERS);
    let mut workers = Vec::with_capacity(INCOMING_WORKERS);
    for _ in 0..INCOMING_WORKERS {
        let (tx, rx) = mpsc::unbounded_channel::<Work>();
        shards.push(tx);
        workers.push(tokio::spawn(incoming_worker(
            channel.clone(),
            rx,
            backlog.clone(),
            shutdown.clone(),
        )));
    }
    (
        Shards {
            shards,
            backlog,
            bounded,
        },
        workers,
    )
}

/// Bytes of one machine's messages waiting for its worker before more are refused: some
/// minutes of a machine's normal traffic (a heartbeat every 30 s, a few events a sale)
/// through a store outage, or 16 messages of the largest size. Only a machine sending far
/// faster than its events can be stored reaches it.
const MACHINE_BACKLOG_BYTES: usize = 256 * 1024;

/// What each machine has waiting for its worker, in bytes.
#[derive(Clone, Default)]
struct Backlog(Arc<Mutex<HashMap<String, usize>>>);

impl Backlog {
    /// Counts `bytes` more for `machine`; false if that passes its limit, in which case
    /// they are counted only if `anyway`.
    fn take(&self, machine: &str, bytes: usize, anyway: bool) -> bool {
        let Ok(mut m) = self.0.lock() else {
            return true;
        };
        let queued = m.entry(machine.to_owned()).or_insert(0);
        let within = *queued + bytes <= MACHINE_BACKLOG_BYTES;
        if within || anyway {
            *queued += bytes;
        }
        within
    }

    /// `bytes` of `machine` handled.
    fn done(&self, machine: &str, bytes: usize) {
        let Ok(mut m) = self.0.lock() else {
            return;
        };
        if let Some(queued) = m.get_mut(machine) {
            *queued = queued.saturating_sub(bytes);
            if *queued == 0 {
                m.remove(machine);
            }
        }
    }
}

/// An external broker's message, to be acknowledged once it is stored or refused for good.
struct BrokerAck {
    client: AsyncClient,
    /// The message, its payload taken: the acknowledgement needs its packet id and QoS.
    publish: rumqttc::Publish,
    /// The link's connection it came on, and the link's current one.
    on_connection: u64,
    connection: Arc<AtomicU64>,
}

impl BrokerAck {
    /// Whether the link is still on the connection the message came on. A packet id names
    /// a message only on its connection: after a reconnect the broker delivers it again
    /// (under the kept session), and that copy is acknowledged instead.
    fn current(&self) -> bool {
        self.connection.load(Ordering::SeqCst) == self.on_connection
    }

    /// Acknowledges from a worker, waiting for room in the link's queue.
    async fn send(self) {
        if self.current()
            && let Err(e) = self.client.ack(&self.publish).await
        {
            tracing::warn!(error = %e, "could not acknowledge an event to the broker");
        }
    }
}

/// Passes a message on an event topic to its machine's worker.
fn hand_over(
    channel: &DeviceChannel,
    work_tx: &Shards,
    topic: &str,
    payload: Vec<u8>,
    ack: Option<BrokerAck>,
) {
    let Some(machine) = machine_of_evt_topic(topic) else {
        tracing::warn!(topic, "message on an unknown topic ignored");
        if let Some(ack) = ack {
            // Sent apart: the link must not wait for room in its own queue.
            tokio::spawn(ack.send());
        }
        return;
    };
    let work = Work::Message {
        machine: machine.to_owned(),
        payload,
        arrived_at: channel.now_ms(),
        ack,
    };
    match work_tx.send(work) {
        Ok(()) => {}
        Err(SendError::MachineBacklogFull) => {
            // Acknowledged by the embedded broker already, so dropped here; the machine is
            // disconnected, and sends its recent events again when it is back
            // (device-protocol.md §2).
            tracing::warn!(
                machine,
                "machine sends faster than its events can be stored: event dropped and machine disconnected"
            );
            channel.close_connection(machine);
        }
        Err(SendError::Stopped) => tracing::error!(topic, "MQTT worker stopped; event dropped"),
    }
}

/// Why a message was not handed to its worker.
enum SendError {
    /// The machine's backlog is full.
    MachineBacklogFull,
    /// The worker has stopped.
    Stopped,
}

/// How long an event the embedded broker took is retried against an unavailable store before
/// it is dropped and its machine disconnected (an external broker's is held until stored).
const STORE_OUTAGE_LIMIT: Duration = Duration::from_secs(600);

/// Workers handling incoming messages; a machine's messages always go to the same one.
const INCOMING_WORKERS: usize = 8;

struct Shards {
    shards: Vec<mpsc::UnboundedSender<Work>>,
    backlog: Backlog,
    /// Whether a machine over its backlog is refused (the embedded broker) or only logged.
    bounded: bool,
}

impl Shards {
    fn send(&self, work: Work) -> Result<(), SendError> {
        let i = match &work {
            Work::Message {
                machine, payload, ..
            } => {
                let size = work_size(machine, payload);
                if !self.backlog.take(machine, size, !self.bounded) {
                    if self.bounded {
                        return Err(SendError::MachineBacklogFull);
                    }
                    tracing::warn!(
                        %machine,
                        queued_over = MACHINE_BACKLOG_BYTES,
                        "machine sends faster than its events can be stored"
                    );
                }
                let h = machine.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                });
                (h % self.shards.len() as u64) as usize
            }
            Work::RedeliverAll => 0,
        };
        let sent = self.shards.get(i).is_some_and(|tx| tx.send(work).is_ok());
        sent.then_some(()).ok_or(SendError::Stopped)
    }
}

/// What a message counts against its machine's backlog: its bytes and a little for the rest.
fn work_size(machine: &str, payload: &[u8]) -> usize {
    payload.len() + machine.len() + 64
}

async fn incoming_worker(
    worker_channel: DeviceChannel,
    mut work_rx: mpsc::UnboundedReceiver<Work>,
    backlog: Backlog,
    shutdown: CancellationToken,
) {
    while let Some(work) = work_rx.recv().await {
        match work {
            Work::Message {
                machine,
                payload,
                arrived_at,
                ack,
            } => {
                // A store outage is waited out here (this machine's later messages wait
                // behind it, keeping their order) rather than losing the event. The
                // embedded broker gave the machine its PUBACK on arrival, so after 10 minutes
                // the machine is made to reconnect and send it again. An external broker has
                // had no acknowledgement: the event is held until it is stored, however long
                // that takes (the broker keeps what follows), or until the server stops, and
                // the broker then delivers it to the next start. Other rejections are final
                // and logged inside receive.
                let mut delay = Duration::from_millis(50);
                let started = tokio::time::Instant::now();
                let mut taken = true;
                while let Err(super::Rejection::Unavailable) = worker_channel
                    .receive_arrived(&machine, &payload, arrived_at)
                    .await
                {
                    let given_up = match ack {
                        Some(_) => shutdown.is_cancelled(),
                        None => started.elapsed() > STORE_OUTAGE_LIMIT,
                    };
                    if given_up {
                        taken = false;
                        break;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                match (taken, ack) {
                    (true, Some(ack)) => ack.send().await,
                    (true, None) => {}
                    (false, Some(_)) => tracing::warn!(
                        %machine,
                        "device event left with the broker at shutdown: the store is unavailable"
                    ),
                    // The embedded broker acknowledged it on arrival: the machine is
                    // disconnected, and sends its recent events again when it is back
                    // (device-protocol.md §2).
                    (false, None) => {
                        tracing::error!(
                            %machine,
                            "device event dropped and machine disconnected: the store was unavailable for 10 minutes"
                        );
                        worker_channel.close_connection(&machine);
                    }
                }
                backlog.done(&machine, work_size(&machine, &payload));
            }
            Work::RedeliverAll => worker_channel.redeliver_all().await,
        }
    }
}

enum Work {
    Message {
        machine: String,
        payload: Vec<u8>,
        /// Server clock when the link received it.
        arrived_at: i64,
        /// The external broker's acknowledgement, sent once it is stored.
        ack: Option<BrokerAck>,
    },
    RedeliverAll,
}

/// The embedded broker, serving until the shutdown token given to [`start_embedded`] is
/// cancelled.
#[derive(Debug)]
pub struct EmbeddedBroker {
    /// The address it listens on (the real port when asked for port 0).
    pub listen: SocketAddr,
    /// The broker itself (connection counts).
    pub broker: super::broker::Broker,
}

/// Starts the embedded broker (`device::broker`) on `listen`, admitting the server
/// (`server_user`/`server_password`) and every machine whose code is the username and the
/// client id and whose secret is the password. Returns once it accepts connections.
pub async fn start_embedded(
    listen: SocketAddr,
    channel: DeviceChannel,
    server_user: String,
    server_password: Secret,
    shutdown: CancellationToken,
) -> std::io::Result<EmbeddedBroker> {
    use super::broker::{Authenticator, Broker, Login, Role};
    let auth: Authenticator = Arc::new(move |client_id: String, user: String, pass: String| {
        let channel = channel.clone();
        let server_user = server_user.clone();
        let server_password = server_password.clone();
        Box::pin(async move {
            let admitted = |role: Option<Role>| role.map_or(Login::Refused, Login::Admitted);
            if user == server_user {
                return admitted(
                    signing::secrets_equal(pass.as_bytes(), server_password.expose().as_bytes())
                        .then_some(Role::Server),
                );
            }
            match channel.machine_for_login(&user).await {
                Ok(Some(m)) => admitted(
                    (client_id == m.code && signing::secrets_equal(pass.as_bytes(), m.secret()))
                        .then_some(Role::Machine(m.code)),
                ),
                Ok(None) => Login::Refused,
                // Not the machine's fault: it is told to come back, not that its secret is wrong.
                Err(e) => {
                    tracing::error!(error = %e, "machine lookup failed at MQTT CONNECT");
                    Login::Unavailable
                }
            }
        })
    });
    let broker = Broker::start(listen, auth, shutdown).await?;
    Ok(EmbeddedBroker {
        listen: broker.listen,
        broker,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_machine_that_floods_its_worker_is_refused_alone_and_let_in_again_as_it_drains() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let shards = Shards {
            shards: vec![tx],
            backlog: Backlog::default(),
            bounded: true,
        };
        let message = |machine: &str| Work::Message {
            machine: machine.to_owned(),
            payload: vec![b' '; 16 * 1024],
            arrived_at: 0,
            ack: None,
        };
        let mut taken = 0;
        while shards.send(message("VM-FLOOD")).is_ok() {
            taken += 1;
            assert!(taken < 100, "never refused");
        }
        assert_eq!(taken, 15, "256 KiB of 16 KiB messages, with their overhead");
        // Another machine is not held back by it.
        assert!(shards.send(message("VM-OTHER")).is_ok());
        // Once its worker has handled one, the flooding machine may send one more.
        let Some(Work::Message {
            machine, payload, ..
        }) = rx.recv().await
        else {
            panic!("no work")
        };
        shards.backlog.done(&machine, work_size(&machine, &payload));
        assert!(shards.send(message("VM-FLOOD")).is_ok());
        assert!(matches!(
            shards.send(message("VM-FLOOD")),
            Err(SendError::MachineBacklogFull)
        ));
        // Through an external broker, which cannot be told to close the machine's
        // connection, nothing is refused.
        let (tx, _rx) = mpsc::unbounded_channel();
        let external = Shards {
            shards: vec![tx],
            backlog: Backlog::default(),
            bounded: false,
        };
        for _ in 0..100 {
            assert!(external.send(message("VM-FLOOD")).is_ok());
        }
    }

    #[test]
    fn topics_name_the_machine_and_nothing_else() {
        assert_eq!(cmd_topic("VM001"), "openvend/v1/m/VM001/cmd");
        assert_eq!(
            machine_of_evt_topic("openvend/v1/m/VM001/evt"),
            Some("VM001")
        );
        assert_eq!(machine_of_evt_topic("openvend/v1/m/VM001/cmd"), None);
        assert_eq!(machine_of_evt_topic("openvend/v1/m/a/b/evt"), None);
        assert_eq!(machine_of_evt_topic("openvend/v1/m//evt"), None);
    }
}
