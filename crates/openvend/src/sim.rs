//! A simulated vending machine that speaks the device protocol over MQTT exactly as a real
//! one must (docs/device-protocol.md): it verifies every command's signature, executes each
//! command id once (a repeat is answered `already_done` with the same result), discards
//! commands older than the TTL, acknowledges before acting, reports one result per unit, and
//! can go offline and come back. `openvend machine-sim`, the end-to-end tests and the load
//! benchmark all drive machines through it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::device::mqtt::{cmd_topic, evt_topic};
use crate::device::protocol::{
    AckStatus, Command, Envelope, Event, ItemResult, Line, SlotState, VendOutcome,
};
use crate::device::signing;

/// How a simulated machine connects and behaves.
#[derive(Debug, Clone)]
pub struct SimSettings {
    /// The machine code (MQTT username and client id).
    pub machine: String,
    /// The machine secret (MQTT password and signing key).
    pub secret: String,
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Share of units that fail to drop, 0.0..=1.0.
    pub fail_rate: f64,
    /// The reason reported for a failed unit (`jam` also disables the slot at the server).
    pub fail_reason: String,
    /// Seed of the failure draws, so a run can be repeated.
    pub seed: u64,
    /// Time the motor takes per unit.
    pub vend_time: Duration,
    /// Heartbeat period.
    pub heartbeat_every: Duration,
    /// Keep the broker session (queued commands) while offline, as a real machine should.
    pub persistent_session: bool,
    /// Answer `dispense` commands with a rejection instead of vending.
    pub reject_dispense: bool,
    /// Slots whose units always fail (a jam that stays).
    pub fail_slots: Vec<String>,
    /// Slots whose units lose power mid-vend: reported `indeterminate`, never re-vended.
    pub indeterminate_slots: Vec<String>,
    /// The power goes off while the motor of this slot's first unit runs (its journal entry
    /// written, the motor not done): the machine reports nothing more ([`SimEvent::PowerLost`])
    /// until it is back ([`MachineSim::go_online`]); then it reports that unit
    /// `indeterminate`, the units it had not started `failed`, and never vends them again.
    pub power_cut_at_slot: Option<String>,
    /// The machine's clock, when it is kept in step with a server whose clock a test moves;
    /// `None` = system time (a machine synchronised by NTP or `sync_time`).
    pub clock: Option<Arc<crate::services::Clock>>,
    /// How far the machine's clock starts from that clock, in ms (a machine without NTP).
    /// The server's `sync_time` corrects it.
    pub clock_skew_ms: i64,
}

impl SimSettings {
    /// Defaults for a machine at `host:port`.
    pub fn new(machine: &str, secret: &str, host: &str, port: u16) -> SimSettings {
        SimSettings {
            machine: machine.to_owned(),
            secret: secret.to_owned(),
            host: host.to_owned(),
            port,
            fail_rate: 0.0,
            fail_reason: "jam".into(),
            seed: 1,
            vend_time: Duration::ZERO,
            heartbeat_every: Duration::from_secs(30),
            persistent_session: true,
            reject_dispense: false,
            fail_slots: Vec::new(),
            indeterminate_slots: Vec::new(),
            power_cut_at_slot: None,
            clock: None,
            clock_skew_ms: 0,
        }
    }
}

/// What the simulated machine saw or did, for its user (the CLI prints, tests assert).
#[derive(Debug, Clone, PartialEq)]
pub enum SimEvent {
    /// Connected and subscribed.
    Online,
    /// The server asked to show a QR code.
    ShowQr {
        /// The order.
        order_id: String,
        /// The code content.
        qr_code: String,
        /// Amount in fen.
        amount_fen: i64,
    },
    /// The server refused a buy request.
    SaleRefused {
        /// The machine's request id.
        request_id: String,
        /// Why.
        reason: String,
    },
    /// A dispense finished and its result was reported.
    Dispensed {
        /// The order.
        order_id: String,
        /// One result per unit.
        items: Vec<ItemResult>,
    },
    /// The server cancelled an order (unpaid at timeout).
    Cancelled {
        /// The order.
        order_id: String,
    },
    /// The server answered a message sent with a wrong clock with `sync_time`: the machine
    /// set its clock and sent that message (and the others still unanswered) again.
    ClockSet {
        /// The machine clock's new offset from its base clock, ms.
        skew_ms: i64,
    },
    /// The power went off mid-vend ([`SimSettings::power_cut_at_slot`]).
    PowerLost {
        /// The order being vended.
        order_id: String,
    },
    /// A command was refused by the machine (bad signature, expired, rejected on request).
    Refused {
        /// The command id.
        command_id: String,
        /// Why.
        reason: String,
    },
}

