//! The bill file: parsing a zip built like Alipay's (GBK names without the UTF-8 flag, GBK
//! content, TAB-suffixed cells), streaming, bad inputs, and the download over HTTP.

use std::io::{Cursor, Read, Seek, SeekFrom, Write};

use alipay::api::bill::BillDownloadUrlQuery;
use alipay::bill::{BillError, BillFile, BillRowKind, DETAIL_COLUMNS};
use alipay::{CallOptions, money::format_signed_fen};
use zip::write::SimpleFileOptions;

use crate::api_http::{Canned, CannedServer, config};
use crate::api_support::{client_with, signed_answer};

const ACCOUNT: &str = "20880211096256330156";
// ASCII stand-ins of the same byte length as the GBK names, swapped in after zipping so the
// entries carry raw GBK names without the UTF-8 flag, like Alipay's.
const DETAIL_PLACEHOLDER: &str = "20880211096256330156_20190916_DDDDDDDD.csv";
const SUMMARY_PLACEHOLDER: &str = "20880211096256330156_20190916_SSSSSSSSSSSSSS.csv";

fn gbk(text: &str) -> Vec<u8> {
    let (bytes, _, had_errors) = encoding_rs::GBK.encode(text);
    assert!(!had_errors, "test text must be GBK-encodable");
    bytes.into_owned()
}

fn detail_name() -> Vec<u8> {
    gbk(&format!("{ACCOUNT}_20190916_业务明细.csv"))
}

fn summary_name() -> Vec<u8> {
    gbk(&format!("{ACCOUNT}_20190916_业务明细(汇总).csv"))
}

