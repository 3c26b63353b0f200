//! The daily trade bill (§3.9): download the zip, find its detail and summary files, and read
//! them as typed rows, one line at a time.
//!
//! A bill can hold millions of rows, so nothing here holds it in memory: the download streams
//! into an anonymous temporary file, the zip entry is inflated as it is read, and
//! [`DetailRows`] yields one [`BillRow`] per line. Reading is blocking I/O: for big bills, move
//! the [`BillFile`] into `tokio::task::spawn_blocking`.
//!
//! Format facts relied on: entry names are GBK bytes without the zip UTF-8 flag; contents are
//! GBK, comma-separated, CRLF or LF; text and id cells carry a trailing TAB; `#` lines are
//! comments, except the `#账号：[…]` header and the `#交易合计：…` / `#退款合计：…` footer.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};

use futures_util::StreamExt as _;
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt as _;

use crate::api::bill::BillDownloadUrlQuery;
use crate::client::{Client, Config};
use crate::money::parse_signed_fen;
use crate::outcome::{Failure, Outcome, Unknown};
use crate::request::CallOptions;

/// The detail file's column header, exactly as §3.9 prints it.
pub const DETAIL_COLUMNS: [&str; 25] = [
    "支付宝交易号",
    "商户订单号",
    "业务类型",
    "商品名称",
    "创建时间",
    "完成时间",
    "门店编号",
    "门店名称",
    "操作员",
    "终端号",
    "对方账户",
    "订单金额（元）",
    "商家实收（元）",
    "支付宝红包（元）",
    "集分宝（元）",
    "支付宝优惠（元）",
    "商家优惠（元）",
    "券核销金额（元）",
    "券名称",
    "商家红包消费金额（元）",
    "卡消费金额（元）",
    "退款批次号/请求号",
    "服务费（元）",
    "分润（元）",
    "备注",
];

/// The summary file's column header, exactly as §3.9 prints it.
pub const SUMMARY_COLUMNS: [&str; 12] = [
    "门店编号",
    "门店名称",
    "交易订单总笔数",
    "退款订单总笔数",
    "订单金额（元）",
    "商家实收（元）",
    "支付宝优惠（元）",
    "商家优惠（元）",
    "卡消费金额（元）",
    "服务费（元）",
    "分润（元）",
    "实收净额（元）",
];

const DETAIL_FILE: &str = "detail file (…_业务明细.csv)";
const SUMMARY_FILE: &str = "summary file (…_业务明细(汇总).csv)";

