//! The QR sale (当面付扫码): a machine asks to sell slots, the server reserves the stock,
//! creates the trade with `alipay.trade.precreate` (terminal id, the operator's `seller_id`,
//! a short timeout) and hands back the QR code to show. The steps shared with the H5 sale
//! live in [`super::checkout`].
//!
//! A machine's `buy_request` is taken in the transaction that records it
//! ([`take_request_in`]): the answer to a repeated request, the refusal, or the order with its
//! stock reserved and a claimed `precreate` job, which calls Alipay after commit
//! ([`run_precreate`]) and records the `show_qr` answer with Alipay's.

use alipay::api::trade::Precreate;
use alipay::{Amount, CallOptions, Outcome};

use super::checkout::{self, MachineFacts, Priced, Reservation, Reserved, SaleTerms};
pub use super::checkout::{SaleError, SaleItem};
use crate::device::DeviceChannel;
use crate::device::ledger::Recorded;
use crate::device::protocol::{Command, Line};
use crate::jobs::Next;
use crate::services::Services;
use crate::store::jobs::{self, Job};
use crate::store::orders::{self, OrderError};
use crate::store::{Conn, Executor, Later};

/// What a machine asks to sell.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaleRequest {
    /// The machine's code.
    pub machine: String,
    /// Slots and quantities.
    pub items: Vec<SaleItem>,
}

/// A sale waiting for the buyer to pay.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SaleStarted {
    /// Order id.
    pub order_id: i64,
    /// Merchant trade number.
    pub out_trade_no: String,
    /// The code to show.
    pub qr_code: String,
    /// Amount in fen.
    pub amount_fen: i64,
    /// When the offer ends.
    pub expires_at: i64,
}

/// A reserved order as Alipay is asked to create it: everything `precreate` sends, so the
/// job that calls it reads nothing back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Offer {
    /// Order id.
    pub order_id: i64,
    /// Merchant trade number.
    pub out_trade_no: String,
    /// Amount in fen.
    pub amount_fen: i64,
    /// The trade subject.
    pub subject: String,
    /// The machine's code.
    pub machine: String,
    /// Alipay `terminal_id`.
    pub terminal_id: String,
    /// The operator's PID (`seller_id`).
    pub seller_id: String,
    /// Minutes the buyer has to pay.
    pub pay_timeout_minutes: u32,
    /// When the offer ends.
    pub expires_at: i64,
}

impl Offer {
    fn new(
        machine: &MachineFacts,
        priced: &Priced,
        order: Reserved,
        pay_timeout_minutes: u32,
    ) -> Offer {
        Offer {
            order_id: order.order_id,
            out_trade_no: order.out_trade_no,
            amount_fen: priced.total.0,
            subject: checkout::subject(&priced.names),
            machine: machine.code.clone(),
            terminal_id: machine.terminal_id.clone(),
            seller_id: machine.seller_pid.clone(),
            pay_timeout_minutes,
            expires_at: order.expires_at,
        }
    }

    fn started(&self, qr_code: String) -> SaleStarted {
        SaleStarted {
            order_id: self.order_id,
            out_trade_no: self.out_trade_no.clone(),
            qr_code,
            amount_fen: self.amount_fen,
            expires_at: self.expires_at,
        }
    }
}

/// Starts a QR sale that no machine waits to be answered on (the caller shows the code).
pub async fn start_qr_sale(
    svc: &Services,
    req: &SaleRequest,
    now: i64,
) -> Result<SaleStarted, SaleError> {
    checkout::check_items(&req.items)?;
    let machine = checkout::machine(svc, &req.machine).await?;
    let priced = checkout::price(svc, &machine, &req.items).await?;
    let order = checkout::reserve(svc, &machine, &priced, "qr", None, now).await?;
    // The order and its reservation are committed before Alipay is called.
    let offer = Offer::new(&machine, &priced, order, svc.sale_terms.pay_timeout_minutes);
    let qr_code = precreate(svc, &offer, now).await?;
    checkout::created(
        svc,
        offer.order_id,
        &offer.out_trade_no,
        Some(&qr_code),
        None,
        ("precreated", "QR code issued"),
        now,
    )
    .await?;
    Ok(offer.started(qr_code))
}

/// What a machine's buy request led to in the transaction that records it.
#[derive(Debug)]
pub enum Taken {
    /// The order is written with its stock reserved; run this claimed job after commit.
    Precreate(jobs::Claimed),
    /// The machine is answered (the code of its earlier request again, or a refusal):
    /// deliver this after commit.
    Answered(Recorded),
    /// The request came again while its order's trade is being created: the earlier copy's
    /// answer (the code, or why there is none) answers this one too, so nothing is sent now.
    BeingCreated,
}

