//! When each command was handed to its machine's link, held in memory until the ledger row is
//! next written.
//!
//! A command's `sent_at` is written by the transaction that records the machine's answer
//! (usually a few milliseconds later), so a hand-over costs no commit of its own; a mark
//! still unwritten after [`FLUSH_AFTER_MS`] (no answer yet: the machine is away or slow) is
//! written by [`DeviceChannel::write_sent_marks`](super::DeviceChannel::write_sent_marks),
//! which also moves the row to `sent`. A mark lost in a crash leaves the row `pending`,
//! which the ledger treats as `sent` in every decision: only the timestamp is lost.

use std::collections::HashMap;
use std::sync::Mutex;

/// How long a mark waits for the machine's answer before it is written on its own.
pub const FLUSH_AFTER_MS: i64 = 1_000;

/// A command whose ack may be held ([`may_be_held`](super::held_acks::may_be_held)): what
/// checking that ack in memory needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holdable {
    /// The machine's row id.
    pub machine_id: i64,
    /// The command's expiry (server ms).
    pub expires_at: i64,
    /// A dispense's order (`out_trade_no`): its accepted ack moves the order when written.
    pub dispense_of: Option<String>,
}

/// What a held ack takes over from a command's mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handed {
    /// When the command was handed over (server ms).
    pub sent_at: i64,
    /// A dispense's order.
    pub dispense_of: Option<String>,
}

#[derive(Debug, Clone)]
struct Mark {
    at: i64,
    holdable: Option<Holdable>,
}

/// Command id → server time (ms) of its first hand-over to the link.
#[derive(Debug, Default)]
pub struct SentMarks(Mutex<HashMap<String, Mark>>);

impl SentMarks {
    /// Notes a hand-over; a re-delivery keeps the first time.
    pub fn note(&self, command_id: &str, at: i64, holdable: Option<Holdable>) {
        if let Ok(mut marks) = self.0.lock() {
            marks
                .entry(command_id.to_owned())
                .or_insert(Mark { at, holdable });
        }
    }

    /// The mark of `command_id`, left in place until [`forget`](Self::forget) (the
    /// transaction that writes it may still fail).
    pub fn get(&self, command_id: &str) -> Option<i64> {
        self.0.lock().ok()?.get(command_id).map(|m| m.at)
    }

    /// Takes the mark of a command whose ack may be held: one of `machine_id`'s, still open
    /// at `open_at` (server ms), and a dispense only if `dispense_too` (the caller's rules
    /// for a dispense's ack: see [`super::held_acks`]). `None` leaves the mark as it is.
    pub fn take_holdable(
        &self,
        command_id: &str,
        machine_id: i64,
        open_at: i64,
        dispense_too: bool,
    ) -> Option<Handed> {
        let mut marks = self.0.lock().ok()?;
        let h = marks.get(command_id)?.holdable.as_ref()?;
        if h.machine_id != machine_id
            || h.expires_at <= open_at
            || (h.dispense_of.is_some() && !dispense_too)
        {
            return None;
        }
        let m = marks.remove(command_id)?;
        Some(Handed {
            sent_at: m.at,
            dispense_of: m.holdable.and_then(|h| h.dispense_of),
        })
    }

    /// Drops the mark of `command_id`, once it is stored.
    pub fn forget(&self, command_id: &str) {
        if let Ok(mut marks) = self.0.lock() {
            marks.remove(command_id);
        }
    }

    /// Takes every mark made at or before `cutoff`, in command order (so that two instances
    /// writing marks of the same commands lock their rows in the same order).
    pub fn take_until(&self, cutoff: i64) -> Vec<(String, i64)> {
        let Ok(mut marks) = self.0.lock() else {
            return Vec::new();
        };
        let mut due: Vec<(String, i64)> = marks
            .iter()
            .filter(|(_, m)| m.at <= cutoff)
            .map(|(id, m)| (id.clone(), m.at))
            .collect();
        for (id, _) in &due {
            marks.remove(id);
        }
        due.sort();
        due
    }

    /// Puts back marks whose write failed.
    pub fn restore(&self, marks: Vec<(String, i64)>) {
        for (id, at) in marks {
            self.note(&id, at, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_hand_over_counts_and_a_mark_is_taken_once() {
        let marks = SentMarks::default();
        marks.note("c-1", 10, None);
        marks.note("c-1", 20, None);
        marks.note("c-2", 30, None);
        assert_eq!(marks.get("c-1"), Some(10));
        assert_eq!(marks.take_until(15), vec![("c-1".to_owned(), 10)]);
        assert_eq!(marks.get("c-1"), None);
        assert_eq!(marks.take_until(15), Vec::new());
        marks.forget("c-2");
        assert_eq!(marks.take_until(i64::MAX), Vec::new());
        marks.restore(vec![("c-3".to_owned(), 5)]);
        assert_eq!(marks.get("c-3"), Some(5));
    }

    #[test]
    fn marks_are_taken_in_command_order() {
        let marks = SentMarks::default();
        for id in ["c-3", "c-1", "c-4", "c-2"] {
            marks.note(id, 10, None);
        }
        let ids: Vec<String> = marks.take_until(10).into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, ["c-1", "c-2", "c-3", "c-4"]);
    }

    #[test]
    fn only_an_open_holdable_command_of_the_same_machine_gives_up_its_mark() {
        let marks = SentMarks::default();
        let h = Holdable {
            machine_id: 7,
            expires_at: 100,
            dispense_of: None,
        };
        marks.note("c-1", 10, Some(h));
        marks.note("c-2", 10, None);
        assert_eq!(marks.take_holdable("c-2", 7, 0, false), None);
        assert_eq!(marks.take_holdable("c-1", 8, 0, false), None);
        assert_eq!(marks.take_holdable("c-1", 7, 100, false), None);
        assert_eq!(marks.get("c-1"), Some(10));
        let handed = Handed {
            sent_at: 10,
            dispense_of: None,
        };
        assert_eq!(marks.take_holdable("c-1", 7, 99, false), Some(handed));
        assert_eq!(marks.get("c-1"), None);
        assert_eq!(marks.get("c-2"), Some(10));
    }

    #[test]
    fn a_dispense_gives_up_its_mark_only_when_its_ack_may_be_held() {
        let marks = SentMarks::default();
        let h = Holdable {
            machine_id: 7,
            expires_at: 100,
            dispense_of: Some("o-1".into()),
        };
        marks.note("c-1", 10, Some(h));
        assert_eq!(marks.take_holdable("c-1", 7, 0, false), None);
        assert_eq!(marks.get("c-1"), Some(10));
        let handed = Handed {
            sent_at: 10,
            dispense_of: Some("o-1".into()),
        };
        assert_eq!(marks.take_holdable("c-1", 7, 0, true), Some(handed));
        assert_eq!(marks.get("c-1"), None);
    }
}