/// A running simulated machine. Dropping it stops it.
pub struct MachineSim {
    shared: Arc<Shared>,
    link: Mutex<Option<Link>>,
    events_tx: mpsc::UnboundedSender<SimEvent>,
}

impl std::fmt::Debug for MachineSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineSim")
            .field("machine", &self.shared.settings.machine)
            .finish_non_exhaustive()
    }
}

struct Link {
    client: AsyncClient,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Link {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct Shared {
    settings: SimSettings,
    /// Command ids executed, with the result body sent for dispenses (the journal a real
    /// machine persists before it starts the motor).
    journal: Mutex<HashMap<String, Option<String>>>,
    /// Dispenses the power cut short: what the journal knew when it went off.
    interrupted: Mutex<Vec<Interrupted>>,
    next_id: AtomicU64,
    rng: Mutex<u64>,
    /// The machine clock's offset from its base clock (set by `sync_time`).
    skew_ms: AtomicI64,
    /// Events sent in the last [`OUTBOX_KEEP`] (at most [`OUTBOX_MAX`]), re-sent (same
    /// `msg_id`, new `ts`) after a `sync_time` and on every reconnect, as a real machine's
    /// journal of unconfirmed events is: the server deduplicates by `msg_id`, so re-sending
    /// one it did accept changes nothing, and one it never got (lost in a disconnect,
    /// refused for its clock) now goes through.
    outbox: Mutex<VecDeque<Sent>>,
    /// Events handed to the MQTT client and not yet acknowledged by the broker (`PUBACK`):
    /// a machine that stops must wait for them, or what it last sent may never leave.
    unacked: AtomicUsize,
}

impl Shared {
    /// One event fewer awaits the broker's acknowledgement (acknowledged, or never handed
    /// over). Never below zero: a publish sent again after a reconnect may be acknowledged
    /// twice.
    fn one_settled(&self) {
        let _ = self
            .unacked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

struct Sent {
    at: std::time::Instant,
    msg_id: String,
    kind: &'static str,
    body: String,
    resend: bool,
}

/// How long sent events are kept for re-sending (longer than a 10-minute outage).
const OUTBOX_KEEP: Duration = Duration::from_secs(15 * 60);
/// Most events kept for re-sending.
const OUTBOX_MAX: usize = 256;

impl MachineSim {
    /// Connects the machine and starts answering commands. Returns the machine and the stream
    /// of what it does.
    pub async fn start(
        settings: SimSettings,
    ) -> anyhow::Result<(MachineSim, mpsc::UnboundedReceiver<SimEvent>)> {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let seed = settings.seed;
        let skew = settings.clock_skew_ms;
        let sim = MachineSim {
            shared: Arc::new(Shared {
                settings,
                journal: Mutex::new(HashMap::new()),
                interrupted: Mutex::new(Vec::new()),
                next_id: AtomicU64::new(0),
                rng: Mutex::new(seed),
                skew_ms: AtomicI64::new(skew),
                outbox: Mutex::new(VecDeque::new()),
                unacked: AtomicUsize::new(0),
            }),
            link: Mutex::new(None),
            events_tx,
        };
        sim.go_online().await?;
        Ok((sim, events_rx))
    }

    /// The machine code.
    pub fn machine(&self) -> &str {
        &self.shared.settings.machine
    }

    /// Connects (again): subscribes to the command topic and sends a heartbeat, which makes
    /// the server re-deliver what is still pending.
    pub async fn go_online(&self) -> anyhow::Result<()> {
        let s = &self.shared.settings;
        let mut opts = MqttOptions::new(s.machine.clone(), s.host.clone(), s.port);
        opts.set_credentials(s.machine.clone(), s.secret.clone());
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_clean_session(!s.persistent_session);
        opts.set_max_packet_size(64 * 1024, 64 * 1024);
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        // What the last connection's client still had in flight went with it (a reconnect
        // sends the recent events again, counted anew).
        self.shared.unacked.store(0, Ordering::Release);
        let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
        let topic = cmd_topic(&s.machine);
        let sub_client = client.clone();
        let poll_shared = self.shared.clone();
        // The event loop only moves bytes; commands are handled on another task, because
        // publishing from the polling task can stall it when the request queue is full.
        let poll = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        if sub_client
                            .subscribe(topic.clone(), QoS::AtLeastOnce)
                            .await
                            .is_err()
                        {
                            return;
                        }
                        // Back after a drop the client reconnected by itself: what the
                        // server may have lost with the connection goes again (on another
                        // task: publishing from this one can stall it).
                        if ready.is_none() {
                            let shared = poll_shared.clone();
                            let client = sub_client.clone();
                            tokio::spawn(async move { resend_unconfirmed(&shared, &client).await });
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::PubAck(_))) => poll_shared.one_settled(),
                    Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(Ok(()));
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        if p.topic == topic && !p.retain {
                            let _ = cmd_tx.send(p.payload.to_vec());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(Err(e.to_string()));
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        let handler = {
            let shared = self.shared.clone();
            let client = client.clone();
            let events = self.events_tx.clone();
            tokio::spawn(async move {
                while let Some(raw) = cmd_rx.recv().await {
                    let shared = shared.clone();
                    let client = client.clone();
                    let events = events.clone();
                    // Commands run concurrently: a slow vend does not hold up the next QR.
                    tokio::spawn(async move { handle(&shared, &client, &events, &raw).await });
                }
            })
        };
        let heartbeat = || {
            let shared = self.shared.clone();
            let client = client.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(shared.settings.heartbeat_every);
                loop {
                    tick.tick().await;
                    let ev = Event::Heartbeat {
                        slots: None,
                        fw: Some("sim-1".into()),
                    };
                    if publish(&shared, &client, &ev).await.is_err() {
                        return;
                    }
                }
            })
        };
        match tokio::time::timeout(Duration::from_secs(10), ready_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => anyhow::bail!("machine {} could not connect: {e}", s.machine),
            _ => anyhow::bail!("machine {} could not connect in 10 s", s.machine),
        }
        // The first heartbeat makes the server re-deliver what is pending: send it only once
        // the command topic is subscribed, or the re-delivery would find nobody listening.
        let heartbeat = heartbeat();
        resend_unconfirmed(&self.shared, &client).await;
        report_interrupted(&self.shared, &client, &self.events_tx).await;
        let tasks = vec![poll, handler, heartbeat];
        if let Ok(mut link) = self.link.lock() {
            *link = Some(Link { client, tasks });
        }
        let _ = self.events_tx.send(SimEvent::Online);
        Ok(())
    }

    /// Waits (at most `within`) until the broker has acknowledged every event this machine
    /// sent: a machine about to stop calls it, as a real one keeps its power until its last
    /// report has left. Whether everything was acknowledged.
    pub async fn settle(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while self.shared.unacked.load(Ordering::Acquire) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Disconnects, as a machine losing power or network does.
    pub async fn go_offline(&self) {
        let link = self.link.lock().ok().and_then(|mut l| l.take());
        if let Some(link) = link {
            let _ = link.client.disconnect().await;
            // Give the disconnect a moment to leave before the tasks are stopped.
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(link);
        }
    }

    fn client(&self) -> anyhow::Result<AsyncClient> {
        self.link
            .lock()
            .ok()
            .and_then(|l| l.as_ref().map(|l| l.client.clone()))
            .ok_or_else(|| anyhow::anyhow!("machine is offline"))
    }

    /// Asks to sell `items` (slot, quantity); returns the request id. The server answers
    /// with `show_qr` or `sale_refused`.
    pub async fn buy(&self, items: &[(&str, u32)]) -> anyhow::Result<String> {
        let request_id = self.shared.new_id("r");
        self.buy_with_id(&request_id, items).await?;
        Ok(request_id)
    }

    /// Asks to sell under a given request id (repeating a request must not sell twice).
    pub async fn buy_with_id(&self, request_id: &str, items: &[(&str, u32)]) -> anyhow::Result<()> {
        let ev = Event::BuyRequest {
            request_id: request_id.to_owned(),
            items: items
                .iter()
                .map(|(slot, qty)| Line {
                    slot: (*slot).to_owned(),
                    qty: *qty,
                })
                .collect(),
        };
        publish(&self.shared, &self.client()?, &ev).await
    }

    /// Sends a heartbeat now, with the given slot counts.
    pub async fn heartbeat(&self, slots: Option<Vec<SlotState>>) -> anyhow::Result<()> {
        let ev = Event::Heartbeat {
            slots,
            fw: Some("sim-1".into()),
        };
        publish(&self.shared, &self.client()?, &ev).await
    }

    /// Reports a fault.
    pub async fn fault(&self, code: &str, detail: &str) -> anyhow::Result<()> {
        let ev = Event::Fault {
            code: code.to_owned(),
            detail: detail.to_owned(),
        };
        publish(&self.shared, &self.client()?, &ev).await
    }
}

impl Shared {
    /// The machine's clock: its base clock plus the offset `sync_time` set.
    fn now_ms(&self) -> i64 {
        self.base_now_ms()
            .saturating_add(self.skew_ms.load(Ordering::SeqCst))
    }

    fn base_now_ms(&self) -> i64 {
        match &self.settings.clock {
            Some(c) => c.now_ms(),
            None => crate::services::now_ms(),
        }
    }

    fn new_id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::SeqCst);
        format!(
            "{prefix}-{}-{}-{n}",
            self.settings.machine,
            crate::ids::random_hex(8)
        )
    }

    /// A deterministic draw in 0..1 (splitmix64).
    fn draw(&self) -> f64 {
        let mut state = self.rng.lock().map(|g| *g).unwrap_or(0);
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        if let Ok(mut g) = self.rng.lock() {
            *g = state;
        }
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A dispense the power cut short, as the machine's journal has it.
struct Interrupted {
    command_id: String,
    order_id: String,
    /// The units finished before the cut, with their outcome.
    done: Vec<ItemResult>,
    /// The slot whose motor was running: whether its unit came out is unknown.
    running: String,
    /// Units whose motors never started.
    not_started: Vec<String>,
}

/// After a power cut, what the journal says of each interrupted dispense: the finished units
/// as they were, the running one `indeterminate`, the ones never started `failed`. Journaled
/// as done first, so the command is never vended again (a re-delivery is `already_done`).
async fn report_interrupted(
    shared: &Shared,
    client: &AsyncClient,
    events: &mpsc::UnboundedSender<SimEvent>,
) {
    let cut = shared
        .interrupted
        .lock()
        .map(|mut c| std::mem::take(&mut *c))
        .unwrap_or_default();
    for d in cut {
        let mut items = d.done;
        items.push(ItemResult {
            slot: d.running,
            result: VendOutcome::Indeterminate,
            reason: Some("power lost mid-vend".into()),
        });
        items.extend(d.not_started.into_iter().map(|slot| ItemResult {
            slot,
            result: VendOutcome::Failed,
            reason: Some("not started: power lost".into()),
        }));
        let result = Event::DispenseResult {
            command_id: d.command_id.clone(),
            order_id: d.order_id.clone(),
            items: items.clone(),
        };
        if let (Ok(mut j), Ok(v)) = (shared.journal.lock(), serde_json::to_value(&result)) {
            j.insert(d.command_id, v.get("body").map(|b| b.to_string()));
        }
        let _ = publish(shared, client, &result).await;
        let _ = events.send(SimEvent::Dispensed {
            order_id: d.order_id,
            items,
        });
    }
}

/// Sends again, under their original ids, the events that may not have reached the server
/// before the connection dropped (a vend finishing during an outage, a report the server
/// stopped before storing): it deduplicates by `msg_id`.
async fn resend_unconfirmed(shared: &Shared, client: &AsyncClient) {
    let unconfirmed: Vec<(String, &'static str, String)> = shared
        .outbox
        .lock()
        .map(|o| {
            o.iter()
                .filter(|s| s.resend)
                .map(|s| (s.msg_id.clone(), s.kind, s.body.clone()))
                .collect()
        })
        .unwrap_or_default();
    for (msg_id, kind, body) in unconfirmed {
        let _ = send_sealed(shared, client, &msg_id, kind, body).await;
    }
}

async fn publish(shared: &Shared, client: &AsyncClient, event: &Event) -> anyhow::Result<()> {
    let body = serde_json::to_value(event)?
        .get("body")
        .map(|b| b.to_string())
        .unwrap_or_else(|| "{}".into());
    let msg_id = shared.new_id("e");
    if let Ok(mut outbox) = shared.outbox.lock() {
        let now = std::time::Instant::now();
        while outbox
            .front()
            .is_some_and(|s| now.duration_since(s.at) > OUTBOX_KEEP)
            || outbox.len() >= OUTBOX_MAX
        {
            outbox.pop_front();
        }
        outbox.push_back(Sent {
            at: now,
            msg_id: msg_id.clone(),
            kind: event.kind(),
            body: body.clone(),
            // Heartbeats are not worth re-sending: the next one says the same.
            resend: !matches!(event, Event::Heartbeat { .. }),
        });
    }
    send_sealed(shared, client, &msg_id, event.kind(), body).await
}

/// Seals and publishes one event with the machine's current clock.
async fn send_sealed(
    shared: &Shared,
    client: &AsyncClient,
    msg_id: &str,
    kind: &str,
    body: String,
) -> anyhow::Result<()> {
    let s = &shared.settings;
    let envelope = Envelope::seal(
        &s.machine,
        s.secret.as_bytes(),
        msg_id,
        shared.now_ms(),
        kind,
        body,
    );
    // Counted before it is handed over, so its PUBACK can never come first.
    shared.unacked.fetch_add(1, Ordering::AcqRel);
    let sent = client
        .publish(
            evt_topic(&s.machine),
            QoS::AtLeastOnce,
            false,
            envelope.to_bytes(),
        )
        .await;
    if sent.is_err() {
        shared.one_settled();
    }
    sent?;
    Ok(())
}

/// The TTL a machine applies to commands by its own clock (the protocol's 60 s).
const COMMAND_TTL_MS: i64 = 60_000;

async fn handle(
    shared: &Shared,
    client: &AsyncClient,
    events: &mpsc::UnboundedSender<SimEvent>,
    raw: &[u8],
) {
    let s = &shared.settings;
    let Ok(env) = serde_json::from_slice::<Envelope>(raw) else {
        tracing::warn!(machine = %s.machine, "command is not an envelope; ignored");
        return;
    };
    let signed = signing::envelope_string(&env.machine, &env.msg_id, env.ts, &env.kind, &env.body);
    if env.machine != s.machine
        || !signing::verify(s.secret.as_bytes(), signed.as_bytes(), &env.sig)
    {
        // Not from the server: no answer at all (an ack would tell a forger something).
        let _ = events.send(SimEvent::Refused {
            command_id: env.msg_id,
            reason: "bad signature".into(),
        });
        return;
    }
    if env.kind == "sync_time" {
        // Checked before the TTL: the point is that the machine's clock is wrong.
        sync_time(shared, client, events, &env.body).await;
        return;
    }
    let command_id = env.msg_id.clone();
    let ack = |status: AckStatus, reason: Option<&str>| Event::Ack {
        command_id: command_id.clone(),
        status,
        reason: reason.map(str::to_owned),
    };
    // Executed before: answer already_done and repeat the result. Checked and recorded under
    // one lock, so two copies arriving together run once.
    let seen = shared.journal.lock().ok().and_then(|mut j| {
        let previous = j.get(&command_id).cloned();
        if previous.is_none() {
            j.insert(command_id.clone(), None);
        }
        previous
    });
    if let Some(previous) = seen {
        let _ = publish(shared, client, &ack(AckStatus::AlreadyDone, None)).await;
        if let Some(result) = previous.and_then(|b| Event::parse("dispense_result", &b).ok()) {
            let _ = publish(shared, client, &result).await;
        }
        return;
    }
    let tagged = serde_json::json!({
        "kind": env.kind,
        "body": serde_json::from_str::<serde_json::Value>(&env.body).unwrap_or_default(),
    });
    let Ok(command) = serde_json::from_value::<Command>(tagged) else {
        let _ = publish(
            shared,
            client,
            &ack(AckStatus::Rejected, Some("unknown command")),
        )
        .await;
        return;
    };
    // A dispense says when it expires; any other command 60 s after it was sent.
    let expires_at = match &command {
        Command::Dispense {
            expires_at: Some(at),
            ..
        } => *at,
        _ => env.ts.saturating_add(COMMAND_TTL_MS),
    };
    if shared.now_ms() > expires_at {
        let _ = publish(shared, client, &ack(AckStatus::Rejected, Some("expired"))).await;
        let _ = events.send(SimEvent::Refused {
            command_id,
            reason: "expired".into(),
        });
        return;
    }
    if s.reject_dispense && matches!(command, Command::Dispense { .. }) {
        let _ = publish(shared, client, &ack(AckStatus::Rejected, Some("door open"))).await;
        let _ = events.send(SimEvent::Refused {
            command_id,
            reason: "door open".into(),
        });
        return;
    }
    let _ = publish(shared, client, &ack(AckStatus::Accepted, None)).await;
    match command {
        Command::ShowQr {
            order_id,
            qr_code,
            amount_fen,
            ..
        } => {
            let _ = events.send(SimEvent::ShowQr {
                order_id,
                qr_code,
                amount_fen,
            });
        }
        Command::Dispense {
            order_id, items, ..
        } => {
            let mut results = Vec::new();
            let units: Vec<&str> = items
                .iter()
                .flat_map(|line| (0..line.qty).map(|_| line.slot.as_str()))
                .collect();
            for (n, &slot) in units.iter().enumerate() {
                if s.power_cut_at_slot.as_deref() == Some(slot) {
                    // The journal has this unit as started and the motor never finishes:
                    // nothing more happens until the machine is back.
                    if let Ok(mut cut) = shared.interrupted.lock() {
                        cut.push(Interrupted {
                            command_id: command_id.clone(),
                            order_id: order_id.clone(),
                            done: results,
                            running: slot.to_owned(),
                            not_started: units[n + 1..].iter().map(|u| (*u).to_owned()).collect(),
                        });
                    }
                    let _ = events.send(SimEvent::PowerLost { order_id });
                    return;
                }
                tokio::time::sleep(s.vend_time).await;
                let result = if s.indeterminate_slots.iter().any(|i| i == slot) {
                    VendOutcome::Indeterminate
                } else if s.fail_slots.iter().any(|f| f == slot)
                    || (s.fail_rate > 0.0 && shared.draw() < s.fail_rate)
                {
                    VendOutcome::Failed
                } else {
                    VendOutcome::Dispensed
                };
                results.push(ItemResult {
                    slot: slot.to_owned(),
                    result,
                    reason: match result {
                        VendOutcome::Failed => Some(s.fail_reason.clone()),
                        VendOutcome::Indeterminate => Some("power lost mid-vend".into()),
                        VendOutcome::Dispensed => None,
                    },
                });
            }
            let result = Event::DispenseResult {
                command_id: command_id.clone(),
                order_id: order_id.clone(),
                items: results.clone(),
            };
            if let (Ok(mut j), Ok(v)) = (shared.journal.lock(), serde_json::to_value(&result)) {
                j.insert(command_id, v.get("body").map(|b| b.to_string()));
            }
            let _ = publish(shared, client, &result).await;
            let _ = events.send(SimEvent::Dispensed {
                order_id,
                items: results,
            });
        }
        Command::Cancel { order_id } => {
            let _ = events.send(SimEvent::Cancelled { order_id });
        }
        Command::SaleRefused { request_id, reason } => {
            let _ = events.send(SimEvent::SaleRefused { request_id, reason });
        }
        Command::UnlockDoor { .. } | Command::SyncTime { .. } => {}
    }
}

/// Sets the clock from a signed `sync_time` that answers a message this machine still keeps,
/// then re-sends what it keeps under the same ids with the new clock.
async fn sync_time(
    shared: &Shared,
    client: &AsyncClient,
    events: &mpsc::UnboundedSender<SimEvent>,
    body: &str,
) {
    let tagged = serde_json::json!({
        "kind": "sync_time",
        "body": serde_json::from_str::<serde_json::Value>(body).unwrap_or_default(),
    });
    let Ok(Command::SyncTime {
        server_ts,
        in_reply_to,
    }) = serde_json::from_value::<Command>(tagged)
    else {
        return;
    };
    let resend: Vec<(String, &'static str, String)> = match shared.outbox.lock() {
        Ok(outbox) if outbox.iter().any(|s| s.msg_id == in_reply_to) => outbox
            .iter()
            .filter(|s| s.resend)
            .map(|s| (s.msg_id.clone(), s.kind, s.body.clone()))
            .collect(),
        _ => {
            // Not an answer to anything pending here (a replay, or already handled).
            let _ = events.send(SimEvent::Refused {
                command_id: in_reply_to,
                reason: "sync_time for no message of ours".into(),
            });
            return;
        }
    };
    let skew = server_ts.saturating_sub(shared.base_now_ms());
    shared.skew_ms.store(skew, Ordering::SeqCst);
    // Re-sent now with a good clock, and kept as before: a re-sent event can be lost with
    // the server like the first copy (the server deduplicates what it already had).
    let _ = events.send(SimEvent::ClockSet { skew_ms: skew });
    for (msg_id, kind, body) in resend {
        let _ = send_sealed(shared, client, &msg_id, kind, body).await;
    }
}