fn replace_all(haystack: &mut [u8], needle: &[u8], with: &[u8]) -> usize {
    assert_eq!(needle.len(), with.len());
    let mut count = 0;
    let mut i = 0;
    while i + needle.len() <= haystack.len() {
        if &haystack[i..i + needle.len()] == needle {
            haystack[i..i + needle.len()].copy_from_slice(with);
            count += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    count
}

/// A bill zip in memory with these (already GBK) detail and optional summary contents.
fn bill_zip(detail: Option<&[u8]>, summary: Option<&[u8]>) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    if let Some(d) = detail {
        w.start_file(DETAIL_PLACEHOLDER, options).expect("start");
        w.write_all(d).expect("write");
    }
    if let Some(s) = summary {
        w.start_file(SUMMARY_PLACEHOLDER, options).expect("start");
        w.write_all(s).expect("write");
    }
    let mut bytes = w.finish().expect("finish").into_inner();
    if detail.is_some() {
        assert_eq!(
            replace_all(&mut bytes, DETAIL_PLACEHOLDER.as_bytes(), &detail_name()),
            2
        );
    }
    if summary.is_some() {
        assert_eq!(
            replace_all(&mut bytes, SUMMARY_PLACEHOLDER.as_bytes(), &summary_name()),
            2
        );
    }
    bytes
}

const HEADER: &str = "#支付宝业务明细查询\n#账号：[20880211096256330156]\n#起始日期：[2019年09月16日 00:00:00]   终止日期：[2019年09月17日 00:00:00]\n#-----------------------------------------业务明细列表----------------------------------------\n";

fn columns() -> String {
    DETAIL_COLUMNS.join(",") + "\n"
}

const SAMPLE_ROWS: &str = "2019091622001458860515315453\t,service_1568601259302\t,交易\t,下单测试,2019-09-16 10:55:16,2019-09-16 10:55:23,alipay_store\t,alipay_store\t,alipay\t,\t,*津水(602***@qq.com)\t,0.01,0.01,0.00,0.00,0.00,0.00,0.00,,0.00\t,0.00,\t,0.00,0.00,下单测试\n2019091622001458860515315453\t,service_1568601259302\t,退款\t,下单测试,2019-09-16 10:55:16,2019-09-16 10:56:48,alipay_store\t,alipay_store\t,alipay\t,\t,*津水(602***@qq.com)\t,-0.01,-0.01,0.00,0.00,0.00,0.00,0.00,,0.00\t,0.00,re_test_1568602607356\t,0.00,0.00,下单测试\n";

const FOOTER: &str = "#-----------------------------------------业务明细列表结束------------------------------------\n#交易合计：6笔，商家实收共0.06元，商家优惠共0.00元\n#退款合计：4笔，商家实收退款共-0.04元，商家优惠退款共0.00元\n#导出时间：[2019年09月17日 05:46:49]\n";

fn crlf(text: &str) -> String {
    text.replace('\n', "\r\n")
}

fn open(bytes: Vec<u8>) -> Result<BillFile<Cursor<Vec<u8>>>, BillError> {
    BillFile::from_reader(Cursor::new(bytes))
}

#[test]
fn the_reference_sample_parses_with_crlf_lines() {
    let text = crlf(&format!("{HEADER}{}{SAMPLE_ROWS}{FOOTER}", columns()));
    let mut bill = open(bill_zip(Some(&gbk(&text)), None)).expect("open");
    let mut rows = bill.details().expect("details");
    assert_eq!(rows.account(), Some(ACCOUNT));
    let pay = rows.next().expect("row 1").expect("parses");
    assert_eq!(pay.line, 6);
    assert_eq!(pay.trade_no, "2019091622001458860515315453");
    assert_eq!(pay.out_trade_no, "service_1568601259302");
    assert_eq!(pay.kind, BillRowKind::Payment);
    assert_eq!(pay.subject, "下单测试");
    assert_eq!(pay.created.unix_timestamp(), 1568602516);
    assert_eq!(
        alipay::time::format_timestamp(pay.finished),
        "2019-09-16 10:55:23"
    );
    assert_eq!(pay.store_id.as_deref(), Some("alipay_store"));
    assert_eq!(pay.store_name.as_deref(), Some("alipay_store"));
    assert_eq!(pay.operator_id.as_deref(), Some("alipay"));
    assert_eq!(pay.terminal_id, None);
    assert_eq!(pay.buyer.as_deref(), Some("*津水(602***@qq.com)"));
    assert_eq!((pay.order_amount_fen, pay.receipt_fen), (1, 1));
    assert_eq!(pay.voucher_name, None);
    assert_eq!(pay.out_request_no, None);
    assert_eq!(pay.remark.as_deref(), Some("下单测试"));
    let refund = rows.next().expect("row 2").expect("parses");
    assert_eq!(refund.kind, BillRowKind::Refund);
    assert_eq!((refund.order_amount_fen, refund.receipt_fen), (-1, -1));
    assert_eq!(
        refund.out_request_no.as_deref(),
        Some("re_test_1568602607356")
    );
    assert!(rows.next().is_none());
    let totals = rows.totals();
    let payments = totals.payments.expect("payment totals");
    assert_eq!((payments.count, payments.receipt_fen), (6, 6));
    let refunds = totals.refunds.expect("refund totals");
    assert_eq!((refunds.count, refunds.receipt_fen), (4, -4));
}

/// A generated detail row: payments on even numbers, refunds of the previous one on odd.
fn generated_row(i: u64) -> String {
    let order = i / 2;
    let fen = (order % 997 + 1) as i64;
    let (kind, amount, request) = if i.is_multiple_of(2) {
        ("交易", fen, String::new())
    } else {
        ("退款", -fen, format!("refund_{order}"))
    };
    let amount = format_signed_fen(amount);
    format!(
        "20190916220014588605{order:08}\t,vend_{order}\t,{kind}\t,可乐 330ml,2019-09-16 10:55:16,2019-09-16 10:56:48,VM-STORE-1\t,一号店\t,\t,VM-0001\t,*三(138***1234)\t,{amount},{amount},0.00,0.00,0.00,0.00,0.00,,0.00\t,0.00,{request}\t,0.00,0.00,出货\n"
    )
}

fn generated_bill(rows: u64, footer: bool) -> String {
    let mut text = format!("{HEADER}{}", columns());
    let (mut pay_n, mut pay_fen, mut ref_n, mut ref_fen) = (0u64, 0i64, 0u64, 0i64);
    for i in 0..rows {
        text.push_str(&generated_row(i));
        let fen = ((i / 2) % 997 + 1) as i64;
        if i % 2 == 0 {
            pay_n += 1;
            pay_fen += fen;
        } else {
            ref_n += 1;
            ref_fen -= fen;
        }
    }
    if footer {
        text.push_str(&format!(
            "#交易合计：{pay_n}笔，商家实收共{}元，商家优惠共0.00元\n#退款合计：{ref_n}笔，商家实收退款共{}元，商家优惠退款共0.00元\n",
            format_signed_fen(pay_fen),
            format_signed_fen(ref_fen)
        ));
    }
    text
}

#[test]
fn thousands_of_rows_add_up_to_the_footer_totals() {
    let text = generated_bill(5000, true);
    let mut bill = open(bill_zip(Some(&gbk(&text)), None)).expect("open");
    let mut rows = bill.details().expect("details");
    let (mut pay_n, mut pay_fen, mut ref_n, mut ref_fen) = (0u64, 0i64, 0u64, 0i64);
    for row in rows.by_ref() {
        let row = row.expect("row parses");
        match row.kind {
            BillRowKind::Payment => {
                pay_n += 1;
                pay_fen += row.receipt_fen;
            }
            BillRowKind::Refund => {
                ref_n += 1;
                ref_fen += row.receipt_fen;
                assert!(row.out_request_no.is_some());
            }
            BillRowKind::Other(k) => panic!("unexpected kind {k}"),
        }
        assert_eq!(row.store_name.as_deref(), Some("一号店"));
    }
    let totals = rows.totals();
    let payments = totals.payments.expect("payments");
    let refunds = totals.refunds.expect("refunds");
    assert_eq!((pay_n, pay_fen), (payments.count, payments.receipt_fen));
    assert_eq!((ref_n, ref_fen), (refunds.count, refunds.receipt_fen));
    assert_eq!(pay_n + ref_n, 5000);
}

#[test]
fn the_summary_file_parses() {
    let summary = format!(
        "#支付宝业务汇总查询\n#账号：[{ACCOUNT}]\n#-----------------------------------------业务汇总列表----------------------------------------\n门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）,支付宝优惠（元）,商家优惠（元）,卡消费金额（元）,服务费（元）,分润（元）,实收净额（元）\nalipay_store\t,alipay_store\t,6,4,0.02,0.02,0.00,0.00,0.00,0.00,0.00,0.02\n合计,,6,4,0.02,0.02,0.00,0.00,0.00,0.00,0.00,0.02\n#-----------------------------------------业务汇总列表结束------------------------------------\n#导出时间：[2019年09月17日 05:46:49]\n"
    );
    let detail = gbk(&format!("{HEADER}{}{SAMPLE_ROWS}", columns()));
    let mut bill = open(bill_zip(Some(&detail), Some(&gbk(&summary)))).expect("open");
    let s = bill.summary().expect("summary");
    assert_eq!(s.account.as_deref(), Some(ACCOUNT));
    assert_eq!(s.rows.len(), 2);
    assert_eq!(s.rows[0].store_id.as_deref(), Some("alipay_store"));
    assert_eq!((s.rows[0].payment_count, s.rows[0].refund_count), (6, 4));
    assert_eq!(s.rows[0].net_receipt, 2);
    assert_eq!(s.rows[1].store_id.as_deref(), Some("合计"));
    assert_eq!(s.rows[1].store_name, None);
    // The detail file is still readable after the summary.
    assert_eq!(bill.details().expect("details").count(), 2);
}

#[test]
fn bad_inputs_give_clear_errors() {
    // Not a zip.
    let err = open(b"<html>expired</html>".to_vec()).expect_err("not a zip");
    assert!(matches!(err, BillError::NotZip(_)), "{err}");
    // No detail file.
    let err = open(bill_zip(None, Some(b"x"))).expect_err("no detail");
    assert!(err.to_string().contains("业务明细.csv"), "{err}");
    // No summary file, asked for.
    let detail = gbk(&format!("{HEADER}{}{SAMPLE_ROWS}", columns()));
    let mut bill = open(bill_zip(Some(&detail), None)).expect("open");
    assert!(matches!(bill.summary(), Err(BillError::MissingFile(_))));
    // Wrong columns.
    let text = format!("{HEADER}支付宝交易号,商户订单号,业务类型\n{SAMPLE_ROWS}");
    let mut bill = open(bill_zip(Some(&gbk(&text)), None)).expect("open");
    let err = bill.details().expect_err("wrong columns");
    assert!(matches!(err, BillError::Columns { .. }), "{err}");
    assert!(
        err.to_string().contains("支付宝交易号,商户订单号,业务类型"),
        "{err}"
    );
    // No header at all.
    let mut bill = open(bill_zip(Some(&gbk(HEADER)), None)).expect("open");
    assert!(
        bill.details()
            .expect_err("no header")
            .to_string()
            .contains("no column header")
    );
    // A bad amount on line 7 (header lines 1-5, rows from line 6).
    let bad = SAMPLE_ROWS.replacen("-0.01,-0.01", "-0.0x,-0.01", 1);
    let text = format!("{HEADER}{}{bad}", columns());
    let mut bill = open(bill_zip(Some(&gbk(&text)), None)).expect("open");
    let results: Vec<_> = bill.details().expect("details").collect();
    assert!(results[0].is_ok());
    let err = results[1].as_ref().expect_err("bad amount");
    assert!(matches!(err, BillError::Line { line: 7, .. }), "{err}");
    assert!(err.to_string().contains("订单金额（元）"), "{err}");
    // A short row.
    let text = format!(
        "{HEADER}{}2019091622001458860515315453\t,x\t,交易\n",
        columns()
    );
    let mut bill = open(bill_zip(Some(&gbk(&text)), None)).expect("open");
    let err = bill
        .details()
        .expect("details")
        .next()
        .expect("a row")
        .expect_err("short");
    assert!(
        err.to_string().contains("line 6: 3 columns, expected 25"),
        "{err}"
    );
    // Bytes that are not GBK.
    let mut bytes = gbk(&format!("{HEADER}{}", columns()));
    bytes.extend_from_slice(b"\xff\xff\xff\n");
    let mut bill = open(bill_zip(Some(&bytes), None)).expect("open");
    let err = bill
        .details()
        .expect("details")
        .next()
        .expect("a line")
        .expect_err("not GBK");
    assert!(err.to_string().contains("line 6: not valid GBK"), "{err}");
    // A bad time.
    let text = format!(
        "{HEADER}{}{}",
        columns(),
        SAMPLE_ROWS.replacen("2019-09-16 10:55:23", "2019/09/16", 1)
    );
    let mut bill = open(bill_zip(Some(&gbk(&text)), None)).expect("open");
    let err = bill
        .details()
        .expect("details")
        .next()
        .expect("a row")
        .expect_err("bad time");
    assert!(err.to_string().contains("完成时间"), "{err}");
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Writes a 1,000,000-row bill straight into a temp file (never in memory), with the GBK
/// entry name patched in place, and returns the file rewound.
fn million_row_bill() -> std::fs::File {
    let file = tempfile::tempfile().expect("temp");
    let mut w = zip::ZipWriter::new(file);
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    w.start_file(DETAIL_PLACEHOLDER, options).expect("start");
    w.write_all(&gbk(&format!("{HEADER}{}", columns())))
        .expect("header");
    let mut buf = Vec::new();
    for i in 0..1_000_000u64 {
        buf.extend_from_slice(&gbk(&generated_row(i)));
        if buf.len() > 1 << 20 {
            w.write_all(&buf).expect("rows");
            buf.clear();
        }
    }
    w.write_all(&buf).expect("rows");
    let mut file = w.finish().expect("finish");
    // Patch the name in the local header (first entry: right after the 30-byte header) and in
    // the central directory (in the file's tail).
    let name = detail_name();
    let mut head = vec![0u8; 30 + name.len()];
    file.seek(SeekFrom::Start(0)).expect("seek");
    file.read_exact(&mut head).expect("read");
    assert_eq!(&head[30..], DETAIL_PLACEHOLDER.as_bytes());
    file.seek(SeekFrom::Start(30)).expect("seek");
    file.write_all(&name).expect("patch");
    let len = file.seek(SeekFrom::End(0)).expect("len");
    let tail_start = len.saturating_sub(4096);
    let mut tail = Vec::new();
    file.seek(SeekFrom::Start(tail_start)).expect("seek");
    file.read_to_end(&mut tail).expect("tail");
    assert_eq!(
        replace_all(&mut tail, DETAIL_PLACEHOLDER.as_bytes(), &name),
        1
    );
    file.seek(SeekFrom::Start(tail_start)).expect("seek");
    file.write_all(&tail).expect("patch");
    file.seek(SeekFrom::Start(0)).expect("rewind");
    file
}

#[test]
#[ignore = "takes ~30 s in debug builds (generation included); run with --ignored"]
fn a_million_row_bill_streams_in_bounded_memory() {
    let file = million_row_bill();
    let before = rss_kib();
    let mut bill = BillFile::from_reader(file).expect("open");
    let mut count = 0u64;
    let mut sum = 0i64;
    let mut peak = before.unwrap_or(0);
    for row in bill.details().expect("details") {
        let row = row.expect("row");
        count += 1;
        sum += row.order_amount_fen;
        if count.is_multiple_of(100_000) {
            peak = peak.max(rss_kib().unwrap_or(0));
        }
    }
    assert_eq!(count, 1_000_000);
    assert_eq!(sum, 0, "every payment has its refund");
    // The uncompressed detail file is ~200 MB; reading it must not grow memory anywhere near.
    if let Some(before) = before {
        let growth_mib = peak.saturating_sub(before) / 1024;
        assert!(
            growth_mib < 64,
            "RSS grew by {growth_mib} MiB while streaming"
        );
    }
}

#[tokio::test]
async fn download_bill_fetches_the_url_and_opens_the_zip() {
    let zip = bill_zip(
        Some(&gbk(&format!("{HEADER}{}{SAMPLE_ROWS}{FOOTER}", columns()))),
        None,
    );
    let server = CannedServer::start_with(|base| {
        let answer = format!(
            r#"{{"code":"10000","msg":"Success","bill_download_url":"{}\/bill.zip?fileId=20190916"}}"#,
            base.replace('/', "\\/")
        );
        vec![
            Canned::ok(signed_answer("alipay.data.dataservice.bill.downloadurl.query", &answer)),
            Canned::ok(zip),
        ]
    })
    .await;
    let client = client_with(config(&server.url));
    let mut bill = client
        .download_bill(
            &BillDownloadUrlQuery::trade_daily("2019-09-16"),
            &CallOptions::default(),
        )
        .await
        .expect("bill");
    let rows: Vec<_> = bill.details().expect("details").collect();
    assert_eq!(rows.len(), 2);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].target, "/bill.zip?fileId=20190916");
}