/// Why a bill could not be fetched or read.
#[derive(Debug, thiserror::Error)]
pub enum BillError {
    /// Alipay refused the download-URL query (e.g. `BILL_NOT_EXIST`, a date too early).
    #[error("bill URL query refused: {0}")]
    Failure(Failure),
    /// The download-URL query ended without a clear answer; retry later.
    #[error("bill URL query result unknown: {0}")]
    Unknown(Unknown),
    /// The GET of the bill failed (HTTP error status, connection, broken body). The URL expires
    /// 30 seconds after issue, so retry by requesting a **new** URL (call
    /// [`Client::download_bill`] again), never by re-fetching the old one.
    #[error("bill download failed: {0} (the URL expires after 30 s: request a new one and retry)")]
    Download(String),
    /// Local file I/O failed.
    #[error("bill file I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not a readable zip.
    #[error("bill is not a readable zip: {0}")]
    NotZip(String),
    /// The zip lacks the detail or summary file.
    #[error("bill zip has no {0}")]
    MissingFile(&'static str),
    /// The column header is not the one §3.9 documents.
    #[error("{file}: unexpected columns: expected {expected:?}, found {found:?}")]
    Columns {
        /// Which file.
        file: &'static str,
        /// The documented header.
        expected: String,
        /// The header found (or a note that none was found).
        found: String,
    },
    /// A line could not be read; `line` is 1-based within the file.
    #[error("{file} line {line}: {message}")]
    Line {
        /// Which file.
        file: &'static str,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        message: String,
    },
}

impl BillError {
    /// True when calling [`Client::download_bill`] again may succeed (a failed download or an
    /// unknown URL-query result). Format errors are not retryable.
    pub fn is_retryable(&self) -> bool {
        matches!(self, BillError::Download(_) | BillError::Unknown(_))
    }
}

impl Client {
    /// Fetches a bill: asks for its URL, streams the zip into a temporary file (deleted when
    /// the returned [`BillFile`] is dropped) and opens it.
    ///
    /// On [`BillError::is_retryable`] errors call this again: each call requests a fresh URL,
    /// which Alipay expires 30 seconds after issue.
    pub async fn download_bill(
        &self,
        query: &BillDownloadUrlQuery,
        options: &CallOptions,
    ) -> Result<BillFile, BillError> {
        let answer = match self.execute(query, options).await {
            Outcome::Success(a) => a,
            Outcome::Failure(f) => return Err(BillError::Failure(f)),
            Outcome::Unknown(u) => return Err(BillError::Unknown(u)),
        };
        let file = fetch_to_temp_file(self.config(), &answer.bill_download_url).await?;
        BillFile::from_reader(file)
    }
}

/// GETs `url` into an anonymous temporary file, chunk by chunk, and rewinds it.
pub async fn fetch_to_temp_file(config: &Config, url: &str) -> Result<File, BillError> {
    // A separate HTTP client: the gateway client's whole-request timeout suits small JSON
    // answers, not a large file; here only connecting and each read are bounded.
    let http = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .read_timeout(config.timeout)
        .build()
        .map_err(|e| BillError::Download(format!("HTTP client: {e}")))?;
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| BillError::Download(e.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(BillError::Download(format!(
            "HTTP status {}",
            status.as_u16()
        )));
    }
    let mut temp = tempfile::tempfile()?;
    let mut out = tokio::fs::File::from_std(temp.try_clone()?);
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| BillError::Download(format!("reading the body: {e}")))?;
        out.write_all(&chunk).await?;
    }
    out.flush().await?;
    drop(out);
    temp.seek(SeekFrom::Start(0))?;
    Ok(temp)
}

/// An opened bill zip: knows where its detail and summary files are.
#[derive(Debug)]
pub struct BillFile<R = File> {
    archive: zip::ZipArchive<R>,
    detail: usize,
    summary: Option<usize>,
}

/// Which of the two bill files an entry name is, from its raw bytes.
fn entry_kind(raw: &[u8]) -> Option<bool> {
    let (gbk, _, _) = encoding_rs::GBK.decode(raw);
    let utf8 = std::str::from_utf8(raw).unwrap_or("");
    for name in [gbk.as_ref(), utf8] {
        if name.ends_with("_业务明细.csv") {
            return Some(true);
        }
        if name.ends_with("_业务明细(汇总).csv") || name.ends_with("_业务明细（汇总）.csv")
        {
            return Some(false);
        }
    }
    None
}

impl<R: Read + Seek> BillFile<R> {
    /// Opens a bill zip and locates its files; the detail file is required.
    pub fn from_reader(reader: R) -> Result<Self, BillError> {
        let mut archive =
            zip::ZipArchive::new(reader).map_err(|e| BillError::NotZip(e.to_string()))?;
        let (mut detail, mut summary) = (None, None);
        for i in 0..archive.len() {
            let entry = archive
                .by_index_raw(i)
                .map_err(|e| BillError::NotZip(e.to_string()))?;
            match entry_kind(entry.name_raw()) {
                Some(true) => detail = detail.or(Some(i)),
                Some(false) => summary = summary.or(Some(i)),
                None => {}
            }
        }
        let detail = detail.ok_or(BillError::MissingFile(DETAIL_FILE))?;
        Ok(BillFile {
            archive,
            detail,
            summary,
        })
    }