/// The `buy_request` the ledger is recording, as a sale sees it.
#[derive(Debug, Clone, Copy)]
pub struct BuyRequest<'a> {
    /// The machine's code.
    pub machine: &'a str,
    /// The event's `msg_id`: one answer per event.
    pub msg_id: &'a str,
    /// The machine's request id: one order per request.
    pub request_id: &'a str,
    /// What it asks for.
    pub items: &'a [Line],
}

impl BuyRequest<'_> {
    /// The answer's idempotency key: a retry answers once, while the machine asking again (a
    /// new event, the same request id) is shown the same code again.
    fn answer_key(&self) -> String {
        format!("answer:{}", self.msg_id)
    }

    fn sale_items(&self) -> Vec<SaleItem> {
        self.items
            .iter()
            .map(|l| SaleItem {
                slot: l.slot.clone(),
                qty: l.qty,
            })
            .collect()
    }
}

/// What taking a buy request reads, queued with [`read_ahead`]: none depends on another,
/// so on PostgreSQL they go out together with the statement that records the event.
#[derive(Debug)]
pub struct RequestReads {
    /// The order an earlier copy of the request made.
    earlier: Later,
    /// The machine ([`checkout::machine_query`]).
    machine: Later,
    /// The slots asked for ([`checkout::slots_query`]); none when the items are malformed.
    slots: Option<Later>,
}

/// Queues the reads [`take_request_in`] needs in `conn`; they run with its next statement.
pub async fn read_ahead(
    conn: &mut Conn,
    request: &BuyRequest<'_>,
) -> Result<RequestReads, crate::store::Error> {
    let earlier = earlier_request_query(request.machine, request.request_id)
        .fetch_later(&mut *conn)
        .await?;
    let machine = checkout::machine_query(request.machine)
        .fetch_later(&mut *conn)
        .await?;
    let items = request.sale_items();
    let slots = match checkout::check_items(&items) {
        Ok(()) => {
            let sql = checkout::slots_sql(items.len());
            let query = checkout::slots_query(&sql, request.machine, &items);
            Some(query.fetch_later(&mut *conn).await?)
        }
        Err(_) => None, // refused by `take_request_in`, after what the machine says
    };
    Ok(RequestReads {
        earlier,
        machine,
        slots,
    })
}

/// Takes a machine's buy request in `conn`, the transaction that records it. The request id
/// makes it idempotent: asking again answers with the same order and code while it can still
/// be paid, and never writes a second order. A refusal (offline, faulty, a slot that cannot
/// sell …) is recorded as the `sale_refused` answer and writes nothing else. `Err` only when
/// the store fails.
/// `reads` are [`read_ahead`]'s, queued in `conn` before the event was recorded.
pub async fn take_request_in(
    conn: &mut Conn,
    device: &DeviceChannel,
    terms: SaleTerms,
    request: BuyRequest<'_>,
    reads: RequestReads,
    now: i64,
) -> Result<Taken, SaleError> {
    // Sends the reads unless the caller's statement after them did (the ledger's event row).
    conn.flush().await?;
    if let Some(earlier) = earlier_request(reads.earlier.first()?, request.request_id)? {
        return repeated(conn, device, request, earlier, now).await;
    }
    let items = request.sale_items();
    let opened = async {
        let machine = checkout::machine_from(reads.machine.first()?, request.machine)?;
        checkout::check_items(&items)?;
        let slots = reads.slots.ok_or(SaleError::BadItems)?.rows()?;
        let priced = checkout::priced_from(&slots, &items)?;
        let sale = Reservation {
            terms,
            machine: &machine,
            priced: &priced,
            channel: "qr",
            request_id: Some(request.request_id),
        };
        let order = checkout::reserve_in(&mut *conn, &sale, None, now).await?;
        Ok::<Offer, SaleError>(Offer::new(
            &machine,
            &priced,
            order,
            terms.pay_timeout_minutes,
        ))
    }
    .await;
    let offer = match opened {
        Ok(offer) => offer,
        Err(e @ SaleError::Order(OrderError::Store(_) | OrderError::Concurrent(_))) => {
            return Err(e);
        }
        Err(SaleError::Order(OrderError::DuplicateRequest)) => {
            // A concurrent copy of the same request (another instance) won the race.
            let earlier = existing_request(&mut *conn, request.machine, request.request_id)
                .await?
                .ok_or(SaleError::Order(OrderError::DuplicateRequest))?;
            return repeated(conn, device, request, earlier, now).await;
        }
        Err(refused @ SaleError::Slot(..)) => {
            // A concurrent copy may have taken the last unit: on PostgreSQL the reservation
            // waits for its commit and then finds the slot empty. Its order, now visible to
            // this statement, is the answer; the refusal only when there is none.
            return match existing_request(&mut *conn, request.machine, request.request_id).await? {
                Some(earlier) => repeated(conn, device, request, earlier, now).await,
                None => answer(conn, device, request, Err(refused), now).await,
            };
        }
        Err(refused) => return answer(conn, device, request, Err(refused), now).await,
    };
    let job = PrecreateJob {
        offer,
        request_id: request.request_id.to_owned(),
        answer_key: request.answer_key(),
    };
    let payload = serde_json::to_string(&job).map_err(|e| {
        SaleError::from(crate::store::Error::Protocol(format!(
            "encoding a job: {e}"
        )))
    })?;
    let claimed = jobs::enqueue_claimed(
        &mut *conn,
        PRECREATE_JOB,
        &format!("precreate:{}", job.offer.order_id),
        &payload,
        now,
        crate::jobs::LEASE_MS,
    )
    .await?;
    Ok(Taken::Precreate(claimed))
}

