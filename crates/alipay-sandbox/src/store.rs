//! The sandbox's state and its persistence: an append-only journal of whole records.
//!
//! Every change writes the changed record, whole, as one JSON line to `state.jsonl` in the
//! data folder; loading replays the lines (last write of a key wins) and rewrites a compact
//! journal. A torn last line (a crash mid-write) is ignored. Writes are flushed to the OS at
//! the end of every request; the sandbox does not fsync, so a power cut may lose the last
//! moments, but a killed process loses nothing that was answered.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::*;

/// One journal line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", content = "v", rename_all = "snake_case")]
enum Record {
    App(App),
    Buyer(Buyer),
    Trade(Box<Trade>),
    Refund(Refund),
    Settlement(Settlement),
    Relation(RoyaltyRelation),
    RelationRemoved(String),
    Freeze(Box<Freeze>),
    Agreement(Agreement),
    Grant(OAuthGrant),
    FaceToken(FaceToken),
    Notification(Box<Notification>),
    PaymentCode(PaymentCode),
    Sequence(u64),
    ClockOffset(i64),
}

/// The state, its secondary indexes, and the journal.
#[derive(Debug, Default)]
pub struct Store {
    /// The records.
    pub data: Data,
    by_out_trade_no: HashMap<(String, String), String>,
    freeze_by_out_order_no: HashMap<(String, String), String>,
    journal: Option<BufWriter<File>>,
    path: Option<PathBuf>,
}

impl Store {
    /// An in-memory store (tests, `--data` not given).
    pub fn in_memory() -> Self {
        Store::default()
    }

