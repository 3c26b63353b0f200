//! The MQTT transport: the server's supervised client link, and the embedded broker.
//!
//! Topics, one pair per machine, QoS 1, never retained:
//! - `openvend/v1/m/{machine_code}/cmd`: server → machine, signed command envelopes;
//! - `openvend/v1/m/{machine_code}/evt`: machine → server, signed event envelopes.
//!
//! The link subscribes `openvend/v1/m/+/evt` and passes every message, with the machine
//! code taken from the topic, to [`DeviceChannel::receive`], which checks that the envelope
//! names the same machine and is signed with *that* machine's secret. Retained messages are
//! ignored (a retained event would be replayed to every new subscriber).
//!
//! The embedded broker (rumqttd) checks per-machine credentials at CONNECT: username =
//! machine code = client id, password = machine secret. rumqttd 0.20 has no per-topic ACL
//! hook, so once connected a machine *could* publish on another machine's topic; the
//! envelope signature (keyed by the secret of the machine the topic names) is what makes
//! such a message worthless. With an external broker, configure ACLs
//! (docs/device-protocol.md).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, oneshot};
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
            client_id: "openvend-server".into(),
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
    if let Some(user) = &settings.username {
        let pass = settings
            .password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .unwrap_or_default();
        opts.set_credentials(user.clone(), pass);
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    channel.attach_mqtt(Some(client.clone()));

    // Incoming messages are handled apart from the event loop (the handler may publish, and
    // publishing needs the event loop to be polled), by a few workers: each machine's messages
    // always go to the same worker, so they are handled in the order they arrived, while
    // different machines proceed in parallel. Unbounded because the event loop must never
    // wait on a worker; the broker's QoS 1 in-flight window bounds it in practice.
    let mut shards = Vec::with_capacity(INCOMING_WORKERS);
    let mut workers = Vec::with_capacity(INCOMING_WORKERS);
    for _ in 0..INCOMING_WORKERS {
        let (tx, rx) = mpsc::unbounded_channel::<Work>();
        shards.push(tx);
        workers.push(tokio::spawn(incoming_worker(channel.clone(), rx)));
    }
    let work_tx = Shards(shards);

    let mut backoff = Duration::from_secs(1);
    loop {
        let polled = tokio::select! {
            () = shutdown.cancelled() => break,
            polled = eventloop.poll() => polled,
        };
        match polled {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
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
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                if p.retain {
                    tracing::warn!(topic = %p.topic, "retained message ignored");
                    continue;
                }
                let Some(machine) = machine_of_evt_topic(&p.topic) else {
                    tracing::warn!(topic = %p.topic, "message on an unknown topic ignored");
                    continue;
                };
                let work = Work::Message {
                    machine: machine.to_owned(),
                    payload: p.payload.to_vec(),
                };
                if work_tx.send(work).is_err() {
                    tracing::error!(topic = %p.topic, "MQTT worker stopped; event dropped");
                }
            }
            Ok(_) => {}
            Err(e) => {
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
    channel.attach_mqtt(None);
    channel.set_link_up(false);
    let _ = client.try_disconnect();
    drop(work_tx);
    for w in workers {
        let _ = w.await;
    }
    tracing::info!("MQTT link stopped");
}

/// Workers handling incoming messages; a machine's messages always go to the same one.
const INCOMING_WORKERS: usize = 8;

struct Shards(Vec<mpsc::UnboundedSender<Work>>);

impl Shards {
    fn send(&self, work: Work) -> Result<(), ()> {
        let i = match &work {
            Work::Message { machine, .. } => {
                let h = machine.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                });
                (h % self.0.len() as u64) as usize
            }
            Work::RedeliverAll => 0,
        };
        self.0.get(i).ok_or(())?.send(work).map_err(|_| ())
    }
}

async fn incoming_worker(
    worker_channel: DeviceChannel,
    mut work_rx: mpsc::UnboundedReceiver<Work>,
) {
    while let Some(work) = work_rx.recv().await {
        match work {
            Work::Message { machine, payload } => {
                // The broker has already had its PUBACK, so the machine will not send
                // this again: a store hiccup is retried here rather than losing the event.
                // Other rejections are final and logged inside receive.
                let mut delay = Duration::from_millis(50);
                for _ in 0..6 {
                    match worker_channel.receive(&machine, &payload).await {
                        Err(super::Rejection::Unavailable) => {
                            tokio::time::sleep(delay).await;
                            delay *= 2;
                        }
                        _ => break,
                    }
                }
            }
            Work::RedeliverAll => worker_channel.redeliver_all().await,
        }
    }
}

enum Work {
    Message { machine: String, payload: Vec<u8> },
    RedeliverAll,
}

type AuthRequest = (String, String, String, oneshot::Sender<bool>);

/// The embedded broker, running on its own threads until the process exits (rumqttd 0.20
/// has no stop).
#[derive(Debug)]
pub struct EmbeddedBroker {
    /// The address it listens on.
    pub listen: SocketAddr,
}

/// Starts rumqttd on `listen`, admitting the server (`server_user`/`server_password`) and
/// every machine whose code is the username and the client id and whose secret is the
/// password. Returns once the listener accepts connections.
pub async fn start_embedded(
    listen: SocketAddr,
    channel: DeviceChannel,
    server_user: String,
    server_password: Secret,
) -> std::io::Result<EmbeddedBroker> {
    // rumqttd runs its own runtime on its own threads; credentials are checked by a task on
    // ours (which owns the database pool), over a channel.
    let (auth_tx, mut auth_rx) = mpsc::channel::<AuthRequest>(256);
    tokio::spawn(async move {
        while let Some((client_id, user, pass, reply)) = auth_rx.recv().await {
            let ok = if user == server_user {
                signing::secrets_equal(pass.as_bytes(), server_password.expose().as_bytes())
            } else {
                match channel.machine(&user).await {
                    Ok(Some(m)) => {
                        client_id == m.code && signing::secrets_equal(pass.as_bytes(), m.secret())
                    }
                    Ok(None) => false,
                    Err(e) => {
                        tracing::error!(error = %e, "machine lookup failed at MQTT CONNECT");
                        false
                    }
                }
            };
            if !ok {
                tracing::warn!(username = %user, "MQTT CONNECT refused: bad credentials");
            }
            let _ = reply.send(ok);
        }
    });

    let mut connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: 64 * 1024,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    connections.set_auth_handler(move |client_id: String, user: String, pass: String| {
        let auth_tx = auth_tx.clone();
        async move {
            let (tx, rx) = oneshot::channel();
            if auth_tx.send((client_id, user, pass, tx)).await.is_err() {
                return false;
            }
            rx.await.unwrap_or(false)
        }
    });
    let server = rumqttd::ServerSettings {
        name: "openvend-v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 20_000,
            max_outgoing_packet_count: 200,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([("openvend".to_owned(), server)])),
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })?;
    // Wait until the listener is up, so callers can connect at once.
    let mut delay = Duration::from_millis(5);
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            return Ok(EmbeddedBroker { listen });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(100));
    }
    Err(std::io::Error::other(format!(
        "embedded MQTT broker did not listen on {listen}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

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