/// Takes a request whose earlier copy made an order: its code again, nothing while the
/// earlier copy's answer is still to come, or why it can no longer be sold.
async fn repeated(
    conn: &mut Conn,
    device: &DeviceChannel,
    request: BuyRequest<'_>,
    earlier: Earlier,
    now: i64,
) -> Result<Taken, SaleError> {
    match earlier {
        Earlier::Started(started) => answer(conn, device, request, Ok(started), now).await,
        Earlier::Handled(refused) => answer(conn, device, request, Err(refused), now).await,
        Earlier::BeingCreated { order_id } => {
            tracing::info!(
                machine = request.machine,
                request.id = request.request_id,
                order_id,
                "request sent again while its trade is being created"
            );
            let detail = format!(
                "request {} sent again (message {}) while its code was being created; the first answer serves both",
                request.request_id, request.msg_id
            );
            orders::add_event(
                &mut *conn,
                order_id,
                now,
                "device",
                "request_repeated",
                &detail,
            )
            .await?;
            Ok(Taken::BeingCreated)
        }
    }
}

/// The answer to a request: its code, or why it cannot be sold.
async fn answer(
    conn: &mut Conn,
    device: &DeviceChannel,
    request: BuyRequest<'_>,
    outcome: Result<SaleStarted, SaleError>,
    now: i64,
) -> Result<Taken, SaleError> {
    let key = request.answer_key();
    let recorded = match outcome {
        Ok(started) => {
            let answer = Answer {
                request_id: request.request_id,
                key: &key,
                job: None,
            };
            record_show_qr(device, conn, request.machine, &started, answer, now).await?
        }
        Err(refused) => {
            tracing::info!(machine = request.machine, request.id = request.request_id, reason = %refused, "sale refused");
            let command = Command::SaleRefused {
                request_id: request.request_id.to_owned(),
                reason: refused.to_string(),
            };
            device
                .record(conn, request.machine, &command, Some(&key))
                .await?
        }
    };
    Ok(Taken::Answered(recorded))
}

/// The job kind that creates a machine's trade.
pub const PRECREATE_JOB: &str = "precreate";

/// A `precreate` job's payload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PrecreateJob {
    /// The order, as Alipay is asked to create it.
    pub offer: Offer,
    /// The machine's request id.
    pub request_id: String,
    /// The key the machine's answer is recorded under.
    pub answer_key: String,
}