    /// The detail rows, streamed. The account header has been read when this returns.
    pub fn details(&mut self) -> Result<DetailRows<'_, R>, BillError> {
        let entry = self
            .archive
            .by_index(self.detail)
            .map_err(|e| BillError::NotZip(e.to_string()))?;
        let mut lines = GbkLines::new(BufReader::with_capacity(64 * 1024, entry), DETAIL_FILE);
        let account = read_preamble(&mut lines, &DETAIL_COLUMNS)?;
        Ok(DetailRows {
            lines,
            account,
            totals: BillTotals::default(),
            done: false,
        })
    }

    /// The summary file, read whole (one row per store).
    pub fn summary(&mut self) -> Result<BillSummary, BillError> {
        let index = self.summary.ok_or(BillError::MissingFile(SUMMARY_FILE))?;
        let entry = self
            .archive
            .by_index(index)
            .map_err(|e| BillError::NotZip(e.to_string()))?;
        let mut lines = GbkLines::new(BufReader::new(entry), SUMMARY_FILE);
        let account = read_preamble(&mut lines, &SUMMARY_COLUMNS)?;
        let mut rows = Vec::new();
        while let Some(next) = lines.next_line() {
            let (no, line) = next?;
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            rows.push(parse_summary_row(&line).map_err(|message| BillError::Line {
                file: SUMMARY_FILE,
                line: no,
                message,
            })?);
        }
        Ok(BillSummary { account, rows })
    }
}

/// Reads a bill file line by line: splits on `\n`, drops `\r`, decodes GBK.
struct GbkLines<B> {
    inner: std::io::Split<B>,
    line: u64,
    file: &'static str,
}

impl<B: BufRead> GbkLines<B> {
    fn new(reader: B, file: &'static str) -> Self {
        GbkLines {
            inner: reader.split(b'\n'),
            line: 0,
            file,
        }
    }

    fn next_line(&mut self) -> Option<Result<(u64, String), BillError>> {
        let mut bytes = match self.inner.next()? {
            Ok(b) => b,
            Err(e) => return Some(Err(BillError::Io(e))),
        };
        self.line += 1;
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        match encoding_rs::GBK.decode_without_bom_handling_and_without_replacement(&bytes) {
            Some(text) => Some(Ok((self.line, text.into_owned()))),
            None => Some(Err(BillError::Line {
                file: self.file,
                line: self.line,
                message: "not valid GBK text".into(),
            })),
        }
    }
}

/// A cell without its trailing TAB (and surrounding blanks).
fn clean(cell: &str) -> &str {
    cell.trim_matches(|c: char| c == '\t' || c == ' ')
}

/// The account of a `#账号：[20880211096256330156]` line.
fn parse_account(line: &str) -> Option<String> {
    let rest = line
        .strip_prefix("#账号：")
        .or_else(|| line.strip_prefix("#账号:"))?;
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(rest);
    Some(inner.trim().to_owned())
}

/// Reads comment lines up to the column header, which must be `expected`; returns the account.
fn read_preamble<B: BufRead>(
    lines: &mut GbkLines<B>,
    expected: &[&str],
) -> Result<Option<String>, BillError> {
    let mut account = None;
    while let Some(next) = lines.next_line() {
        let (_, line) = next?;
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with('#') {
            if let Some(a) = parse_account(&line) {
                account = Some(a);
            }
            continue;
        }
        let found: Vec<&str> = line.split(',').map(clean).collect();
        if found != expected {
            return Err(BillError::Columns {
                file: lines.file,
                expected: expected.join(","),
                found: found.join(","),
            });
        }
        return Ok(account);
    }
    Err(BillError::Columns {
        file: lines.file,
        expected: expected.join(","),
        found: "no column header before the end of the file".into(),
    })
}

/// The business type of a detail row (`业务类型`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillRowKind {
    /// `交易`: a payment.
    Payment,
    /// `退款`: a refund (amounts negative).
    Refund,
    /// Anything else, verbatim.
    Other(String),
}

