//! The bill files themselves (spec §3.9): which rows a period holds, and their CSV text.
//!
//! Layout follows the §3.9 sample: GBK, CRLF lines, comma-separated, no quoting, a TAB after
//! the id and text cells where Alipay puts one, `#` header and footer lines. Choices where the
//! spec is silent are listed in `docs/sandbox.md` (service fee, net receipt, store name).

use std::collections::BTreeMap;

use alipay::money::format_signed_fen;
use serde_json::Value;
use time::{OffsetDateTime, PrimitiveDateTime};

use super::Difference;
use super::zipfile::{ZipError, ZipWriter};
use crate::api::fields::mask_logon;
use crate::clock::{fmt_ms, to_datetime};
use crate::model::{App, Millis, Trade};
use crate::store::Store;

/// The time span a bill covers, in Beijing time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// `20190916` (daily) or `201909` (monthly): the date part of file names.
    pub label: String,
    /// First instant, inclusive.
    pub start: OffsetDateTime,
    /// End, exclusive.
    pub end: OffsetDateTime,
}

impl Period {
    fn contains(&self, ms: Millis) -> bool {
        let at = to_datetime(ms);
        self.start <= at && at < self.end
    }
}

/// Which row of the detail file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    /// `交易`.
    Payment,
    /// `退款`.
    Refund,
}

/// One detail line, amounts in signed fen (refunds negative).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// 支付宝交易号.
    pub trade_no: String,
    /// 商户订单号.
    pub out_trade_no: String,
    /// 业务类型.
    pub kind: RowKind,
    /// 商品名称.
    pub subject: String,
    /// 创建时间 (of the trade).
    pub created: Millis,
    /// 完成时间 (payment or refund).
    pub finished: Millis,
    /// 门店编号 (also shown as 门店名称: the sandbox has no store names).
    pub store_id: Option<String>,
    /// 操作员.
    pub operator_id: Option<String>,
    /// 终端号.
    pub terminal_id: Option<String>,
    /// 对方账户, masked.
    pub buyer: String,
    /// 订单金额 = 商家实收 (the sandbox has no discounts).
    pub amount_fen: i64,
    /// 退款批次号/请求号.
    pub out_request_no: Option<String>,
    /// 服务费.
    pub fee_fen: i64,
    /// 分润.
    pub royalty_fen: i64,
    /// 备注 (the trade's `body`).
    pub remark: String,
}

/// The service fee of an amount: 0.6%, rounded half up to the fen, with the amount's sign.
pub fn service_fee(amount_fen: i64) -> i64 {
    let abs = amount_fen.unsigned_abs();
    let fee = i64::try_from((abs * 6 + 500) / 1000).unwrap_or(i64::MAX);
    if amount_fen < 0 { -fee } else { fee }
}

/// The real-time split of a trade's `royalty_info`, fen (checked at creation already).
fn royalty_fen(info: Option<&Value>, total_fen: i64) -> i64 {
    let Some(details) = info
        .and_then(|i| i.get("royalty_detail_infos"))
        .and_then(Value::as_array)
    else {
        return 0;
    };
    details
        .iter()
        .map(|d| {
            if let Some(a) = d.get("amount").and_then(Value::as_str) {
                alipay::money::parse_signed_fen(a).unwrap_or(0)
            } else {
                let pct = d
                    .get("amount_percentage")
                    .and_then(|p| {
                        p.as_i64()
                            .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
                    })
                    .unwrap_or(0);
                total_fen * pct / 100
            }
        })
        .sum()
}

/// `*家1234(buy***@sandbox.com)`, as the sample's `*津水(602***@qq.com)`.
fn masked_buyer(store: &Store, trade: &Trade) -> String {
    let Some(b) = trade
        .buyer_user_id
        .as_ref()
        .and_then(|id| store.data.buyers.get(id))
    else {
        return String::new();
    };
    let rest: String = b.nick_name.chars().skip(1).collect();
    format!("*{rest}({})", mask_logon(&b.logon_id))
}

/// Alipay does not quote cells: commas and line breaks inside text would break the row.
fn cell_text(s: &str) -> String {
    s.replace(',', "，").replace(['\r', '\n'], " ")
}