/// Runs a `precreate` job: creates the trade, then records Alipay's answer and the machine's
/// `show_qr` in one transaction that also ends the job; Alipay refusing or not answering
/// closes (or resolves) the order and answers the machine with `sale_refused`. Run again
/// after a crash, it first looks at what an earlier run recorded.
pub async fn run_precreate(svc: &Services, job: &Job, p: &PrecreateJob) -> anyhow::Result<Next> {
    let offer = &p.offer;
    let answer = Answer {
        request_id: &p.request_id,
        key: &p.answer_key,
        job: Some(job),
    };
    let now = svc.now();
    // A first run was queued by the transaction that wrote the order: nothing to look at.
    // A run after a crash may find Alipay's answer already recorded. (This job never asks
    // to run again with `Next::At`, which would start its count of attempts again.)
    let mut recorded_code = None;
    if job.attempts > 1 {
        match orders::by_id(&svc.db, offer.order_id).await? {
            Some(o) if o.state == crate::domain::order::OrderState::AwaitingPayment => {
                recorded_code = o.qr_code;
            }
            _ => {
                let handled =
                    SaleError::RequestHandled(p.request_id.clone(), offer.out_trade_no.clone());
                return refuse(svc, p, &handled).await;
            }
        }
    }
    let fresh = recorded_code.is_none();
    let qr_code = match recorded_code {
        Some(qr_code) => qr_code,
        None => match precreate(svc, offer, now).await {
            Ok(qr_code) => qr_code,
            // The store failing is not the buyer's problem: try again.
            Err(SaleError::Order(e @ (OrderError::Store(_) | OrderError::Concurrent(_)))) => {
                return Err(e.into());
            }
            Err(refused) => return refuse(svc, p, &refused).await,
        },
    };
    let started = offer.started(qr_code);
    let mut tx = svc.db.begin().await?;
    // The code is shown only if the order still waits for it: its resolver may have given the
    // answer up as lost meanwhile (this job kept failing) and be cancelling the trade. The
    // check goes out with the `show_qr` command's row, which is dropped with the transaction
    // when the order no longer waits.
    let queued = if fresh {
        checkout::queue_created(
            &mut tx,
            started.order_id,
            Some(&started.qr_code),
            None,
            ("precreated", "QR code issued"),
            now,
        )
        .await
    } else {
        orders::set_payment_refs_later(&mut *tx, started.order_id, Some(&started.qr_code), None)
            .await
            .map_err(SaleError::from)
    };
    let recorded = match queued {
        Ok(queued) => record_show_qr(&svc.device, &mut tx, &offer.machine, &started, answer, now)
            .await
            .and_then(|recorded| {
                checkout::created_applied(queued, &started.out_trade_no).map(|()| recorded)
            }),
        Err(e) => Err(e),
    };
    let recorded = match recorded {
        Ok(recorded) => recorded,
        Err(e) => {
            // Rolled back before the refusal is recorded under the same key, which would
            // otherwise wait on the `show_qr` row sent ahead until the rollback landed.
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(error = %rollback, "could not roll back an answer that came too late");
            }
            return match e {
                SaleError::AnsweredTooLate(_) => refuse(svc, p, &e).await,
                other => Err(other.into()),
            };
        }
    };
    tx.commit().await?;
    svc.device.deliver(&recorded).await;
    Ok(Next::Completed)
}

async fn refuse(svc: &Services, p: &PrecreateJob, why: &SaleError) -> anyhow::Result<Next> {
    tracing::info!(machine = %p.offer.machine, request.id = %p.request_id, reason = %why, "sale refused");
    let command = Command::SaleRefused {
        request_id: p.request_id.clone(),
        reason: why.to_string(),
    };
    svc.device
        .send_once(&p.offer.machine, command, &p.answer_key)
        .await?;
    Ok(Next::Done)
}

/// Whole minutes from `now` until `expires_at`, rounded up, at least 1 (Alipay's unit).
fn qr_minutes_left(expires_at: i64, now: i64) -> i64 {
    (((expires_at - now).max(0) + 59_999) / 60_000).max(1)
}

/// Asks Alipay to create the offer's trade; answers its QR code. A refusal closes the order
/// and an unknown answer hands it to its resolver, both recorded before the error returns.
async fn precreate(svc: &Services, offer: &Offer, now: i64) -> Result<String, SaleError> {
    let amount = Amount::from_fen(offer.amount_fen).map_err(|_| SaleError::BadItems)?;
    let precreate = Precreate::new(offer.out_trade_no.clone(), amount, offer.subject.clone())
        .terminal_id(offer.terminal_id.clone())
        .seller_id(offer.seller_id.clone())
        .timeout_express(format!("{}m", offer.pay_timeout_minutes))
        // `timeout_express` counts from the scan; the code itself would stay payable for two
        // hours, long after this order has closed and the machine moved on. It dies with the
        // order: the minutes the order has left (a precreate retried late has fewer).
        .qr_code_timeout_express(format!("{}m", qr_minutes_left(offer.expires_at, now)));
    match svc
        .alipay
        .execute(&precreate, &CallOptions::default())
        .await
    {
        Outcome::Success(precreated) => Ok(precreated.qr_code),
        Outcome::Failure(f) => {
            Err(checkout::refused(svc, offer.order_id, "precreate_refused", &f, now).await)
        }
        Outcome::Unknown(u) => Err(checkout::unknown(
            svc,
            offer.order_id,
            &offer.out_trade_no,
            "precreate_unknown",
            &u,
            now,
        )
        .await),
    }
}