/// One line of the detail file. Amounts are signed fen: refunds are negative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillRow {
    /// 1-based line number in the detail file, for error reports.
    pub line: u64,
    /// `支付宝交易号`.
    pub trade_no: String,
    /// `商户订单号`.
    pub out_trade_no: String,
    /// `业务类型`.
    pub kind: BillRowKind,
    /// `商品名称`.
    pub subject: String,
    /// `创建时间`: creation of the original trade.
    pub created: OffsetDateTime,
    /// `完成时间`: payment or refund time.
    pub finished: OffsetDateTime,
    /// `门店编号`.
    pub store_id: Option<String>,
    /// `门店名称`.
    pub store_name: Option<String>,
    /// `操作员`.
    pub operator_id: Option<String>,
    /// `终端号`.
    pub terminal_id: Option<String>,
    /// `对方账户`: the masked buyer.
    pub buyer: Option<String>,
    /// `订单金额（元）` in fen.
    pub order_amount_fen: i64,
    /// `商家实收（元）` in fen.
    pub receipt_fen: i64,
    /// `支付宝红包（元）` in fen.
    pub alipay_red_packet: i64,
    /// `集分宝（元）` in fen.
    pub points: i64,
    /// `支付宝优惠（元）` in fen.
    pub alipay_discount: i64,
    /// `商家优惠（元）` in fen.
    pub merchant_discount: i64,
    /// `券核销金额（元）` in fen.
    pub voucher_amount: i64,
    /// `券名称`.
    pub voucher_name: Option<String>,
    /// `商家红包消费金额（元）` in fen.
    pub merchant_red_packet: i64,
    /// `卡消费金额（元）` in fen.
    pub card_amount: i64,
    /// `退款批次号/请求号`: the refund's `out_request_no`.
    pub out_request_no: Option<String>,
    /// `服务费（元）` in fen.
    pub service_fee: i64,
    /// `分润（元）` in fen.
    pub royalty: i64,
    /// `备注`: the trade's `body`.
    pub remark: Option<String>,
}

/// One `#交易合计` / `#退款合计` footer line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TotalLine {
    /// Number of rows (`6笔`).
    pub count: u64,
    /// `商家实收共…元` (refunds: `商家实收退款共…元`, negative) in fen.
    pub receipt_fen: i64,
    /// `商家优惠共…元` in fen.
    pub merchant_discount_fen: i64,
}

/// The footer totals, for cross-checking the rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BillTotals {
    /// `#交易合计：…`.
    pub payments: Option<TotalLine>,
    /// `#退款合计：…`.
    pub refunds: Option<TotalLine>,
}

/// Parses the part after `#交易合计：`, e.g. `6笔，商家实收共0.06元，商家优惠共0.00元`.
fn parse_total(text: &str) -> Result<TotalLine, String> {
    let mut parts = text.split(['，', ',']).map(str::trim);
    let count = parts
        .next()
        .and_then(|p| p.strip_suffix('笔'))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("totals line {text:?} does not start with a count like `6笔`"))?;
    let mut total = TotalLine {
        count,
        ..Default::default()
    };
    for part in parts.filter(|p| !p.is_empty()) {
        let (label, value) = part
            .split_once('共')
            .ok_or_else(|| format!("totals item {part:?} has no `共`"))?;
        let value = value.strip_suffix('元').unwrap_or(value);
        let fen = parse_signed_fen(value).map_err(|e| format!("totals item {part:?}: {e}"))?;
        if label.contains("商家实收") {
            total.receipt_fen = fen;
        } else if label.contains("商家优惠") {
            total.merchant_discount_fen = fen;
        }
    }
    Ok(total)
}

/// The detail rows of a bill, one line at a time.
#[derive(Debug)]
pub struct DetailRows<'a, R: Read> {
    lines: GbkLines<BufReader<zip::read::ZipFile<'a, R>>>,
    account: Option<String>,
    totals: BillTotals,
    done: bool,
}

impl<B> std::fmt::Debug for GbkLines<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GbkLines")
            .field("file", &self.file)
            .field("line", &self.line)
            .finish()
    }
}

