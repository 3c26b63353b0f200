//! The command ledger and the event pipeline: [`DeviceChannel`], the one handle the order
//! flow holds.
//!
//! Lifecycle of a command: [`DeviceChannel::send`] writes the intent row (`pending`) and
//! commits, *then* publishes (F9: no network call inside a transaction, no publish without a
//! record). A flow that changes state with the command records it in its own transaction
//! ([`DeviceChannel::record`]) and delivers it after commit ([`DeviceChannel::deliver`]). When
//! it was handed to the transport is written with the machine's answer, or after a second
//! without one, when the row becomes `sent` ([`super::sent_marks`]); only the machine's own
//! `ack` makes it `acknowledged` or `rejected`, and its `dispense_result` makes it `done`. A
//! command not acknowledged before `expires_at` (server clock) is `expired` and never
//! re-sent; anything the machine says about it afterwards is refused.
//!
//! Lifecycle of an event: [`DeviceChannel::receive`] verifies it ([`super::protocol`]),
//! then in one transaction checks the `msg_id` is new, checks an ack/result against the
//! ledger, applies it and records the event; after commit, the event goes to the stream.
//! A refused or duplicate event rolls back: nothing is recorded, nothing changes. Only the
//! first `dispense_result` of an expired dispense is kept, refused all the same, as evidence
//! that goods came out ([`crate::pay::late_vend`]). An ack of a command this process handed
//! over (`show_qr`, `cancel`, `sale_refused`, a dispense's acceptance) is not written before
//! it is answered: it is checked in memory, answered at once and written with the others a
//! moment later ([`super::held_acks`]).

use crate::store::{Conn, Executor, Later, Tx};
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, watch};

use super::held_acks::{self, HeldAck, HeldAcks, Hold};
use super::mqtt::Publisher;
use super::protocol::{
    AckStatus, Command, Envelope, Event, ItemResult, Rejection, Verified, open_envelope,
};
use super::sent_marks::{Holdable, SentMarks};
use crate::pay::checkout::SaleTerms;
use crate::pay::late_vend;
use crate::pay::sale::{self, BuyRequest, Taken};
use crate::pay::vend::{self, UnitResult, VendError, VendOrder};
use crate::store::Db;
use crate::store::orders::OrderError;

/// Default time a command may wait for its machine's ack.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// How long after `expires_at` an ack is still accepted. Machines discard commands older
/// than the TTL by their own clock, so one acknowledged at the last moment may still be
/// running; the server decides (and refunds) only after this grace for drift and transit.
pub const ACK_GRACE_MS: i64 = 15_000;

/// A machine whose accepted message is this far off the server clock is sent the time. The
/// clock window for messages is ±300 s, but a machine measures a command's age by its own
/// clock: one a minute behind would run a dispense the server had already expired (and
/// refunded). Kept within this, its error stays inside [`ACK_GRACE_MS`].
pub const DRIFT_SYNC_MS: i64 = 10_000;
const _: () = assert!(DRIFT_SYNC_MS < ACK_GRACE_MS);

/// How long a machine read from the store is trusted before it is read again. Another
/// instance's change (a machine disabled, a new secret) takes effect here within this time;
/// this instance's own changes take effect at once.
pub const MACHINE_CACHE_TTL: Duration = Duration::from_secs(10);

/// The server's clock, injectable so tests never sleep.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now, Unix milliseconds.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that moves only when told (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock reading `now_ms`.
    pub fn new(now_ms: i64) -> ManualClock {
        ManualClock(AtomicI64::new(now_ms))
    }
    /// Moves the clock forward.
    pub fn advance(&self, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A machine as the device channel knows it.
#[derive(Clone)]
pub struct MachineAuth {
    /// Row id.
    pub id: i64,
    /// Machine code (MQTT username, topic segment, envelope `machine`).
    pub code: String,
    secret: String,
    /// Taken out of service by the operator: its messages are refused and no command is
    /// handed to it.
    pub disabled: bool,
}

impl MachineAuth {
    /// The machine secret's bytes (HMAC key, MQTT password).
    pub fn secret(&self) -> &[u8] {
        self.secret.as_bytes()
    }
}

impl fmt::Debug for MachineAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MachineAuth")
            .field("id", &self.id)
            .field("code", &self.code)
            .field("secret", &"<redacted>")
            .field("disabled", &self.disabled)
            .finish()
    }
}

/// A verified, first-seen event, as the order flow receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEvent {
    /// The machine's row id.
    pub machine_id: i64,
    /// The machine code.
    pub machine: String,
    /// The envelope's `msg_id`.
    pub msg_id: String,
    /// The machine's clock when it sent the event.
    pub ts: i64,
    /// The server's clock when it was accepted.
    pub received_at: i64,
    /// What happened.
    pub event: Event,
    /// The job queued (claimed by this process) to act on it, if it needs one.
    pub job: Option<crate::store::jobs::Job>,
    /// The dedup key of a job its transaction queued unclaimed (a refund for a failed
    /// vend), to run now.
    pub run_soon: Option<String>,
}

impl DeviceEvent {
    /// An event of `machine` taken as `envelope` says, with nothing left to run.
    fn taken(machine: MachineAuth, envelope: Envelope, event: Event, received_at: i64) -> Self {
        DeviceEvent {
            machine_id: machine.id,
            machine: machine.code,
            msg_id: envelope.msg_id,
            ts: envelope.ts,
            received_at,
            event,
            job: None,
            run_soon: None,
        }
    }
}

/// A command just recorded, to [`deliver`](DeviceChannel::deliver) once its transaction
/// has committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The machine code.
    pub machine: String,
    /// The command id the machine will echo.
    pub command_id: String,
    /// The command to deliver; `None` when its key was recorded before (nothing new to send).
    pub new: Option<PendingCommand>,
}

/// A command still waiting for its machine, as it is (re-)delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCommand {
    /// The command id (= the envelope's `msg_id`).
    pub command_id: String,
    /// The signed envelope JSON, identical on every delivery.
    pub payload: String,
    /// Server-clock expiry, Unix ms.
    pub expires_at: i64,
    /// The command's kind (`show_qr`, `dispense`, `cancel`, …).
    pub kind: String,
    /// The order it is for, if any (`out_trade_no`).
    pub order_id: Option<String>,
}

/// How a machine learns that the server took its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taking {
    /// A broker acknowledged it on arrival (MQTT), before the server stored anything: the
    /// machine keeps it and sends it again after a reconnect (device-protocol §2).
    ByBroker,
    /// The server's answer (HTTP), the machine's only confirmation.
    ByAnswer,
}

/// A command's ledger row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    /// The command id.
    pub command_id: String,
    /// The machine's row id.
    pub machine_id: i64,
    /// `dispense`, `show_qr`, …
    pub kind: String,
    /// The order, if any.
    pub order_id: Option<String>,
    /// `pending`, `sent`, `acknowledged`, `rejected`, `done` or `expired`.
    pub state: String,
    /// The ack reason or the result body.
    pub result: Option<String>,
}

