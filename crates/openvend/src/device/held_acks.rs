//! Acknowledgements checked in memory, held there and written together.
//!
//! An ack comes with nearly every command: a `show_qr` and a `dispense` in every sale. When
//! the server can check one in memory (this process handed the command over, to this
//! machine, and it has not expired), the ack is answered at once and written with the others
//! every [`WRITE_EVERY`], in one transaction, instead of one commit each. A `dispense`'s
//! acceptance is written with the move of its order to `dispensing`; its result, which
//! usually comes first, settles the order from `paid` all the same, and the ack then only
//! adds its entry to the timeline. A dispense's ack is held only when it came through a
//! broker, which acknowledged it before the server stored anything, so that the machine keeps
//! it and sends it again after a reconnect (device-protocol §2); one answered over HTTP is
//! stored before the answer, the machine's only confirmation. Nor is a refused dispense held
//! (it needs a refund), nor any dispense while held acks fail to be written: the dispense
//! watch of this process waits for an ack it holds, but another instance's, or this one's
//! after a crash, would find the dispense unacknowledged in the store and refund it.
//!
//! Until written, the ledger reads an ack from here: the command is not re-delivered and a
//! second ack is refused. An ack leaves here only once its write has committed, and the
//! ledger's readers of the store look here before and after they read, so an ack held before
//! a read is never missed by it. Expiry writes what is held first, so the dispense watch never
//! takes an acknowledged dispense for an undelivered one. Holding stops when the server begins
//! to shut down, and what is held then is written. A crash loses what is held: at most
//! [`WRITE_EVERY`] of acks while writes succeed, everything since the first failure while they
//! fail. Their rows stay `pending` or `sent`, and their orders `paid`. A machine on MQTT sends
//! its unconfirmed events again after it reconnects (device-protocol §2): the embedded broker
//! goes down with the server, and a machine of an external broker is handed the command again
//! when it next sends a heartbeat, and answers `already_done`, as one on HTTP does.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// How often held acks are written.
pub const WRITE_EVERY: Duration = Duration::from_millis(100);

/// Whether an ack of a command of this kind may be held: those that settle nothing but the
/// command's own row, and a dispense (whose acceptance moves its order when written).
pub fn may_be_held(kind: &str) -> bool {
    matches!(kind, "show_qr" | "cancel" | "sale_refused" | "dispense")
}

/// An ack checked in memory whose write has not committed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldAck {
    /// The command it answers.
    pub command_id: String,
    /// The machine's row id.
    pub machine_id: i64,
    /// The event's `msg_id`.
    pub msg_id: String,
    /// The event's body, as signed.
    pub body: String,
    /// When it reached the server (server ms).
    pub received_at: i64,
    /// `acknowledged` or `rejected`.
    pub state: &'static str,
    /// The machine's reason, if any.
    pub reason: Option<String>,
    /// When this process handed the command over.
    pub sent_at: i64,
    /// A dispense's order (`out_trade_no`), moved to `dispensing` with the ack's write.
    pub dispense_of: Option<String>,
}

/// What [`HeldAcks::hold`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Hold {
    /// Held; it will be written.
    Held,
    /// This machine's command already has a held ack: this very message again
    /// (`same_message`), or another answer, refused with the held one's state.
    AlreadyHeld {
        /// Whether it is the held ack's own `msg_id`.
        same_message: bool,
        /// The held ack's state.
        state: &'static str,
    },
    /// Not for holding: the store must check it.
    NotHere,
}

/// Command id → its held ack; once closed, nothing more is held.
#[derive(Debug, Default)]
pub struct HeldAcks(Mutex<State>);

#[derive(Debug, Default)]
struct State {
    held: HashMap<String, HeldAck>,
    closed: bool,
    /// The last write failed (cleared by one that commits).
    failing: bool,
}

impl HeldAcks {
    /// Holds the ack `make` builds, unless the command already has one. `make` answers `None`
    /// when the ack cannot be checked in memory; it runs under this map's lock, so two acks
    /// of one command are never both held.
    pub fn hold(
        &self,
        command_id: &str,
        machine_id: i64,
        msg_id: &str,
        make: impl FnOnce() -> Option<HeldAck>,
    ) -> Hold {
        let Ok(mut state) = self.0.lock() else {
            return Hold::NotHere;
        };
        if let Some(h) = state.held.get(command_id) {
            // Another machine's answer is the store's to refuse (without telling it that
            // the command exists).
            if h.machine_id != machine_id {
                return Hold::NotHere;
            }
            return Hold::AlreadyHeld {
                same_message: h.msg_id == msg_id,
                state: h.state,
            };
        }
        if state.closed {
            return Hold::NotHere;
        }
        match make() {
            Some(ack) => {
                state.held.insert(command_id.to_owned(), ack);
                Hold::Held
            }
            None => Hold::NotHere,
        }
    }

    /// Holds nothing more (shutdown): every later ack goes to the store.
    pub fn close(&self) {
        if let Ok(mut state) = self.0.lock() {
            state.closed = true;
        }
    }

    /// The held ack of `command_id`, if any.
    pub fn get(&self, command_id: &str) -> Option<HeldAck> {
        self.0.lock().ok()?.held.get(command_id).cloned()
    }