impl<R: Read> DetailRows<'_, R> {
    /// The account of the `#账号：[…]` header (16-digit PID + `0156`), if present.
    pub fn account(&self) -> Option<&str> {
        self.account.as_deref()
    }

    /// The footer totals read so far: complete once the iterator is exhausted.
    pub fn totals(&self) -> BillTotals {
        self.totals
    }

    fn absorb_comment(&mut self, line_no: u64, line: &str) -> Result<(), BillError> {
        let err = |message| BillError::Line {
            file: DETAIL_FILE,
            line: line_no,
            message,
        };
        if let Some(rest) = line.strip_prefix("#交易合计：") {
            self.totals.payments = Some(parse_total(rest).map_err(err)?);
        } else if let Some(rest) = line.strip_prefix("#退款合计：") {
            self.totals.refunds = Some(parse_total(rest).map_err(err)?);
        }
        Ok(())
    }
}

impl<R: Read> Iterator for DetailRows<'_, R> {
    type Item = Result<BillRow, BillError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let (no, line) = match self.lines.next_line() {
                None => {
                    self.done = true;
                    return None;
                }
                Some(Err(e)) => {
                    // An I/O or decoding failure: the rest of the stream is not trustworthy.
                    self.done = true;
                    return Some(Err(e));
                }
                Some(Ok(l)) => l,
            };
            if line.trim().is_empty() {
                continue;
            }
            if line.starts_with('#') {
                if let Err(e) = self.absorb_comment(no, &line) {
                    return Some(Err(e));
                }
                continue;
            }
            return Some(
                parse_detail_row(no, &line).map_err(|message| BillError::Line {
                    file: DETAIL_FILE,
                    line: no,
                    message,
                }),
            );
        }
        None
    }
}

fn opt(cell: &str) -> Option<String> {
    (!cell.is_empty()).then(|| cell.to_owned())
}

/// A required amount cell.
fn amount(cells: &[&str], i: usize) -> Result<i64, String> {
    parse_signed_fen(cells[i]).map_err(|e| format!("column {} ({}): {e}", i + 1, DETAIL_COLUMNS[i]))
}

/// An amount cell that may be blank (read as zero).
fn amount_or_zero(cells: &[&str], i: usize) -> Result<i64, String> {
    if cells[i].is_empty() {
        return Ok(0);
    }
    amount(cells, i)
}

fn timestamp(cells: &[&str], i: usize) -> Result<OffsetDateTime, String> {
    crate::time::parse_timestamp(cells[i]).ok_or_else(|| {
        format!(
            "column {} ({}): {:?} is not yyyy-MM-dd HH:mm:ss",
            i + 1,
            DETAIL_COLUMNS[i],
            cells[i]
        )
    })
}

fn parse_detail_row(line_no: u64, line: &str) -> Result<BillRow, String> {
    let cells: Vec<&str> = line.split(',').map(clean).collect();
    if cells.len() < DETAIL_COLUMNS.len() {
        return Err(format!(
            "{} columns, expected {}",
            cells.len(),
            DETAIL_COLUMNS.len()
        ));
    }
    // The remark (the trade's free-text `body`) is last and unquoted: commas in it split it.
    let remark = cells[24..].join(",");
    if cells[0].is_empty() {
        return Err("empty 支付宝交易号".into());
    }
    let kind = match cells[2] {
        "交易" => BillRowKind::Payment,
        "退款" => BillRowKind::Refund,
        other => BillRowKind::Other(other.to_owned()),
    };
    Ok(BillRow {
        line: line_no,
        trade_no: cells[0].to_owned(),
        out_trade_no: cells[1].to_owned(),
        kind,
        subject: cells[3].to_owned(),
        created: timestamp(&cells, 4)?,
        finished: timestamp(&cells, 5)?,
        store_id: opt(cells[6]),
        store_name: opt(cells[7]),
        operator_id: opt(cells[8]),
        terminal_id: opt(cells[9]),
        buyer: opt(cells[10]),
        order_amount_fen: amount(&cells, 11)?,
        receipt_fen: amount(&cells, 12)?,
        alipay_red_packet: amount_or_zero(&cells, 13)?,
        points: amount_or_zero(&cells, 14)?,
        alipay_discount: amount_or_zero(&cells, 15)?,
        merchant_discount: amount_or_zero(&cells, 16)?,
        voucher_amount: amount_or_zero(&cells, 17)?,
        voucher_name: opt(cells[18]),
        merchant_red_packet: amount_or_zero(&cells, 19)?,
        card_amount: amount_or_zero(&cells, 20)?,
        out_request_no: opt(cells[21]),
        service_fee: amount_or_zero(&cells, 22)?,
        royalty: amount_or_zero(&cells, 23)?,
        remark: opt(&remark),
    })
}

