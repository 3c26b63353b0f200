//! Named crash points for the fault tests (reliability.md F8, F9): a process started with
//! `OPENVEND_FAILPOINTS=name[,name…]` stops dead at each named point it reaches, as a
//! `kill -9` there would: no destructor, no shutdown, nothing flushed that was not committed.
//! Compiled in only with debug assertions (the test builds): a release build ignores the
//! variable, so a stray one cannot stop a production server.

/// After a payment notification's checks, with the order marked paid and its dispense
/// recorded in the transaction, before the commit (F8).
pub const NOTIFY_PAID_BEFORE_COMMIT: &str = "notify_paid_before_commit";
/// A machine's acceptance of a dispense is held in memory: answered, not yet written (the
/// held ack lost with the process).
pub const DISPENSE_ACK_HELD: &str = "dispense_ack_held";
/// A machine's dispense result has arrived (and the broker has acknowledged it), before it is
/// stored (F9: the machine vended; the server does not know).
pub const DISPENSE_RESULT_BEFORE_RECORD: &str = "dispense_result_before_record";

/// Ends the process at once if `name` is armed (test builds only).
#[cfg(not(debug_assertions))]
pub fn crash_if_armed(_name: &str) {}

/// Ends the process at once if `name` is armed.
#[cfg(debug_assertions)]
pub fn crash_if_armed(name: &str) {
    static ARMED: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        std::env::var("OPENVEND_FAILPOINTS")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    });
    if armed.iter().any(|p| p == name) {
        eprintln!("failpoint {name}: stopping the process");
        std::process::exit(86);
    }
}