#[tokio::test]
async fn an_http_error_on_the_bill_get_is_a_retryable_download_error() {
    let server = CannedServer::start_with(|base| {
        let answer =
            format!(r#"{{"code":"10000","msg":"Success","bill_download_url":"{base}/bill.zip"}}"#);
        vec![
            Canned::ok(signed_answer(
                "alipay.data.dataservice.bill.downloadurl.query",
                &answer,
            )),
            Canned::status(403),
        ]
    })
    .await;
    let client = client_with(config(&server.url));
    let err = client
        .download_bill(
            &BillDownloadUrlQuery::trade_daily("2019-09-16"),
            &CallOptions::default(),
        )
        .await
        .expect_err("403");
    assert!(matches!(err, BillError::Download(_)), "{err}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("403"), "{err}");
    assert!(err.to_string().contains("request a new one"), "{err}");
}

#[tokio::test]
async fn a_refused_url_query_is_not_retryable() {
    let server = CannedServer::start(vec![Canned::ok(signed_answer(
        "alipay.data.dataservice.bill.downloadurl.query",
        r#"{"code":"40004","msg":"Business Failed","sub_code":"isp.bill_not_exist","sub_msg":"账单不存在"}"#,
    ))])
    .await;
    let client = client_with(config(&server.url));
    let err = client
        .download_bill(
            &BillDownloadUrlQuery::trade_daily("2019-09-16"),
            &CallOptions::default(),
        )
        .await
        .expect_err("refused");
    assert!(matches!(err, BillError::Failure(_)), "{err}");
    assert!(!err.is_retryable());
}