    /// When the held ack of `command_id`, if any, was handed over and received (server ms):
    /// what a result stored before it needs, without copying the ack.
    pub fn times(&self, command_id: &str) -> Option<(i64, i64)> {
        let state = self.0.lock().ok()?;
        let ack = state.held.get(command_id)?;
        Some((ack.sent_at, ack.received_at))
    }

    /// Whether `command_id` has a held ack of a dispense.
    pub fn holds_dispense(&self, command_id: &str) -> bool {
        self.0.lock().is_ok_and(|s| {
            s.held
                .get(command_id)
                .is_some_and(|a| a.dispense_of.is_some())
        })
    }

    /// Whether `command_id` has a held ack.
    pub fn contains(&self, command_id: &str) -> bool {
        self.0.lock().is_ok_and(|s| s.held.contains_key(command_id))
    }

    /// The command ids with a held ack now. A reader of the store checks this before it
    /// reads and [`contains`](Self::contains) after: an ack leaves this map only once its
    /// write has committed, so one of the two sees every ack the store does not.
    pub fn ids(&self) -> std::collections::HashSet<String> {
        self.0
            .lock()
            .map(|s| s.held.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every held ack, to write them, in command order (so that two instances writing acks of
    /// the same commands lock their rows in the same order). They stay held, and answer for
    /// the store, until [`written`](Self::written) says their write has committed; a failed
    /// write leaves them to the next.
    pub fn to_write(&self) -> Vec<HeldAck> {
        let mut acks: Vec<HeldAck> = match self.0.lock() {
            Ok(state) => state.held.values().cloned().collect(),
            Err(_) => Vec::new(),
        };
        acks.sort_by(|a, b| a.command_id.cmp(&b.command_id));
        acks
    }

    /// Notes that a write of held acks failed: until one commits, [`failing`](Self::failing).
    pub fn write_failed(&self) {
        if let Ok(mut state) = self.0.lock() {
            state.failing = true;
        }
    }

    /// Whether the last write of held acks failed.
    pub fn failing(&self) -> bool {
        self.0.lock().map_or(true, |s| s.failing)
    }

    /// Lets go of acks whose write has committed: the store answers for them now.
    pub fn written(&self, acks: &[HeldAck]) {
        if let Ok(mut state) = self.0.lock() {
            state.failing = false;
            for ack in acks {
                if state.held.get(&ack.command_id) == Some(ack) {
                    state.held.remove(&ack.command_id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(command_id: &str, machine_id: i64, msg_id: &str) -> HeldAck {
        HeldAck {
            command_id: command_id.into(),
            machine_id,
            msg_id: msg_id.into(),
            body: "{}".into(),
            received_at: 1,
            state: "acknowledged",
            reason: None,
            sent_at: 0,
            dispense_of: None,
        }
    }

    #[test]
    fn one_ack_per_command_is_held_and_a_repeat_is_told_apart_from_a_second_answer() {
        let held = HeldAcks::default();
        assert_eq!(held.hold("c-1", 7, "e-1", || None), Hold::NotHere);
        assert!(!held.contains("c-1"));
        assert_eq!(
            held.hold("c-1", 7, "e-1", || Some(ack("c-1", 7, "e-1"))),
            Hold::Held
        );
        // Once a command has a held ack, no other is built for it.
        let built = std::cell::Cell::new(0);
        let never = || {
            built.set(built.get() + 1);
            Some(ack("c-1", 7, "e-x"))
        };
        assert_eq!(
            held.hold("c-1", 7, "e-1", never),
            Hold::AlreadyHeld {
                same_message: true,
                state: "acknowledged"
            }
        );
        assert_eq!(
            held.hold("c-1", 7, "e-2", never),
            Hold::AlreadyHeld {
                same_message: false,
                state: "acknowledged"
            }
        );
        // Another machine is sent to the store, which refuses it.
        assert_eq!(held.hold("c-1", 8, "e-3", never), Hold::NotHere);
        assert_eq!(held.get("c-1").map(|a| a.msg_id), Some("e-1".into()));
        assert_eq!(built.get(), 0);

        // Being written, it still answers; only a committed write lets go of it.
        let writing = held.to_write();
        assert_eq!(writing.len(), 1);
        assert!(held.contains("c-1") && held.ids().contains("c-1"));
        assert!(matches!(
            held.hold("c-1", 7, "e-9", || Some(ack("c-1", 7, "e-9"))),
            Hold::AlreadyHeld {
                same_message: false,
                ..
            }
        ));
        held.written(&writing);
        assert!(!held.contains("c-1") && held.ids().is_empty());
        // An ack held after a write began is not let go of by it.
        held.hold("c-1", 7, "e-9", || Some(ack("c-1", 7, "e-9")));
        held.written(&writing);
        assert_eq!(held.get("c-1").map(|a| a.msg_id), Some("e-9".into()));

        // Closed (shutdown): nothing more is held; what is held is still written.
        held.close();
        assert_eq!(
            held.hold("c-2", 7, "e-10", || Some(ack("c-2", 7, "e-10"))),
            Hold::NotHere
        );
        assert_eq!(held.to_write().len(), 1);
    }

    #[test]
    fn held_acks_are_written_in_command_order() {
        let held = HeldAcks::default();
        for id in ["c-3", "c-1", "c-2"] {
            held.hold(id, 7, id, || Some(ack(id, 7, id)));
        }
        let ids: Vec<String> = held.to_write().into_iter().map(|a| a.command_id).collect();
        assert_eq!(ids, ["c-1", "c-2", "c-3"]);
    }
}