/// The summary file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillSummary {
    /// The account of the `#账号：[…]` header, if present.
    pub account: Option<String>,
    /// One row per store (and usually a `合计` row).
    pub rows: Vec<SummaryRow>,
}

/// One line of the summary file; amounts in signed fen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryRow {
    /// `门店编号`.
    pub store_id: Option<String>,
    /// `门店名称`.
    pub store_name: Option<String>,
    /// `交易订单总笔数`.
    pub payment_count: u64,
    /// `退款订单总笔数`.
    pub refund_count: u64,
    /// `订单金额（元）`.
    pub order_amount_fen: i64,
    /// `商家实收（元）`.
    pub receipt_fen: i64,
    /// `支付宝优惠（元）`.
    pub alipay_discount: i64,
    /// `商家优惠（元）`.
    pub merchant_discount: i64,
    /// `卡消费金额（元）`.
    pub card_amount: i64,
    /// `服务费（元）`.
    pub service_fee: i64,
    /// `分润（元）`.
    pub royalty: i64,
    /// `实收净额（元）`.
    pub net_receipt: i64,
}

fn parse_summary_row(line: &str) -> Result<SummaryRow, String> {
    let cells: Vec<&str> = line.split(',').map(clean).collect();
    if cells.len() != SUMMARY_COLUMNS.len() {
        return Err(format!(
            "{} columns, expected {}",
            cells.len(),
            SUMMARY_COLUMNS.len()
        ));
    }
    let count = |i: usize| {
        cells[i].parse::<u64>().map_err(|_| {
            format!(
                "column {} ({}): {:?} is not a count",
                i + 1,
                SUMMARY_COLUMNS[i],
                cells[i]
            )
        })
    };
    let fen = |i: usize| {
        parse_signed_fen(cells[i])
            .map_err(|e| format!("column {} ({}): {e}", i + 1, SUMMARY_COLUMNS[i]))
    };
    Ok(SummaryRow {
        store_id: opt(cells[0]),
        store_name: opt(cells[1]),
        payment_count: count(2)?,
        refund_count: count(3)?,
        order_amount_fen: fen(4)?,
        receipt_fen: fen(5)?,
        alipay_discount: fen(6)?,
        merchant_discount: fen(7)?,
        card_amount: fen(8)?,
        service_fee: fen(9)?,
        royalty: fen(10)?,
        net_receipt: fen(11)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_footer_parses() {
        assert_eq!(
            parse_total("6笔，商家实收共0.06元，商家优惠共0.00元"),
            Ok(TotalLine {
                count: 6,
                receipt_fen: 6,
                merchant_discount_fen: 0
            })
        );
        assert_eq!(
            parse_total("4笔，商家实收退款共-0.04元，商家优惠退款共0.00元").map(|t| t.receipt_fen),
            Ok(-4)
        );
        assert!(parse_total("六笔").is_err());
    }

    #[test]
    fn account_header_parses() {
        assert_eq!(
            parse_account("#账号：[20880211096256330156]").as_deref(),
            Some("20880211096256330156")
        );
        assert_eq!(parse_account("#起始日期：[2019年09月16日 00:00:00]"), None);
    }
}