/// The detail rows of an app's trades in `period`, with the injected differences applied.
pub fn trade_rows(store: &Store, app: &App, period: &Period, diffs: &[Difference]) -> Vec<Row> {
    let mut rows = Vec::new();
    for t in store
        .data
        .trades
        .values()
        .filter(|t| t.app_id == app.app_id)
    {
        let base = |kind, finished, amount_fen, out_request_no, royalty_fen| Row {
            trade_no: t.trade_no.clone(),
            out_trade_no: t.out_trade_no.clone(),
            kind,
            subject: t.subject.clone(),
            created: t.created_at,
            finished,
            store_id: t.store_id.clone(),
            operator_id: t.operator_id.clone(),
            terminal_id: t.terminal_id.clone(),
            buyer: masked_buyer(store, t),
            amount_fen,
            out_request_no,
            fee_fen: service_fee(amount_fen),
            royalty_fen,
            remark: t.body.clone().unwrap_or_default(),
        };
        if let Some(paid) = t.paid_at.filter(|p| period.contains(*p)) {
            let royalty = royalty_fen(t.royalty_info.as_ref(), t.total_fen);
            rows.push(base(RowKind::Payment, paid, t.total_fen, None, royalty));
        }
        for r in store.refunds_of(&t.trade_no) {
            if period.contains(r.refunded_at) {
                rows.push(base(
                    RowKind::Refund,
                    r.refunded_at,
                    -r.amount_fen,
                    Some(r.out_request_no.clone()),
                    0,
                ));
            }
        }
    }
    for d in diffs {
        d.apply(&mut rows, period);
    }
    rows.sort_by(|a, b| (a.finished, &a.trade_no).cmp(&(b.finished, &b.trade_no)));
    rows
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("")
}

fn detail_line(r: &Row) -> String {
    let amount = format_signed_fen(r.amount_fen);
    let kind = match r.kind {
        RowKind::Payment => "交易",
        RowKind::Refund => "退款",
    };
    // Columns of §3.9; `\t` where the sample carries one.
    format!(
        "{}\t,{}\t,{kind}\t,{},{},{},{}\t,{}\t,{}\t,{}\t,{}\t,{amount},{amount},0.00,0.00,0.00,0.00,0.00,,0.00\t,0.00,{}\t,{},{},{}",
        r.trade_no,
        r.out_trade_no,
        cell_text(&r.subject),
        fmt_ms(r.created),
        fmt_ms(r.finished),
        opt(&r.store_id),
        opt(&r.store_id),
        opt(&r.operator_id),
        opt(&r.terminal_id),
        r.buyer,
        opt(&r.out_request_no),
        format_signed_fen(r.fee_fen),
        format_signed_fen(r.royalty_fen),
        r.remark.replace(['\r', '\n'], " "),
    )
}

/// `2019年09月16日 00:00:00` in Beijing time.
fn chinese_time(at: OffsetDateTime) -> String {
    let b = at.to_offset(alipay::time::BEIJING);
    format!(
        "{}年{:02}月{:02}日 {:02}:{:02}:{:02}",
        b.year(),
        u8::from(b.month()),
        b.day(),
        b.hour(),
        b.minute(),
        b.second()
    )
}

const DETAIL_COLUMNS: &str = "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注";
const SUMMARY_COLUMNS: &str = "门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）,支付宝优惠（元）,商家优惠（元）,卡消费金额（元）,服务费（元）,分润（元）,实收净额（元）";

fn header(title: &str, account: &str, period: &Period, list: &str) -> Vec<String> {
    vec![
        format!("#{title}"),
        format!("#账号：[{account}]"),
        format!(
            "#起始日期：[{}]   终止日期：[{}]",
            chinese_time(period.start),
            chinese_time(period.end)
        ),
        format!(
            "#-----------------------------------------{list}----------------------------------------"
        ),
    ]
}