/// Why a command could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// No machine has this code.
    #[error("unknown machine {0:?}")]
    UnknownMachine(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

/// The device channel: send commands, receive verified events. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DeviceChannel {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    clock: Arc<dyn Clock>,
    ttl_ms: i64,
    events: mpsc::Sender<DeviceEvent>,
    mqtt: Mutex<Option<Publisher>>,
    /// Per machine, woken when a command for it is recorded, for its HTTP long-polls.
    new_command: CommandSignals,
    /// Whether the MQTT link is connected and subscribed (health checks, tests).
    link_up: watch::Sender<bool>,
    /// Machines seen lately, by code, with when each was read from the store.
    machines: std::sync::RwLock<std::collections::HashMap<String, (MachineAuth, Instant)>>,
    /// How many times the operator changed a machine on this instance.
    machines_changed: AtomicU64,
    /// When each machine was last sent `sync_time` (server ms), to send at most one a second.
    time_syncs: Mutex<std::collections::HashMap<String, i64>>,
    /// Hand-overs to the link whose time is not stored yet.
    sent: SentMarks,
    /// Acks checked in memory, written together.
    held: HeldAcks,
    /// Taken while held acks are written and while commands are expired, so an expiry never
    /// overtakes acks being written but not yet committed.
    settling: tokio::sync::Mutex<()>,
    /// The terms a machine's buy request is sold on.
    sale_terms: SaleTerms,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceChannel")
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

impl DeviceChannel {
    /// A channel over `db`, and the stream of verified, deduplicated events. The stream is
    /// bounded: if nobody reads it, receiving blocks (events are durable in `device_events`
    /// either way).
    pub fn new(
        db: Db,
        clock: Arc<dyn Clock>,
        ttl: Duration,
        sale_terms: SaleTerms,
    ) -> (DeviceChannel, mpsc::Receiver<DeviceEvent>) {
        let (tx, rx) = mpsc::channel(1024);
        let inner = Inner {
            db,
            clock,
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            events: tx,
            mqtt: Mutex::new(None),
            new_command: CommandSignals::default(),
            link_up: watch::Sender::new(false),
            machines: Default::default(),
            machines_changed: AtomicU64::new(0),
            time_syncs: Default::default(),
            sent: SentMarks::default(),
            held: HeldAcks::default(),
            settling: tokio::sync::Mutex::new(()),
            sale_terms,
        };
        (
            DeviceChannel {
                inner: Arc::new(inner),
            },
            rx,
        )
    }

    /// The server clock reading.
    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// How long a command is valid after it is recorded, in ms.
    pub fn command_ttl_ms(&self) -> i64 {
        self.inner.ttl_ms
    }

    pub(super) fn db(&self) -> &Db {
        &self.inner.db
    }

    pub(super) fn attach_mqtt(&self, client: Option<Publisher>) {
        if let Ok(mut slot) = self.inner.mqtt.lock() {
            *slot = client;
        }
    }

    pub(super) fn set_link_up(&self, up: bool) {
        self.inner.link_up.send_replace(up);
    }

    /// Watches whether the MQTT link is connected and subscribed to the event topics.
    pub fn link_up(&self) -> watch::Receiver<bool> {
        self.inner.link_up.subscribe()
    }

    fn mqtt(&self) -> Option<Publisher> {
        self.inner.mqtt.lock().ok().and_then(|g| g.clone())
    }

    /// What wakes `machine`'s HTTP long-polls: a command recorded for it. Hold it while
    /// waiting.
    pub(super) fn new_command(&self, machine: &str) -> Arc<Notify> {
        self.inner.new_command.for_machine(machine)
    }

    /// Looks a machine up by code. Cached for [`MACHINE_CACHE_TTL`]: every message needs it.
    /// The operator API forgets a machine it changes at once
    /// ([`forget_machine`](Self::forget_machine)); another instance sees the change when its
    /// entry ages out.
    pub async fn machine(&self, code: &str) -> Result<Option<MachineAuth>, crate::store::Error> {
        if let Some(m) = self.cached_machine(code) {
            return Ok(Some(m));
        }
        let changes = self.inner.machines_changed.load(Ordering::SeqCst);
        let found = self.machine_from_store(&self.inner.db.pool, code).await?;
        self.cache_machine(&found, changes);
        Ok(found)
    }

    /// [`machine`](Self::machine) for a decision that outlives the lookup (admitting a
    /// connection): if the operator changed a machine while it was read (a new secret), it
    /// is read again, so an old secret read just before the change never admits anyone
    /// after the change closed the machine's connections.
    pub async fn machine_for_login(
        &self,
        code: &str,
    ) -> Result<Option<MachineAuth>, crate::store::Error> {
        loop {
            let changes = self.inner.machines_changed.load(Ordering::SeqCst);
            let found = self.machine(code).await?;
            if self.inner.machines_changed.load(Ordering::SeqCst) == changes {
                return Ok(found);
            }
        }
    }

    async fn machine_from_store<E: Executor>(
        &self,
        executor: E,
        code: &str,
    ) -> Result<Option<MachineAuth>, crate::store::Error> {
        let row = crate::store::query(
            "SELECT id, code, secret, disabled_at FROM machines WHERE code = $1",
        )
        .bind(code)
        .fetch_optional(executor)
        .await?;
        row.map(|r| {
            Ok(MachineAuth {
                id: r.try_get(0)?,
                code: r.try_get(1)?,
                secret: r.try_get(2)?,
                disabled: r.try_get::<Option<i64>, _>(3)?.is_some(),
            })
        })
        .transpose()
    }

    /// [`machine`](Self::machine) on a connection the caller holds (inside its transaction,
    /// where the pool's one SQLite connection is taken).
    async fn machine_on(
        &self,
        conn: &mut Conn,
        code: &str,
    ) -> Result<Option<MachineAuth>, crate::store::Error> {
        if let Some(m) = self.cached_machine(code) {
            return Ok(Some(m));
        }
        let changes = self.inner.machines_changed.load(Ordering::SeqCst);
        let found = self.machine_from_store(&mut *conn, code).await?;
        self.cache_machine(&found, changes);
        Ok(found)
    }

    fn cached_machine(&self, code: &str) -> Option<MachineAuth> {
        self.inner.machines.read().ok().and_then(|c| {
            c.get(code)
                .filter(|(_, read_at)| read_at.elapsed() < MACHINE_CACHE_TTL)
                .map(|(m, _)| m.clone())
        })
    }

    /// Caches what a lookup found, unless a machine was changed since the lookup began
    /// (`changes` is the count it saw then): that answer may be the old one.
    fn cache_machine(&self, found: &Option<MachineAuth>, changes: u64) {
        if let (Some(m), Ok(mut cache)) = (found, self.inner.machines.write())
            && self.inner.machines_changed.load(Ordering::SeqCst) == changes
        {
            cache.insert(m.code.clone(), (m.clone(), Instant::now()));
        }
    }

    /// Drops what this instance remembers of a machine the operator just changed (disabled,
    /// enabled, a new secret). A lookup already under way when this runs read the machine as
    /// it was: its answer is not cached.
    pub fn forget_machine(&self, code: &str) {
        if let Ok(mut cache) = self.inner.machines.write() {
            self.inner.machines_changed.fetch_add(1, Ordering::SeqCst);
            cache.remove(code);
        }
    }

    /// Closes a machine's connection to the embedded broker: it must connect again, and is
    /// checked again (after a new secret).
    pub fn close_connection(&self, code: &str) {
        if let Some(client) = self.mqtt() {
            client.disconnect(code);
        }
    }

    /// Records `command` for `machine` (the intent), then publishes it. Returns the command
    /// id the machine will echo. A failed publish leaves the command `pending`; it is
    /// re-delivered when the machine or the link comes back, until it expires.
    pub async fn send(&self, machine: &str, command: Command) -> Result<String, DeviceError> {
        self.record_then_deliver(machine, &command, None).await
    }

    /// Like [`send`](Self::send), but once per `key`: the command id is derived from the
    /// machine and the key, so a job retried after the command was recorded (its later
    /// steps failed) finds the same command and sends nothing new — the machine never
    /// shows one QR code twice under two command ids.
    pub async fn send_once(
        &self,
        machine: &str,
        command: Command,
        key: &str,
    ) -> Result<String, DeviceError> {
        self.record_then_deliver(machine, &command, Some(key)).await
    }

    async fn record_then_deliver(
        &self,
        machine: &str,
        command: &Command,
        key: Option<&str>,
    ) -> Result<String, DeviceError> {
        let mut tx = self.inner.db.begin().await?;
        let recorded = self.record(&mut tx, machine, command, key).await?;
        tx.commit().await?;
        self.deliver(&recorded).await;
        Ok(recorded.command_id)
    }

    /// Records `command` for `machine` on `conn`, usually inside the caller's transaction so
    /// the command is written with the state change it belongs to. Under `key` the command
    /// id is fixed (see [`send_once`](Self::send_once)) and a second record is a no-op.
    /// Hand the answer to [`deliver`](Self::deliver) once the transaction has committed.
    pub async fn record(
        &self,
        conn: &mut Conn,
        machine: &str,
        command: &Command,
        key: Option<&str>,
    ) -> Result<Recorded, DeviceError> {
        let m = self
            .machine_on(conn, machine)
            .await?
            .ok_or_else(|| DeviceError::UnknownMachine(machine.to_owned()))?;
        let command_id = match key {
            Some(key) => keyed_command_id(&m.code, key),
            None => new_command_id(),
        };
        let now = self.now_ms();
        let expires_at = match command {
            // The machine discards it at the time it was told.
            Command::Dispense {
                expires_at: Some(at),
                ..
            } => *at,
            _ => self.expiry_from(now),
        };
        let envelope = Envelope::seal(
            &m.code,
            m.secret(),
            &command_id,
            now,
            command.kind(),
            command.body_json(),
        );
        let payload = String::from_utf8(envelope.to_bytes()).unwrap_or_default();
        let insert = crate::store::query(if key.is_some() {
            "INSERT INTO device_commands (machine_id, command_id, kind, order_id, payload, state, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7) ON CONFLICT (command_id) DO NOTHING"
        } else {
            "INSERT INTO device_commands (machine_id, command_id, kind, order_id, payload, state, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7)"
        })
        .bind(m.id)
        .bind(&command_id)
        .bind(command.kind())
        .bind(command.order_id())
        .bind(&payload)
        .bind(now)
        .bind(expires_at);
        // A fresh id is new: its insert needs no answer and goes out with the transaction's
        // next statement (an id taken already would fail the transaction, never pass silently).
        let inserted = match key {
            Some(_) => insert.execute(&mut *conn).await?.rows_affected(),
            None => {
                insert.defer(&mut *conn).await?;
                1
            }
        };
        if inserted == 0 {
            // Recorded before under this key: the ledger re-delivers it while it is open.
            tracing::debug!(machine = %m.code, command.id = %command_id, "device command already recorded");
            return Ok(Recorded {
                machine: m.code,
                command_id,
                new: None,
            });
        }
        // Routine, twice a sale: the vend's own line (`vend recorded`) is the sale's one at info.
        tracing::debug!(machine = %m.code, command.id = %command_id, kind = command.kind(), "device command recorded");
        Ok(Recorded {
            machine: m.code,
            command_id: command_id.clone(),
            new: Some(PendingCommand {
                command_id,
                payload,
                expires_at,
                kind: command.kind().to_owned(),
                order_id: command.order_id().map(str::to_owned),
            }),
        })
    }

    /// Hands a command recorded by [`record`](Self::record), and since committed, to the
    /// machine: wakes its HTTP long-poll and publishes it over MQTT. Nothing for a command
    /// recorded before.
    pub async fn deliver(&self, recorded: &Recorded) {
        let Some(pending) = &recorded.new else {
            return;
        };
        self.inner.new_command.wake(&recorded.machine);
        self.publish(&recorded.machine, pending).await;
    }

    /// When a command recorded at `now` expires (server clock): now plus the operator's TTL.
    pub fn expiry_from(&self, now: i64) -> i64 {
        now.saturating_add(self.inner.ttl_ms)
    }

    /// Answers a correctly signed message outside the clock window (or accepted, but more
    /// than [`DRIFT_SYNC_MS`] off) with `sync_time`, so the machine sets its clock and
    /// re-sends it (an accepted one again changes nothing). Not recorded in the ledger (it
    /// changes no state here and needs no acknowledgement); at most one a second per
    /// machine, so a replayed old message cannot make the server flood the machine's topic.
    async fn send_time(&self, machine: &str, raw: &[u8]) {
        let (Ok(envelope), Some(client)) = (super::protocol::parse_envelope(raw), self.mqtt())
        else {
            return;
        };
        let Ok(Some(m)) = self.machine(machine).await else {
            return;
        };
        let now = self.now_ms();
        let due = self.inner.time_syncs.lock().is_ok_and(|mut last| {
            let due = last.get(machine).is_none_or(|&t| now - t >= 1_000);
            if due {
                last.insert(machine.to_owned(), now);
            }
            due
        });
        if !due {
            return;
        }
        let command = Command::SyncTime {
            server_ts: now,
            in_reply_to: envelope.msg_id,
        };
        let sealed = Envelope::seal(
            &m.code,
            m.secret(),
            &new_command_id(),
            now,
            command.kind(),
            command.body_json(),
        );
        let topic = super::mqtt::cmd_topic(&m.code);
        if let Err(e) = client.publish(topic, sealed.to_bytes()).await {
            tracing::warn!(machine = %m.code, error = %e, "could not send the time");
        }
    }

    /// Hands a recorded command to the MQTT link, if there is one, and notes when.
    async fn publish(&self, machine: &str, cmd: &PendingCommand) {
        let Some(client) = self.mqtt() else {
            return;
        };
        // A machine out of service gets nothing new but `cancel` (clear a code): its other
        // commands stay pending and expire, and what they were for is settled as for a
        // machine that never came back. A lookup that fails hands nothing over either; the
        // command is re-delivered later.
        let (machine_id, in_service) = match self.machine(machine).await {
            Ok(Some(m)) => (Some(m.id), !m.disabled),
            _ => (None, false),
        };
        if !in_service && cmd.kind != "cancel" {
            tracing::info!(%machine, command.id = %cmd.command_id, "machine disabled or unknown; command not handed over");
            return;
        }
        let topic = super::mqtt::cmd_topic(machine);
        match client
            .publish(topic, cmd.payload.clone().into_bytes())
            .await
        {
            Ok(()) => self.note_sent(cmd, machine_id),
            Err(e) => {
                tracing::warn!(command.id = %cmd.command_id, error = %e, "publish failed; command stays pending")
            }
        }
    }

    /// Notes that `cmd` was handed to its machine's transport now; its ack may be held when
    /// the machine is known.
    pub(super) fn note_sent(&self, cmd: &PendingCommand, machine_id: Option<i64>) {
        let dispense_of = match cmd.kind.as_str() {
            "dispense" => cmd.order_id.clone(),
            _ => None,
        };
        let holdable = machine_id
            .filter(|_| held_acks::may_be_held(&cmd.kind))
            // A dispense without its order could not move it: the store takes its ack.
            .filter(|_| cmd.kind != "dispense" || dispense_of.is_some())
            .map(|machine_id| Holdable {
                machine_id,
                expires_at: cmd.expires_at,
                dispense_of,
            });
        self.inner
            .sent
            .note(&cmd.command_id, self.now_ms(), holdable);
    }

    /// Writes the acks held in memory ([`super::held_acks`]) in one transaction; answers how
    /// many settled their command. An ack whose command was settled meanwhile (by another
    /// instance) changes nothing, but its event is recorded: the machine was told it was
    /// taken, so its repeat is a duplicate.
    pub async fn write_held_acks(&self) -> Result<usize, crate::store::Error> {
        let _settling = self.inner.settling.lock().await;
        self.write_held_acks_locked().await
    }

    /// Stops holding acks (shutdown: answers still being handled go to the store) and writes
    /// those held.
    pub async fn stop_holding_acks(&self) -> Result<usize, crate::store::Error> {
        self.inner.held.close();
        self.write_held_acks().await
    }

    async fn write_held_acks_locked(&self) -> Result<usize, crate::store::Error> {
        // They stay held while written: a reader finds each either here or in the store.
        let acks = self.inner.held.to_write();
        if acks.is_empty() {
            return Ok(0);
        }
        let written = async {
            let mut tx = self.inner.db.begin().await?;
            // Every ack's statements go out together (on PostgreSQL one round trip for the
            // batch, then one with the commit for what the dispenses move).
            let mut updates = Vec::with_capacity(acks.len());
            for a in &acks {
                // The event first, then the command, as a machine's event is stored: two
                // instances taking the same ack lock its rows in the same order.
                crate::store::query(
                    "INSERT INTO device_events (machine_id, msg_id, kind, received_at, body) VALUES ($1, $2, 'ack', $3, $4) \
                     ON CONFLICT (machine_id, msg_id) DO NOTHING",
                )
                .bind(a.machine_id)
                .bind(&a.msg_id)
                .bind(a.received_at)
                .bind(&a.body)
                .defer(&mut *tx)
                .await?;
                // Checked against the command when it arrived; only a change since stops it.
                // A dispense whose result this process stored first (`done`, with this ack's
                // time) gets the ack's event and timeline entry.
                let update = crate::store::query(
                    "UPDATE device_commands SET state = CASE WHEN state = 'done' THEN state ELSE $2 END, \
                     acked_at = COALESCE(acked_at, $3), result = CASE WHEN state = 'done' THEN result ELSE $4 END, \
                     sent_at = COALESCE(sent_at, $5) \
                     WHERE command_id = $1 AND machine_id = $6 \
                     AND (state IN ('pending', 'sent') \
                          OR (state = 'done' AND kind = 'dispense' AND (acked_at IS NULL OR acked_at = $3)))",
                )
                .bind(&a.command_id)
                .bind(a.state)
                .bind(a.received_at)
                .bind(a.reason.as_deref())
                .bind(a.sent_at)
                .bind(a.machine_id)
                .execute_later(&mut *tx)
                .await?;
                updates.push(update);
            }
            tx.flush().await?;
            let mut settled = 0;
            for (a, update) in acks.iter().zip(updates) {
                if update.rows_affected()? == 0 {
                    tracing::debug!(command.id = %a.command_id, "a held ack found its command settled meanwhile");
                    continue;
                }
                settled += 1;
                if let Some(order) = &a.dispense_of {
                    crate::store::orders::acknowledge_dispense(
                        &mut tx,
                        order,
                        &a.command_id,
                        a.received_at,
                    )
                    .await
                    .map_err(order_store_error)?;
                }
            }
            tx.commit().await?;
            Ok(settled)
        }
        .await;
        match &written {
            Ok(_) => self.inner.held.written(&acks),
            Err(_) => self.inner.held.write_failed(),
        }
        written
    }

    /// Whether `command_id` has an ack held in memory, not yet written.
    pub fn ack_held(&self, command_id: &str) -> bool {
        self.inner.held.contains(command_id)
    }

    /// Holds an ack when this process can check it in memory (see [`super::held_acks`]).
    /// `Ok(false)`: the store must check it.
    fn hold_ack(
        &self,
        (machine_id, taking): (i64, Taking),
        envelope: &Envelope,
        command_id: &str,
        status: AckStatus,
        reason: Option<&str>,
        now: i64,
    ) -> Result<bool, Rejection> {
        let state = status.ledger_state();
        // Read before `make`, which runs under the held acks' lock.
        let dispense_too = taking == Taking::ByBroker
            && status != AckStatus::Rejected
            && !self.inner.held.failing();
        let make = || {
            let handed = self.inner.sent.take_holdable(
                command_id,
                machine_id,
                now.saturating_sub(ACK_GRACE_MS),
                dispense_too,
            )?;
            Some(HeldAck {
                command_id: command_id.to_owned(),
                machine_id,
                msg_id: envelope.msg_id.clone(),
                body: envelope.body.clone(),
                received_at: now,
                state,
                reason: reason.map(str::to_owned),
                sent_at: handed.sent_at,
                dispense_of: handed.dispense_of,
            })
        };
        match self
            .inner
            .held
            .hold(command_id, machine_id, &envelope.msg_id, make)
        {
            Hold::Held => Ok(true),
            Hold::NotHere => Ok(false),
            Hold::AlreadyHeld {
                same_message: true, ..
            } => Err(Rejection::Duplicate),
            Hold::AlreadyHeld { state, .. } => {
                Err(Rejection::Refused(format!("command already {state}")))
            }
        }
    }

    /// Writes the hand-over times noted at or before `cutoff` (server ms) that no answer of
    /// the machine has written yet, in one transaction, and moves those still `pending` to
    /// `sent`; answers how many. [`FLUSH_AFTER_MS`](super::sent_marks::FLUSH_AFTER_MS) before
    /// now on a timer, everything at shutdown.
    pub async fn write_sent_marks(&self, cutoff: i64) -> Result<usize, crate::store::Error> {
        let marks = self.inner.sent.take_until(cutoff);
        if marks.is_empty() {
            return Ok(0);
        }
        let written = async {
            let mut tx = self.inner.db.begin().await?;
            for (command_id, at) in &marks {
                crate::store::query(
                    "UPDATE device_commands SET sent_at = $2, \
                     state = CASE WHEN state = 'pending' THEN 'sent' ELSE state END \
                     WHERE command_id = $1 AND sent_at IS NULL",
                )
                .bind(command_id)
                .bind(*at)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        }
        .await;
        let n = marks.len();
        match written {
            Ok(()) => Ok(n),
            Err(e) => {
                self.inner.sent.restore(marks);
                Err(e)
            }
        }
    }

    /// Commands for `machine` that still wait for its ack and are within their TTL, oldest
    /// first.
    pub async fn pending_for(
        &self,
        machine: &str,
    ) -> Result<Vec<PendingCommand>, crate::store::Error> {
        // Held acks before and after the read: one written meanwhile is in one or the other.
        let held_before = self.inner.held.ids();
        let rows = crate::store::query(
            "SELECT c.command_id, c.payload, c.expires_at, c.kind, c.order_id FROM device_commands c JOIN machines m ON m.id = c.machine_id \
             WHERE m.code = $1 AND (m.disabled_at IS NULL OR c.kind = 'cancel') \
             AND c.state IN ('pending', 'sent') AND c.expires_at > $2 ORDER BY c.id",
        )
        .bind(machine)
        .bind(self.now_ms())
        .fetch_all(&self.inner.db.pool)
        .await?;
        let mut pending = Vec::with_capacity(rows.len());
        for r in &rows {
            let command_id: String = r.try_get(0)?;
            // Answered already, in memory.
            if held_before.contains(&command_id) || self.inner.held.contains(&command_id) {
                continue;
            }
            pending.push(PendingCommand {
                command_id,
                payload: r.try_get(1)?,
                expires_at: r.try_get(2)?,
                kind: r.try_get(3)?,
                order_id: r.try_get(4)?,
            });
        }
        Ok(pending)
    }

    /// Re-publishes `machine`'s pending commands (same id, same bytes: the machine executes
    /// each id once).
    pub async fn redeliver(&self, machine: &str) {
        match self.pending_for(machine).await {
            Ok(cmds) => {
                for c in &cmds {
                    self.publish(machine, c).await;
                }
            }
            Err(e) => tracing::warn!(machine, error = %e, "could not list pending commands"),
        }
    }

    /// Re-publishes every machine's pending commands (after the MQTT link reconnects).
    pub async fn redeliver_all(&self) {
        let machines = crate::store::query(
            "SELECT DISTINCT m.code FROM device_commands c JOIN machines m ON m.id = c.machine_id \
             WHERE c.state IN ('pending', 'sent') AND c.expires_at > $1",
        )
        .bind(self.now_ms())
        .fetch_all(&self.inner.db.pool)
        .await;
        match machines {
            Ok(rows) => {
                for r in rows {
                    if let Ok(code) = r.try_get::<String, _>(0) {
                        self.redeliver(&code).await;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not list pending commands"),
        }
    }

    /// Marks commands past their TTL and never acknowledged as `expired`; returns how many.
    /// The order flow calls this (or a job does) and refunds their orders.
    pub async fn expire_due(&self) -> Result<u64, crate::store::Error> {
        // An ack held in memory came in time: written first, its command is not expired.
        let _settling = self.inner.settling.lock().await;
        let cutoff = self.now_ms().saturating_sub(ACK_GRACE_MS);
        if let Err(e) = self.write_held_acks_locked().await {
            tracing::warn!(error = %e, "could not write held acks; expiring the other commands");
            return self.expire_due_but_held(cutoff).await;
        }
        let r = crate::store::query(
            "UPDATE device_commands SET state = 'expired' WHERE state IN ('pending', 'sent') AND expires_at <= $1",
        )
        .bind(cutoff)
        .execute(&self.inner.db.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Expires the commands due by `cutoff` except those a held ack answers (its write
    /// failed; it stays held for the next). Found first and expired one by one: this is the
    /// rare path, and the held acks may be many if their write keeps failing.
    async fn expire_due_but_held(&self, cutoff: i64) -> Result<u64, crate::store::Error> {
        let held = self.inner.held.ids();
        let due = crate::store::query(
            "SELECT command_id FROM device_commands WHERE state IN ('pending', 'sent') AND expires_at <= $1",
        )
        .bind(cutoff)
        .fetch_all(&self.inner.db.pool)
        .await?;
        let mut expired = 0;
        for row in &due {
            let id: String = row.try_get(0)?;
            if held.contains(&id) {
                continue;
            }
            expired += crate::store::query(
                "UPDATE device_commands SET state = 'expired' WHERE command_id = $1 AND state IN ('pending', 'sent') AND expires_at <= $2",
            )
            .bind(&id)
            .bind(cutoff)
            .execute(&self.inner.db.pool)
            .await?
            .rows_affected();
        }
        Ok(expired)
    }

    /// The ledger row of a command.
    pub async fn command(
        &self,
        command_id: &str,
    ) -> Result<Option<CommandRecord>, crate::store::Error> {
        // As in `pending_for`: an ack written while the row is read is held before or after.
        let held_before = self.inner.held.get(command_id);
        let row = crate::store::query(
            "SELECT command_id, machine_id, kind, order_id, state, result FROM device_commands WHERE command_id = $1",
        )
        .bind(command_id)
        .fetch_optional(&self.inner.db.pool)
        .await?;
        let held = held_before.or_else(|| self.inner.held.get(command_id));
        row.map(|r| {
            let mut record = CommandRecord {
                command_id: r.try_get(0)?,
                machine_id: r.try_get(1)?,
                kind: r.try_get(2)?,
                order_id: r.try_get(3)?,
                state: r.try_get(4)?,
                result: r.try_get(5)?,
            };
            // An ack held in memory is the ledger's answer until it is written (and only for a
            // row still open: one settled meanwhile, e.g. expired, is the store's answer).
            if let Some(ack) = held.filter(|_| matches!(record.state.as_str(), "pending" | "sent"))
            {
                record.state = ack.state.to_owned();
                record.result = ack.reason;
            }
            Ok(record)
        })
        .transpose()
    }

    /// The full incoming pipeline for one raw message from the machine the transport
    /// authenticated as `authenticated`: verify, deduplicate, apply, record, then forward to
    /// the event stream. A rejection is logged with its reason and changes nothing (a late
    /// dispense result is kept as evidence: [`crate::pay::late_vend`]). For a message the
    /// machine learns the outcome of from the answer (HTTP).
    pub async fn receive(&self, authenticated: &str, raw: &[u8]) -> Result<DeviceEvent, Rejection> {
        self.receive_taken(authenticated, raw, (self.now_ms(), Taking::ByAnswer))
            .await
    }

    /// [`receive`](Self::receive) for a message a broker took (MQTT) that reached the server
    /// at `arrived_at` (server ms) and waited since (a store outage): its clock window and
    /// whether it came before its command expired are judged by when it arrived, not when it
    /// is stored.
    pub async fn receive_arrived(
        &self,
        authenticated: &str,
        raw: &[u8],
        arrived_at: i64,
    ) -> Result<DeviceEvent, Rejection> {
        self.receive_taken(authenticated, raw, (arrived_at, Taking::ByBroker))
            .await
    }

    async fn receive_taken(
        &self,
        authenticated: &str,
        raw: &[u8],
        arrival: (i64, Taking),
    ) -> Result<DeviceEvent, Rejection> {
        let result = self.receive_inner(authenticated, raw, arrival).await;
        match &result {
            Ok(ev) => {
                tracing::debug!(machine = %ev.machine, msg_id = %ev.msg_id, kind = ev.event.kind(), "device event accepted");
                if (ev.ts - ev.received_at).abs() > DRIFT_SYNC_MS {
                    tracing::info!(machine = %ev.machine, skew_ms = ev.ts - ev.received_at, "machine clock drifting; sending the time");
                    self.send_time(authenticated, raw).await;
                }
                if matches!(ev.event, Event::Heartbeat { .. }) {
                    self.redeliver(&ev.machine).await;
                }
                if self.inner.events.send(ev.clone()).await.is_err() {
                    tracing::warn!(machine = %ev.machine, msg_id = %ev.msg_id, "event stream closed; event is stored only");
                }
            }
            Err(Rejection::Duplicate) => {
                tracing::debug!(machine = authenticated, "duplicate device message ignored")
            }
            Err(Rejection::Disabled) => {
                tracing::debug!(
                    machine = authenticated,
                    "a disabled machine's request refused"
                )
            }
            Err(reason @ Rejection::Stale { .. }) => {
                tracing::warn!(machine = authenticated, %reason, "device message ignored; sending the time");
                self.send_time(authenticated, raw).await;
            }
            Err(reason) => {
                tracing::warn!(machine = authenticated, %reason, "device message ignored")
            }
        }
        result
    }

    async fn receive_inner(
        &self,
        authenticated: &str,
        raw: &[u8],
        (arrived_at, taking): (i64, Taking),
    ) -> Result<DeviceEvent, Rejection> {
        let m = self
            .machine(authenticated)
            .await
            .map_err(internal)?
            .ok_or(Rejection::UnknownMachine)?;
        let now = arrived_at;
        let Verified { envelope, event } = open_envelope(raw, &m.code, m.secret(), now)?;
        // A machine out of service starts nothing. What it reports still counts: its answers
        // to commands it already had (a vend under way settles as it happened), its faults
        // and signs of life.
        if m.disabled
            && matches!(
                event,
                Event::BuyRequest { .. } | Event::FaceToken { .. } | Event::DoorClosed { .. }
            )
        {
            return Err(Rejection::Disabled);
        }
        if matches!(event, Event::Heartbeat { .. }) {
            // A heartbeat only says "alive now": applying it twice changes nothing, so it is
            // neither deduplicated nor kept (a fleet sends millions a day).
            crate::store::query(
                "UPDATE machines SET online = TRUE, last_heartbeat_at = $2 WHERE id = $1",
            )
            .bind(m.id)
            .bind(now)
            .execute(&self.inner.db.pool)
            .await
            .map_err(internal)?;
            return Ok(DeviceEvent::taken(m, envelope, event, now));
        }
        if let Event::Ack {
            command_id,
            status,
            reason,
        } = &event
            && self.hold_ack(
                (m.id, taking),
                &envelope,
                command_id,
                *status,
                reason.as_deref(),
                now,
            )?
        {
            if cfg!(debug_assertions) && self.inner.held.holds_dispense(command_id) {
                crate::failpoint::crash_if_armed(crate::failpoint::DISPENSE_ACK_HELD);
            }
            return Ok(DeviceEvent::taken(m, envelope, event, now));
        }
        if matches!(event, Event::DispenseResult { .. }) {
            crate::failpoint::crash_if_armed(crate::failpoint::DISPENSE_RESULT_BEFORE_RECORD);
        }
        let mut tx = self.inner.db.begin().await.map_err(internal)?;
        // What a buy request reads goes out with the event's row (on PostgreSQL one round
        // trip instead of four); a repeated msg_id only wastes the reads.
        let mut reads = None;
        if let Event::BuyRequest { request_id, items } = &event {
            // A buy request is a sign of life too, read as such by the sale; it may arrive
            // before the first heartbeat after a reconnect. One heard from within the last
            // seconds is left as it is: no page written for nothing on every sale.
            crate::store::query(
                "UPDATE machines SET online = TRUE, last_heartbeat_at = $2 WHERE id = $1 \
                 AND (NOT online OR last_heartbeat_at IS NULL OR last_heartbeat_at < $2 - 5000)",
            )
            .bind(m.id)
            .bind(now)
            .defer(&mut *tx)
            .await
            .map_err(internal)?;
            let request = BuyRequest {
                machine: &m.code,
                msg_id: &envelope.msg_id,
                request_id,
                items,
            };
            reads = Some(
                sale::read_ahead(&mut tx, &request)
                    .await
                    .map_err(internal)?,
            );
        }
        // Recorded first: a repeated msg_id stops here, before anything is applied twice. A
        // rejection below drops the transaction, and with it this row.
        let inserted = crate::store::query(
            "INSERT INTO device_events (machine_id, msg_id, kind, received_at, body) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (machine_id, msg_id) DO NOTHING",
        )
        .bind(m.id)
        .bind(&envelope.msg_id)
        .bind(&envelope.kind)
        .bind(now)
        .bind(&envelope.body)
        .execute_later(&mut *tx)
        .await
        .map_err(internal)?;
        // A dispense result's usual case goes out with the row, after it (the event's row
        // locked before the command's, as everywhere): on a repeat it is rolled back with it.
        let mut result_queued = None;
        if let Event::DispenseResult {
            command_id,
            order_id,
            ..
        } = &event
        {
            // An ack held in memory took the hand-over time with it, and has the time the
            // command was acknowledged; the ack itself is written later.
            let held = self.inner.held.times(command_id);
            let sent = (self.inner.sent.get(command_id)).or(held.map(|(sent, _)| sent));
            let acked = held.map(|(_, received)| received);
            let applied = queue_result(
                &mut tx,
                m.id,
                (command_id, order_id),
                &envelope.body,
                (now, sent, acked),
            )
            .await?;
            // Read after the command's update, which waits for an ack written meanwhile (a
            // held-ack batch moving the order to `dispensing`): read before it, the order
            // could be seen as it was.
            let order = vend::read_order_later(&mut tx, VendOrder::TradeNo(order_id))
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "could not read a dispensed order");
                    Rejection::Unavailable
                })?;
            result_queued = Some((order, applied));
        }
        tx.flush().await.map_err(internal)?;
        if inserted.rows_affected().map_err(internal)? == 0 {
            return Err(Rejection::Duplicate);
        }
        let mut business = event.needs_business_handling();
        let mut refund_job = None;
        // The command this event answers: its hand-over time is written with the answer.
        let mut answered = None;
        // A buy request's precreate job, or the machine's answer, once committed.
        let mut precreate = None;
        let mut answer = None;
        match &event {
            Event::Ack {
                command_id,
                status,
                reason,
            } => {
                let sent = self.inner.sent.get(command_id);
                let command = apply_ack(
                    &mut tx,
                    m.id,
                    command_id,
                    *status,
                    reason.as_deref(),
                    (now, sent),
                )
                .await?;
                answered = Some(command_id);
                // Only a dispense's ack moves an order; the ledger row is all other acks need.
                // An accepted one moves it here, in the same transaction (two statements
                // instead of a job); a refusal needs a refund, which calls Alipay: a job.
                business = false;
                if let ("dispense", Some(order)) = (command.kind.as_str(), &command.order_id) {
                    if *status == AckStatus::Rejected {
                        business = true;
                    } else {
                        crate::store::orders::acknowledge_dispense(&mut tx, order, command_id, now)
                            .await
                            .map_err(|e| {
                                tracing::error!(error = %e, "could not record a dispense acknowledgement");
                                Rejection::Unavailable
                            })?;
                    }
                }
            }
            Event::DispenseResult {
                command_id,
                order_id,
                items,
            } => {
                let Some((order, applied)) = result_queued.take() else {
                    return Err(internal(crate::store::Error::Protocol(
                        "a dispense result without its statements".into(),
                    )));
                };
                let fate = result_fate(&mut tx, applied, m.id, command_id, order_id, now).await?;
                if let ResultFate::Late = fate {
                    // Refused, as the protocol says: the order is settled, or will be, without
                    // it. What it says came out is kept with the event, once per command;
                    // anything else (a repeat under a new msg_id) is dropped as before.
                    let units: Vec<UnitResult> = items.iter().map(UnitResult::from).collect();
                    let kept = late_vend::keep(
                        &mut tx,
                        m.id,
                        (command_id, &envelope.msg_id),
                        order_id,
                        &units,
                        now,
                    )
                    .await;
                    let kept = match kept {
                        Ok(kept) => kept,
                        // The store: the machine sends it again later, as for any event.
                        Err(OrderError::Store(e)) => {
                            tracing::error!(error = %e, "could not keep a late dispense result");
                            return Err(Rejection::Unavailable);
                        }
                        // Anything else would fail again: refused as before, nothing kept.
                        Err(e) => {
                            tracing::error!(error = %e, "a late dispense result could not be kept");
                            None
                        }
                    };
                    if kept.is_some() {
                        tx.commit().await.map_err(internal)?;
                        self.inner.sent.forget(command_id);
                    }
                    return Err(Rejection::Refused(EXPIRED.into()));
                }
                answered = Some(command_id);
                // What the results decide (stock, the order's end, a refund for what did not
                // come out) commits with them; only a refund's call to Alipay is a job.
                business = false;
                refund_job = record_vend(&mut tx, (&m.code, order_id), order, items, now).await?;
            }
            // Its sign of life and its reads are queued above, before the event's row.
            Event::BuyRequest { request_id, items } => {
                // Taken with the event: the order and its reservation, or the answer.
                business = false;
                let request = BuyRequest {
                    machine: &m.code,
                    msg_id: &envelope.msg_id,
                    request_id,
                    items,
                };
                let Some(reads) = reads.take() else {
                    return Err(internal(crate::store::Error::Protocol(
                        "a buy request without its reads".into(),
                    )));
                };
                match sale::take_request_in(
                    &mut tx,
                    self,
                    self.inner.sale_terms,
                    request,
                    reads,
                    now,
                )
                .await
                {
                    Ok(Taken::Precreate(claimed)) => precreate = Some(claimed),
                    Ok(Taken::Answered(recorded)) => answer = Some(recorded),
                    Ok(Taken::BeingCreated) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "could not take a buy request");
                        return Err(Rejection::Unavailable);
                    }
                }
            }
            _ => {}
        }
        // What the event means for orders and stock is decided by a job queued in the same
        // transaction: a crash after this commit cannot lose the event's consequences.
        // It is queued claimed by this process, which runs it as soon as the event is out.
        let mut job = precreate;
        if business {
            let key = format!("device_event:{}:{}", m.id, envelope.msg_id);
            // The event rides along, so the job need not read it back.
            let payload = serde_json::json!({
                "machine_id": m.id,
                "msg_id": envelope.msg_id,
                "machine": m.code,
                "kind": envelope.kind,
                "body": envelope.body,
            });
            job = crate::store::jobs::enqueue_claimed(
                &mut *tx,
                "device_event",
                &key,
                &payload.to_string(),
                now,
                crate::jobs::LEASE_MS,
            )
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Store(e) => internal(e),
                other => {
                    tracing::error!(error = %other, "could not queue a device event");
                    Rejection::Unavailable
                }
            })
            .map(Some)?;
        }
        tx.commit().await.map_err(internal)?;
        let job = job.and_then(crate::store::jobs::Claimed::committed);
        if let Some(command_id) = answered {
            self.inner.sent.forget(command_id);
        }
        if let Some(recorded) = &answer {
            self.deliver(recorded).await;
        }
        Ok(DeviceEvent {
            machine_id: m.id,
            machine: m.code,
            msg_id: envelope.msg_id,
            ts: envelope.ts,
            received_at: now,
            event,
            job,
            run_soon: refund_job,
        })
    }
}

/// Records a dispense's results in the ledger's transaction; answers the refund job it queued,
/// if any. A report for an order that is no longer vending (finished by an earlier report or
/// by the dispense watch) changes nothing but the ledger.
async fn record_vend(
    tx: &mut Tx,
    (machine, order_ref): (&str, &str),
    order: Later,
    items: &[ItemResult],
    now: i64,
) -> Result<Option<String>, Rejection> {
    let units: Vec<UnitResult> = items.iter().map(UnitResult::from).collect();
    let rows = order.rows().map_err(internal)?;
    match vend::record_results_read(tx, now, &rows, &units, vend::Reporter::Machine).await {
        Ok(recorded) => {
            // Stored only if the transaction commits (on PostgreSQL the state move's own
            // check goes out with the commit): the commit's failure is logged after this.
            tracing::info!(machine, order = order_ref, state = %recorded.outcome.state, refund_fen = recorded.outcome.refund.0, "vend recorded, to be committed");
            Ok(recorded.refund_job)
        }
        Err(VendError::NotVending(..) | VendError::NotFound) => Ok(None),
        Err(e) => {
            tracing::error!(error = %e, "could not record a dispense result");
            Err(Rejection::Unavailable)
        }
    }
}

struct OpenCommand {
    kind: String,
    order_id: Option<String>,
    state: String,
    expires_at: i64,
}

/// The command, if it exists *and* belongs to this machine; one answer for both cases so a
/// machine cannot probe other machines' command ids.
async fn load_command(
    tx: &mut Tx,
    machine_id: i64,
    command_id: &str,
) -> Result<OpenCommand, Rejection> {
    let row = crate::store::query(
        "SELECT kind, order_id, state, expires_at FROM device_commands WHERE command_id = $1 AND machine_id = $2",
    )
    .bind(command_id)
    .bind(machine_id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(internal)?
    .ok_or_else(|| Rejection::Refused("no such command for this machine".into()))?;
    Ok(OpenCommand {
        kind: row.try_get(0).map_err(internal)?,
        order_id: row.try_get(1).map_err(internal)?,
        state: row.try_get(2).map_err(internal)?,
        expires_at: row.try_get(3).map_err(internal)?,
    })
}

/// What an acknowledged command was for.
struct AckedCommand {
    kind: String,
    order_id: Option<String>,
}

fn is_expired(c: &OpenCommand, now: i64) -> bool {
    c.state == "expired"
        || (matches!(c.state.as_str(), "pending" | "sent")
            && c.expires_at.saturating_add(ACK_GRACE_MS) <= now)
}

async fn apply_ack(
    tx: &mut Tx,
    machine_id: i64,
    command_id: &str,
    status: AckStatus,
    reason: Option<&str>,
    (now, sent): (i64, Option<i64>),
) -> Result<AckedCommand, Rejection> {
    let new_state = status.ledger_state();
    // The usual case in one statement: the command is open, this machine's, and not
    // expired. Anything else finds no row and is explained by `refusal` below.
    let row = crate::store::query(
        "UPDATE device_commands SET state = $2, acked_at = $3, result = $4, sent_at = COALESCE(sent_at, $5) \
         WHERE command_id = $1 AND machine_id = $6 AND state IN ('pending', 'sent') AND expires_at > $7 \
         RETURNING kind, order_id",
    )
    .bind(command_id)
    .bind(new_state)
    .bind(now)
    .bind(reason)
    .bind(sent)
    .bind(machine_id)
    .bind(now.saturating_sub(ACK_GRACE_MS))
    .fetch_optional(&mut **tx)
    .await
    .map_err(internal)?;
    match row {
        Some(row) => Ok(AckedCommand {
            kind: row.try_get(0).map_err(internal)?,
            order_id: row.try_get(1).map_err(internal)?,
        }),
        None => Err(refusal(tx, machine_id, command_id, now, None, &["pending", "sent"]).await),
    }
}

/// Why an answer to a command changed nothing: no such command for this machine, another
/// command kind or order, expired, or already answered. Only called once the conditional
/// update has found no row.
async fn refusal(
    tx: &mut Tx,
    machine_id: i64,
    command_id: &str,
    now: i64,
    dispense_of: Option<&str>,
    open: &[&str],
) -> Rejection {
    match load_command(tx, machine_id, command_id).await {
        Ok(c) => explain(&c, command_id, now, dispense_of, open),
        Err(rejection) => rejection,
    }
}

/// [`refusal`] for a command already loaded.
fn explain(
    c: &OpenCommand,
    command_id: &str,
    now: i64,
    dispense_of: Option<&str>,
    open: &[&str],
) -> Rejection {
    if let Some(order_id) = dispense_of {
        if c.kind != "dispense" {
            return Rejection::Refused("command is not a dispense".into());
        }
        if c.order_id.as_deref() != Some(order_id) {
            return Rejection::Refused("order_id does not match the command".into());
        }
    }
    if is_expired(c, now) {
        return Rejection::Refused(EXPIRED.into());
    }
    if !open.contains(&c.state.as_str()) {
        return Rejection::Refused(format!("command already {}", c.state));
    }
    tracing::error!(command_id, state = %c.state, "an open command was not updated");
    Rejection::Unavailable
}

/// Why an answer to an expired command is refused.
const EXPIRED: &str = "command expired before it was acknowledged";

/// What became of a dispense result.
enum ResultFate {
    /// It settled its command; what it means for the order is the caller's.
    Applied,
    /// Its command had expired: refused, but what it says came out is evidence to keep.
    Late,
}

/// Queues the usual case of a dispense result: its command, open (or acknowledged) and this
/// machine's, moves to `done`. [`result_fate`] reads what it did.
async fn queue_result(
    tx: &mut Tx,
    machine_id: i64,
    (command_id, order_id): (&str, &str),
    body: &str,
    (now, sent, acked): (i64, Option<i64>, Option<i64>),
) -> Result<Later, Rejection> {
    // As for an ack: one conditional statement, and `explain` says why when it finds no row.
    crate::store::query(
        "UPDATE device_commands SET state = 'done', acked_at = COALESCE(acked_at, $2), result = $3, \
         sent_at = COALESCE(sent_at, $4) \
         WHERE command_id = $1 AND machine_id = $5 AND kind = 'dispense' AND order_id = $6 \
         AND (state = 'acknowledged' OR (state IN ('pending', 'sent') AND expires_at > $7))",
    )
    .bind(command_id)
    .bind(acked.unwrap_or(now))
    .bind(body)
    .bind(sent)
    .bind(machine_id)
    .bind(order_id)
    .bind(now.saturating_sub(ACK_GRACE_MS))
    .execute_later(&mut **tx)
    .await
    .map_err(internal)
}

/// What the statement [`queue_result`] queued did: applied, too late, or why not.
async fn result_fate(
    tx: &mut Tx,
    applied: Later,
    machine_id: i64,
    command_id: &str,
    order_id: &str,
    now: i64,
) -> Result<ResultFate, Rejection> {
    if applied.rows_affected().map_err(internal)? == 1 {
        return Ok(ResultFate::Applied);
    }
    let c = load_command(tx, machine_id, command_id).await?;
    if c.kind == "dispense" && c.order_id.as_deref() == Some(order_id) && is_expired(&c, now) {
        return Ok(ResultFate::Late);
    }
    let open = ["pending", "sent", "acknowledged"];
    Err(explain(&c, command_id, now, Some(order_id), &open))
}

/// The store's error behind an order's: the only kind moving an order on a held ack can
/// meet (its one transition is fixed).
fn order_store_error(e: OrderError) -> crate::store::Error {
    match e {
        OrderError::Store(crate::store::StoreError::Store(e)) => e,
        other => crate::store::Error::Protocol(other.to_string()),
    }
}

fn internal(e: crate::store::Error) -> Rejection {
    // The machine will retry with the same msg_id; nothing was recorded.
    tracing::error!(error = %e, "store error while handling a device message");
    Rejection::Unavailable
}

/// A command id fixed by the machine and an idempotency key (hex of SHA-256, 128 bits).
fn keyed_command_id(machine: &str, key: &str) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(machine.as_bytes());
    ctx.update(&[0]);
    ctx.update(key.as_bytes());
    let digest = ctx.finish();
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("c-{hex}")
}

/// A fresh command id: `c-` and 32 hex digits of randomness.
fn new_command_id() -> String {
    let mut bytes = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // The system RNG failing is unrecoverable in practice; fall back to time + counter
        // so ids stay unique within this process.
        static N: AtomicI64 = AtomicI64::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        return format!("c-{}-{n}", SystemClock.now_ms());
    }
    let mut id = String::from("c-");
    for b in bytes {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// One wake-up per machine with an HTTP long-poll open, so a command wakes only its own
/// machine's polls (each of which reads the store), not every poll open.
#[derive(Default)]
struct CommandSignals {
    signals: Mutex<CommandSignalMap>,
}

#[derive(Default)]
struct CommandSignalMap {
    by_machine: std::collections::HashMap<String, std::sync::Weak<Notify>>,
    /// The size at which entries no poll holds any more are swept out.
    sweep_at: usize,
}

impl CommandSignals {
    fn for_machine(&self, machine: &str) -> Arc<Notify> {
        let Ok(mut map) = self.signals.lock() else {
            return Arc::new(Notify::new());
        };
        if let Some(live) = map
            .by_machine
            .get(machine)
            .and_then(std::sync::Weak::upgrade)
        {
            return live;
        }
        let signal = Arc::new(Notify::new());
        map.by_machine
            .insert(machine.to_owned(), Arc::downgrade(&signal));
        if map.by_machine.len() >= map.sweep_at {
            map.by_machine.retain(|_, w| w.strong_count() > 0);
            map.sweep_at = (map.by_machine.len() * 2).max(1024);
        }
        signal
    }

    fn wake(&self, machine: &str) {
        let signal = self.signals.lock().ok().and_then(|map| {
            map.by_machine
                .get(machine)
                .and_then(std::sync::Weak::upgrade)
        });
        if let Some(signal) = signal {
            signal.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_command_wakes_the_long_polls_of_its_own_machine_only() {
        let signals = CommandSignals::default();
        let (a, b) = (signals.for_machine("VM-A"), signals.for_machine("VM-B"));
        let (a_woken, b_woken) = (a.notified(), b.notified());
        tokio::pin!(a_woken, b_woken);
        a_woken.as_mut().enable();
        b_woken.as_mut().enable();
        signals.wake("VM-B");
        let poll = |f: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>| {
            let waker = std::task::Waker::noop();
            std::future::Future::poll(f, &mut std::task::Context::from_waker(waker)).is_ready()
        };
        assert!(!poll(a_woken.as_mut()), "VM-A woken by VM-B's command");
        assert!(poll(b_woken.as_mut()));
        // A second poll of the same machine shares its signal.
        assert!(Arc::ptr_eq(&a, &signals.for_machine("VM-A")));
    }
}