    /// Opens (or creates) the journal in `dir`, replays it and compacts it.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("state.jsonl");
        let mut store = Store {
            path: Some(path.clone()),
            ..Store::default()
        };
        if path.exists() {
            let reader = BufReader::new(File::open(&path)?);
            for (n, line) in reader.split(b'\n').enumerate() {
                let line = line?;
                if line.is_empty() {
                    continue;
                }
                match serde_json::from_slice::<Record>(&line) {
                    Ok(record) => store.apply(record),
                    Err(e) => {
                        tracing::warn!(line = n + 1, error = %e, "skipping unreadable journal line")
                    }
                }
            }
        }
        store.compact()?;
        Ok(store)
    }

    /// Rewrites the journal with one line per live record.
    fn compact(&mut self) -> anyhow::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let tmp = path.with_extension("jsonl.tmp");
        {
            let mut w = BufWriter::new(File::create(&tmp)?);
            let d = &self.data;
            let mut put = |r: &Record| -> anyhow::Result<()> {
                serde_json::to_writer(&mut w, r)?;
                w.write_all(b"\n")?;
                Ok(())
            };
            for v in d.apps.values() {
                put(&Record::App(v.clone()))?;
            }
            for v in d.buyers.values() {
                put(&Record::Buyer(v.clone()))?;
            }
            for v in d.trades.values() {
                put(&Record::Trade(Box::new(v.clone())))?;
            }
            for v in d.refunds.values() {
                put(&Record::Refund(v.clone()))?;
            }
            for v in d.settlements.values() {
                put(&Record::Settlement(v.clone()))?;
            }
            for v in d.relations.values() {
                put(&Record::Relation(v.clone()))?;
            }
            for v in d.freezes.values() {
                put(&Record::Freeze(Box::new(v.clone())))?;
            }
            for v in d.agreements.values() {
                put(&Record::Agreement(v.clone()))?;
            }
            for v in d.grants.values() {
                put(&Record::Grant(v.clone()))?;
            }
            for v in d.face_tokens.values() {
                put(&Record::FaceToken(v.clone()))?;
            }
            for v in d.notifications.values() {
                put(&Record::Notification(Box::new(v.clone())))?;
            }
            for v in d.payment_codes.values() {
                put(&Record::PaymentCode(v.clone()))?;
            }
            put(&Record::Sequence(d.sequence))?;
            put(&Record::ClockOffset(d.clock_offset_ms))?;
            w.flush()?;
        }
        std::fs::rename(&tmp, &path)?;
        self.journal = Some(BufWriter::new(OpenOptions::new().append(true).open(&path)?));
        Ok(())
    }

    fn apply(&mut self, record: Record) {
        let d = &mut self.data;
        match record {
            Record::App(v) => {
                d.apps.insert(v.app_id.clone(), v);
            }
            Record::Buyer(v) => {
                d.buyers.insert(v.user_id.clone(), v);
            }
            Record::Trade(v) => {
                self.by_out_trade_no.insert(
                    (v.app_id.clone(), v.out_trade_no.clone()),
                    v.trade_no.clone(),
                );
                d.trades.insert(v.trade_no.clone(), *v);
            }
            Record::Refund(v) => {
                d.refunds
                    .insert(refund_key(&v.trade_no, &v.out_request_no), v);
            }
            Record::Settlement(v) => {
                d.settlements.insert(v.settle_no.clone(), v);
            }
            Record::Relation(v) => {
                d.relations.insert(relation_key(&v.app_id, &v.account), v);
            }
            Record::RelationRemoved(k) => {
                d.relations.remove(&k);
            }
            Record::Freeze(v) => {
                self.freeze_by_out_order_no.insert(
                    (v.app_id.clone(), v.out_order_no.clone()),
                    v.auth_no.clone(),
                );
                d.freezes.insert(v.auth_no.clone(), *v);
            }
            Record::Agreement(v) => {
                d.agreements.insert(v.agreement_no.clone(), v);
            }
            Record::Grant(v) => {
                d.grants.insert(v.code.clone(), v);
            }
            Record::FaceToken(v) => {
                d.face_tokens.insert(v.ftoken.clone(), v);
            }
            Record::Notification(v) => {
                d.notifications.insert(v.notify_id.clone(), *v);
            }
            Record::PaymentCode(v) => {
                d.payment_codes.insert(v.code.clone(), v);
            }
            Record::Sequence(n) => d.sequence = d.sequence.max(n),
            Record::ClockOffset(ms) => d.clock_offset_ms = ms,
        }
    }

    fn record(&mut self, record: Record) {
        if let Some(j) = self.journal.as_mut() {
            let written = serde_json::to_writer(&mut *j, &record)
                .and_then(|_| j.write_all(b"\n").map_err(serde_json::Error::io));
            if let Err(e) = written {
                tracing::error!(error = %e, "journal write failed");
            }
        }
        self.apply(record);
    }

    /// Flushes the journal to the OS; called before a request is answered.
    pub fn flush(&mut self) {
        if let Some(j) = self.journal.as_mut()
            && let Err(e) = j.flush()
        {
            tracing::error!(error = %e, "journal flush failed");
        }
    }

    /// Next value of the id counter.
    pub fn next_seq(&mut self) -> u64 {
        let n = self.data.sequence + 1;
        self.record(Record::Sequence(n));
        n
    }

    /// Sets the clock offset.
    pub fn set_clock_offset(&mut self, ms: i64) {
        self.record(Record::ClockOffset(ms));
    }

    /// Saves an app.
    pub fn put_app(&mut self, v: App) {
        self.record(Record::App(v));
    }
    /// Saves a buyer.
    pub fn put_buyer(&mut self, v: Buyer) {
        self.record(Record::Buyer(v));
    }
    /// Saves a trade.
    pub fn put_trade(&mut self, v: Trade) {
        self.record(Record::Trade(Box::new(v)));
    }
    /// Saves a refund.
    pub fn put_refund(&mut self, v: Refund) {
        self.record(Record::Refund(v));
    }
    /// Saves a settlement.
    pub fn put_settlement(&mut self, v: Settlement) {
        self.record(Record::Settlement(v));
    }
    /// Saves a royalty relation.
    pub fn put_relation(&mut self, v: RoyaltyRelation) {
        self.record(Record::Relation(v));
    }
    /// Removes a royalty relation.
    pub fn remove_relation(&mut self, app_id: &str, account: &str) {
        self.record(Record::RelationRemoved(relation_key(app_id, account)));
    }
    /// Saves a freeze.
    pub fn put_freeze(&mut self, v: Freeze) {
        self.record(Record::Freeze(Box::new(v)));
    }
    /// Saves an agreement.
    pub fn put_agreement(&mut self, v: Agreement) {
        self.record(Record::Agreement(v));
    }
    /// Saves an OAuth grant.
    pub fn put_grant(&mut self, v: OAuthGrant) {
        self.record(Record::Grant(v));
    }
    /// Saves a face token.
    pub fn put_face_token(&mut self, v: FaceToken) {
        self.record(Record::FaceToken(v));
    }
    /// Saves a notification.
    pub fn put_notification(&mut self, v: Notification) {
        self.record(Record::Notification(Box::new(v)));
    }

    /// Saves a payment code.
    pub fn put_payment_code(&mut self, v: PaymentCode) {
        self.record(Record::PaymentCode(v));
    }

    /// The trade of an app by `out_trade_no`.
    pub fn trade_by_out_no(&self, app_id: &str, out_trade_no: &str) -> Option<&Trade> {
        let no = self
            .by_out_trade_no
            .get(&(app_id.to_owned(), out_trade_no.to_owned()))?;
        self.data.trades.get(no)
    }

    /// Finds a trade of an app by `trade_no` (wins) or `out_trade_no`.
    pub fn find_trade(
        &self,
        app_id: &str,
        trade_no: Option<&str>,
        out_trade_no: Option<&str>,
    ) -> Option<&Trade> {
        match (
            trade_no.filter(|s| !s.is_empty()),
            out_trade_no.filter(|s| !s.is_empty()),
        ) {
            (Some(t), _) => self.data.trades.get(t).filter(|tr| tr.app_id == app_id),
            (None, Some(o)) => self.trade_by_out_no(app_id, o),
            (None, None) => None,
        }
    }

    /// The freeze of an app by `out_order_no`.
    pub fn freeze_by_out_order_no(&self, app_id: &str, out_order_no: &str) -> Option<&Freeze> {
        let no = self
            .freeze_by_out_order_no
            .get(&(app_id.to_owned(), out_order_no.to_owned()))?;
        self.data.freezes.get(no)
    }

    /// Refunds of a trade, oldest first.
    pub fn refunds_of(&self, trade_no: &str) -> Vec<&Refund> {
        let prefix = format!("{trade_no}|");
        let mut v: Vec<&Refund> = self
            .data
            .refunds
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, r)| r)
            .collect();
        v.sort_by_key(|r| r.refunded_at);
        v
    }
}

/// Key of a refund.
pub fn refund_key(trade_no: &str, out_request_no: &str) -> String {
    format!("{trade_no}|{out_request_no}")
}

/// Key of a relation.
pub fn relation_key(app_id: &str, account: &str) -> String {
    format!("{app_id}|{account}")
}