/// The detail file's text.
pub fn detail_csv(account: &str, period: &Period, rows: &[Row], exported: Millis) -> String {
    let mut lines = header("支付宝业务明细查询", account, period, "业务明细列表");
    lines.push(DETAIL_COLUMNS.to_owned());
    lines.extend(rows.iter().map(detail_line));
    let sum = |kind| -> (usize, i64) {
        let it = rows.iter().filter(|r| r.kind == kind);
        (it.clone().count(), it.map(|r| r.amount_fen).sum())
    };
    let (pays, paid) = sum(RowKind::Payment);
    let (refunds, refunded) = sum(RowKind::Refund);
    lines.push("#-----------------------------------------业务明细列表结束------------------------------------".into());
    lines.push(format!(
        "#交易合计：{pays}笔，商家实收共{}元，商家优惠共0.00元",
        format_signed_fen(paid)
    ));
    lines.push(format!(
        "#退款合计：{refunds}笔，商家实收退款共{}元，商家优惠退款共0.00元",
        format_signed_fen(refunded)
    ));
    lines.push(format!(
        "#导出时间：[{}]",
        chinese_time(to_datetime(exported))
    ));
    lines.join("\r\n") + "\r\n"
}

#[derive(Default)]
struct StoreTotals {
    payments: u64,
    refunds: u64,
    amount: i64,
    fee: i64,
    royalty: i64,
}

impl StoreTotals {
    fn add(&mut self, r: &Row) {
        match r.kind {
            RowKind::Payment => self.payments += 1,
            RowKind::Refund => self.refunds += 1,
        }
        self.amount += r.amount_fen;
        self.fee += r.fee_fen;
        self.royalty += r.royalty_fen;
    }

    fn line(&self, store_id: &str, store_name: &str) -> String {
        let f = format_signed_fen;
        // 实收净额 = 商家实收 − 服务费 − 分润.
        format!(
            "{store_id}\t,{store_name}\t,{},{},{},{},0.00,0.00,0.00,{},{},{}",
            self.payments,
            self.refunds,
            f(self.amount),
            f(self.amount),
            f(self.fee),
            f(self.royalty),
            f(self.amount - self.fee - self.royalty)
        )
    }
}

/// The summary file's text: one line per store, then `合计`.
pub fn summary_csv(account: &str, period: &Period, rows: &[Row], exported: Millis) -> String {
    let mut lines = header("支付宝业务汇总查询", account, period, "业务汇总列表");
    lines.push(SUMMARY_COLUMNS.to_owned());
    let mut by_store: BTreeMap<String, StoreTotals> = BTreeMap::new();
    let mut all = StoreTotals::default();
    for r in rows {
        by_store
            .entry(opt(&r.store_id).to_owned())
            .or_default()
            .add(r);
        all.add(r);
    }
    for (store, totals) in &by_store {
        lines.push(totals.line(store, store));
    }
    lines.push(all.line("合计", ""));
    lines.push("#-----------------------------------------业务汇总列表结束-----------------------------------".into());
    lines.push(format!(
        "#导出时间：[{}]",
        chinese_time(to_datetime(exported))
    ));
    lines.join("\r\n") + "\r\n"
}

/// The fund-movement ledger (`signcustomer`, 账务明细): payments in, refunds and service fees
/// out. Its layout is not in the spec; the columns follow Alipay's 账务明细 export.
pub fn ledger_csv(
    account: &str,
    period: &Period,
    rows: &[Row],
    exported: Millis,
) -> (String, String) {
    let mut lines = header("支付宝账务明细查询", account, period, "账务明细列表");
    lines.push("账务流水号,业务流水号,商户订单号,商品名称,发生时间,对方账号,收入金额（+元）,支出金额（-元）,账户余额（元）,交易渠道,业务类型,备注".into());
    let (mut balance, mut income, mut expense, mut n_in, mut n_out) =
        (0i64, 0i64, 0i64, 0u64, 0u64);
    let mut seq = 0u64;
    let mut entry = |lines: &mut Vec<String>, r: &Row, amount: i64, kind: &str| {
        seq += 1;
        balance += amount;
        let (inc, exp) = if amount >= 0 {
            income += amount;
            n_in += 1;
            (format_signed_fen(amount), String::new())
        } else {
            expense += amount;
            n_out += 1;
            (String::new(), format_signed_fen(amount))
        };
        lines.push(format!(
            "{}{:08}\t,{}\t,{}\t,{},{},{}\t,{inc},{exp},{},支付宝\t,{kind}\t,{}",
            period.label,
            seq,
            r.trade_no,
            r.out_trade_no,
            cell_text(&r.subject),
            fmt_ms(r.finished),
            r.buyer,
            format_signed_fen(balance),
            r.remark.replace(['\r', '\n'], " "),
        ));
    };
    for r in rows {
        match r.kind {
            RowKind::Payment => entry(&mut lines, r, r.amount_fen, "在线支付"),
            RowKind::Refund => entry(&mut lines, r, r.amount_fen, "交易退款"),
        }
        if r.fee_fen != 0 {
            entry(&mut lines, r, -r.fee_fen, "收费");
        }
    }
    lines.push("#-----------------------------------------账务明细列表结束------------------------------------".into());
    lines.push(format!(
        "#收入合计：{n_in}笔，共{}元",
        format_signed_fen(income)
    ));
    lines.push(format!(
        "#支出合计：{n_out}笔，共{}元",
        format_signed_fen(expense)
    ));
    lines.push(format!(
        "#导出时间：[{}]",
        chinese_time(to_datetime(exported))
    ));
    let detail = lines.join("\r\n") + "\r\n";
    let mut summary = header("支付宝账务汇总查询", account, period, "账务汇总列表");
    summary.push("收入笔数,收入金额（+元）,支出笔数,支出金额（-元）,账户余额变化（元）".into());
    summary.push(format!(
        "{n_in},{},{n_out},{},{}",
        format_signed_fen(income),
        format_signed_fen(expense),
        format_signed_fen(income + expense)
    ));
    summary.push(format!(
        "#导出时间：[{}]",
        chinese_time(to_datetime(exported))
    ));
    (detail, summary.join("\r\n") + "\r\n")
}