/// Where a machine's sale is answered: the `show_qr` command is recorded under this key in
/// the transaction that records Alipay's answer, so a retried job answers once.
#[derive(Debug, Clone, Copy)]
struct Answer<'a> {
    /// The machine's request id.
    request_id: &'a str,
    /// The command's idempotency key.
    key: &'a str,
    /// The job that answers, deleted in the answering transaction.
    job: Option<&'a Job>,
}

/// Records the `show_qr` command answering `answer` and its timeline entry, once per key, and
/// ends the job that answers.
async fn record_show_qr(
    device: &DeviceChannel,
    conn: &mut Conn,
    machine: &str,
    started: &SaleStarted,
    answer: Answer<'_>,
    now: i64,
) -> Result<Recorded, SaleError> {
    let command = Command::ShowQr {
        order_id: started.out_trade_no.clone(),
        qr_code: started.qr_code.clone(),
        amount_fen: started.amount_fen,
        expires_at: started.expires_at,
    };
    let recorded = device
        .record(&mut *conn, machine, &command, Some(answer.key))
        .await?;
    if recorded.new.is_some() {
        let detail = format!(
            "command {} for request {}",
            recorded.command_id, answer.request_id
        );
        orders::add_event(
            &mut *conn,
            started.order_id,
            now,
            "device",
            "show_qr_sent",
            &detail,
        )
        .await?;
    }
    if let Some(job) = answer.job {
        jobs::complete_in(&mut *conn, job)
            .await
            .map_err(|e| SaleError::Order(OrderError::Store(e)))?;
    }
    Ok(recorded)
}

/// What an earlier copy of a request made of it.
#[derive(Debug)]
enum Earlier {
    /// An order waiting for payment, with its code.
    Started(SaleStarted),
    /// An order whose trade is being created: no code yet.
    BeingCreated {
        /// The order's id.
        order_id: i64,
    },
    /// An order that no longer waits for payment.
    Handled(SaleError),
}

/// The order an earlier copy of this request made, as the machine should see it.
async fn existing_request<E: Executor>(
    executor: E,
    machine: &str,
    request_id: &str,
) -> Result<Option<Earlier>, SaleError> {
    let row = earlier_request_query(machine, request_id)
        .fetch_optional(executor)
        .await?;
    earlier_request(row, request_id)
}

/// The statement that reads what [`earlier_request`] answers from.
fn earlier_request_query<'q>(machine: &'q str, request_id: &'q str) -> crate::store::Query<'q> {
    crate::store::query(
        "SELECT o.id, o.out_trade_no, o.qr_code, o.total_fen, o.expires_at, o.state FROM orders o \
         JOIN machines m ON m.id = o.machine_id WHERE m.code = $1 AND o.request_id = $2",
    )
    .bind(machine)
    .bind(request_id)
}

/// What the earlier copy of a request made of it, from the order in `row`, if there is one.
/// An order waiting for payment without a code is being created: its `precreate` is on its
/// way (or being retried), and its answer goes to the machine when it comes.
fn earlier_request(
    row: Option<crate::store::Row>,
    request_id: &str,
) -> Result<Option<Earlier>, SaleError> {
    let Some(row) = row else {
        return Ok(None);
    };
    let out_trade_no: String = row.try_get("out_trade_no")?;
    let state: String = row.try_get("state")?;
    let qr_code: Option<String> = row.try_get("qr_code")?;
    Ok(Some(match (state.as_str(), qr_code) {
        ("awaiting_payment", Some(qr_code)) => Earlier::Started(SaleStarted {
            order_id: row.try_get("id")?,
            out_trade_no,
            qr_code,
            amount_fen: row.try_get("total_fen")?,
            expires_at: row.try_get("expires_at")?,
        }),
        ("awaiting_payment", None) => Earlier::BeingCreated {
            order_id: row.try_get("id")?,
        },
        _ => Earlier::Handled(SaleError::RequestHandled(
            request_id.to_owned(),
            out_trade_no,
        )),
    }))
}

#[cfg(test)]
mod tests {
    use super::qr_minutes_left;

    #[test]
    fn a_code_lives_the_minutes_its_order_has_left_rounded_up() {
        assert_eq!(qr_minutes_left(300_000, 0), 5);
        assert_eq!(qr_minutes_left(300_000, 1), 5);
        assert_eq!(qr_minutes_left(300_000, 60_001), 4);
        assert_eq!(qr_minutes_left(300_000, 299_999), 1);
        assert_eq!(qr_minutes_left(300_000, 400_000), 1);
    }
}