/// Which bill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillKind {
    /// `trade`: 业务明细.
    Trade,
    /// `signcustomer`: 账务明细.
    SignCustomer,
}

/// A rendered bill: the zip and whether it has any row.
#[derive(Debug, Clone)]
pub struct BillZip {
    /// `<account>_<label>.csv.zip`.
    pub file_name: String,
    /// The archive.
    pub bytes: Vec<u8>,
    /// True when the period had no business.
    pub empty: bool,
}

/// Renders one bill of `app` for `period`.
pub fn render(
    store: &Store,
    app: &App,
    kind: BillKind,
    period: &Period,
    diffs: &[Difference],
    exported: Millis,
) -> Result<BillZip, ZipError> {
    // The bill account: 16-digit PID + `0156` (§3.9).
    let account = format!("{}0156", app.seller_pid);
    let rows = trade_rows(store, app, period, diffs);
    let (detail_name, summary_name, detail, summary) = match kind {
        BillKind::Trade => (
            "业务明细",
            "业务明细(汇总)",
            detail_csv(&account, period, &rows, exported),
            summary_csv(&account, period, &rows, exported),
        ),
        BillKind::SignCustomer => {
            let (d, s) = ledger_csv(&account, period, &rows, exported);
            ("账务明细", "账务明细(汇总)", d, s)
        }
    };
    let gbk = |s: &str| encoding_rs::GBK.encode(s).0.into_owned();
    let exported_at = to_datetime(exported).to_offset(alipay::time::BEIJING);
    let modified = PrimitiveDateTime::new(exported_at.date(), exported_at.time());
    let mut zip = ZipWriter::new();
    let prefix = format!("{account}_{}_", period.label);
    zip.add(
        &gbk(&format!("{prefix}{detail_name}.csv")),
        &gbk(&detail),
        modified,
    )?;
    zip.add(
        &gbk(&format!("{prefix}{summary_name}.csv")),
        &gbk(&summary),
        modified,
    )?;
    Ok(BillZip {
        file_name: format!("{account}_{}.csv.zip", period.label),
        bytes: zip.finish()?,
        empty: rows.is_empty(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_fee_is_six_per_mille_rounded_half_up_with_the_amount_sign() {
        assert_eq!(service_fee(100), 1); // 0.6 fen → 1
        assert_eq!(service_fee(83), 0); // 0.498 → 0
        assert_eq!(service_fee(84), 1); // 0.504 → 1
        assert_eq!(service_fee(1000), 6);
        assert_eq!(service_fee(-250), -2); // 1.5 → 2
        assert_eq!(service_fee(0), 0);
    }

    #[test]
    fn times_print_the_chinese_way_in_beijing_time() {
        let t = alipay::time::parse_timestamp("2019-09-16 00:00:00").unwrap();
        assert_eq!(chinese_time(t), "2019年09月16日 00:00:00");
    }
}
