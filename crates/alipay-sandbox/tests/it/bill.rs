//! The daily bill: real trades and refunds, the sandbox clock moved past Beijing midnight,
//! the URL asked for with the typed API, the zip downloaded over HTTP and read with
//! `alipay::bill::BillFile`, the crate's own parser.

use alipay::api::bill::{BillDownloadUrlQuery, BillType};
use alipay::bill::{BillError, BillFile, BillRow, BillRowKind};
use alipay::{CallOptions, Outcome};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::support::*;

const BEIJING_SECS: i64 = 8 * 3600;

/// Moves the sandbox clock to 10:00 Beijing of the next day; returns that day (`yyyy-MM-dd`).
async fn to_ten_oclock(sb: &TestSandbox) -> String {
    let now_s = sb.get("/control/clock").await["now_ms"].as_i64().unwrap() / 1000;
    let local = now_s + BEIJING_SECS;
    let target = local - local.rem_euclid(86_400) + 86_400 + 10 * 3600 - BEIJING_SECS;
    sb.advance(target - now_s).await;
    day_of(target)
}

fn day_of(unix: i64) -> String {
    let d = OffsetDateTime::from_unix_timestamp(unix)
        .unwrap()
        .to_offset(alipay::time::BEIJING)
        .date();
    format!("{}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

async fn pay(sb: &TestSandbox, app: &TestApp, biz: Value) -> Value {
    let buyer = sb.buyer("500.00").await;
    let mut biz = biz;
    biz["auth_code"] = sb.payment_code(&buyer).await.into();
    biz["scene"] = "bar_code".into();
    app.ok(&TradePay(biz)).await
}

/// The four trades of the brief: terminal, partly refunded, fully refunded, with royalty.
async fn business_day(sb: &TestSandbox, app: &TestApp) {
    pay(
        sb,
        app,
        json!({ "out_trade_no": "b-term", "total_amount": "3.50", "subject": "可乐",
        "terminal_id": "VM-0001", "store_id": "S01", "operator_id": "op7", "body": "一瓶" }),
    )
    .await;
    pay(
        sb,
        app,
        json!({ "out_trade_no": "b-part", "total_amount": "10.00", "subject": "薯片" }),
    )
    .await;
    pay(
        sb,
        app,
        json!({ "out_trade_no": "b-full", "total_amount": "2.00", "subject": "水" }),
    )
    .await;
    pay(
        sb,
        app,
        json!({ "out_trade_no": "b-roy", "total_amount": "20.00", "subject": "套餐",
        "royalty_info": { "royalty_detail_infos": [
            { "serial_no": 1, "trans_in": "2088000000009999", "amount": "2.50" }
        ]} }),
    )
    .await;
    app.ok(&TradeRefund(
        json!({ "out_trade_no": "b-part", "refund_amount": "4.00", "out_request_no": "b-part-r1" }),
    ))
    .await;
    app.ok(&TradeRefund(
        json!({ "out_trade_no": "b-full", "refund_amount": "2.00", "out_request_no": "b-full-r1" }),
    ))
    .await;
}

async fn bill_of(app: &TestApp, date: &str) -> Result<BillFile, BillError> {
    app.client
        .download_bill(
            &BillDownloadUrlQuery::trade_daily(date),
            &CallOptions::default(),
        )
        .await
}

fn read_rows(bill: &mut BillFile) -> (Vec<BillRow>, alipay::bill::BillTotals, Option<String>) {
    let mut details = bill.details().unwrap();
    let account = details.account().map(str::to_owned);
    let rows: Vec<BillRow> = details.by_ref().map(Result::unwrap).collect();
    (rows, details.totals(), account)
}

fn row<'a>(rows: &'a [BillRow], out_trade_no: &str, kind: BillRowKind) -> &'a BillRow {
    rows.iter()
        .find(|r| r.out_trade_no == out_trade_no && r.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} row for {out_trade_no}"))
}

#[tokio::test]
async fn the_daily_bill_holds_every_payment_and_refund_and_the_crates_parser_reads_it() {
    let sb = spawn_sandbox().await;
    let app = sb.app("2021000000000801").await;
    let day = to_ten_oclock(&sb).await;
    business_day(&sb, &app).await;
    sb.advance(24 * 3600).await; // past midnight: T+1

    let mut bill = bill_of(&app, &day).await.unwrap();
    let (rows, totals, account) = read_rows(&mut bill);
    assert_eq!(account.unwrap(), format!("{}0156", app.seller_pid));
    assert_eq!(rows.len(), 6);

    let term = row(&rows, "b-term", BillRowKind::Payment);
    assert_eq!(term.order_amount_fen, 350);
    assert_eq!(term.receipt_fen, 350);
    assert_eq!(term.terminal_id.as_deref(), Some("VM-0001"));
    assert_eq!(term.store_id.as_deref(), Some("S01"));
    assert_eq!(term.operator_id.as_deref(), Some("op7"));
    assert_eq!(term.subject, "可乐");
    assert_eq!(term.remark.as_deref(), Some("一瓶"));
    assert_eq!(term.service_fee, 2); // 0.6% of 3.50 = 2.1 fen
    assert!(
        term.buyer
            .as_deref()
            .is_some_and(|b| b.starts_with('*') && b.contains("***@"))
    );
    assert_eq!(alipay::time::format_timestamp(term.finished)[..10], day);

    let part = row(&rows, "b-part", BillRowKind::Refund);
    assert_eq!(part.receipt_fen, -400);
    assert_eq!(part.out_request_no.as_deref(), Some("b-part-r1"));
    assert_eq!(part.service_fee, -2); // 2.4 fen back
    assert_eq!(row(&rows, "b-part", BillRowKind::Payment).receipt_fen, 1000);
    let full = row(&rows, "b-full", BillRowKind::Refund);
    assert_eq!(full.receipt_fen, -200);
    assert_eq!(full.out_request_no.as_deref(), Some("b-full-r1"));
    assert_eq!(
        full.trade_no,
        row(&rows, "b-full", BillRowKind::Payment).trade_no
    );
    let roy = row(&rows, "b-roy", BillRowKind::Payment);
    assert_eq!(
        (roy.receipt_fen, roy.royalty, roy.service_fee),
        (2000, 250, 12)
    );

    let pays = totals.payments.unwrap();
    assert_eq!((pays.count, pays.receipt_fen), (4, 350 + 1000 + 200 + 2000));
    let refunds = totals.refunds.unwrap();
    assert_eq!((refunds.count, refunds.receipt_fen), (2, -600));
    assert_eq!(
        rows.iter().map(|r| r.receipt_fen).sum::<i64>(),
        pays.receipt_fen + refunds.receipt_fen
    );

    let summary = bill.summary().unwrap();
    let total = summary
        .rows
        .iter()
        .find(|r| r.store_id.as_deref() == Some("合计"))
        .unwrap();
    assert_eq!((total.payment_count, total.refund_count), (4, 2));
    assert_eq!(total.receipt_fen, 2950);
    assert_eq!(total.service_fee, 2 + 6 + 1 + 12 - 2 - 1);
    assert_eq!(total.royalty, 250);
    assert_eq!(
        total.net_receipt,
        total.receipt_fen - total.service_fee - total.royalty
    );
    let s01 = summary
        .rows
        .iter()
        .find(|r| r.store_id.as_deref() == Some("S01"))
        .unwrap();
    assert_eq!((s01.payment_count, s01.receipt_fen), (1, 350));
}

async fn url_of(app: &TestApp, date: &str) -> alipay::api::bill::BillDownloadUrlResponse {
    match app
        .client
        .execute(
            &BillDownloadUrlQuery::trade_daily(date),
            &CallOptions::default(),
        )
        .await
    {
        Outcome::Success(r) => r,
        other => panic!("bill URL for {date}: {other:?}"),
    }
}

fn gbk(s: &str) -> Vec<u8> {
    encoding_rs::GBK.encode(s).0.into_owned()
}

#[tokio::test]
async fn the_zip_names_its_entries_in_gbk_without_the_utf8_flag_and_the_url_expires_after_30_s() {
    let sb = spawn_sandbox().await;
    let app = sb.app("2021000000000802").await;
    let day = to_ten_oclock(&sb).await;
    pay(
        &sb,
        &app,
        json!({ "out_trade_no": "z1", "total_amount": "1.00", "subject": "水" }),
    )
    .await;
    sb.advance(24 * 3600).await;

    let answer = url_of(&app, &day).await;
    assert!(
        answer
            .bill_download_url
            .starts_with(&format!("{}/bill/download/", sb.base_url))
    );
    assert_eq!(answer.bill_file_code, None);
    let resp = reqwest::get(&answer.bill_download_url).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let bytes = resp.bytes().await.unwrap().to_vec();

    let label = day.replace('-', "");
    let prefix = format!("{}0156_{label}_", app.seller_pid);
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.clone())).unwrap();
    let names: Vec<Vec<u8>> = (0..archive.len())
        .map(|i| archive.by_index_raw(i).unwrap().name_raw().to_vec())
        .collect();
    assert_eq!(
        names,
        vec![
            gbk(&format!("{prefix}业务明细.csv")),
            gbk(&format!("{prefix}业务明细(汇总).csv"))
        ]
    );
    // General-purpose flags of the first local header (offset 6): bit 11 clear.
    assert_eq!(&bytes[..4], b"PK\x03\x04");
    assert_eq!(u16::from_le_bytes([bytes[6], bytes[7]]) & (1 << 11), 0);
    // The content is GBK: the column header decodes as GBK, not as UTF-8.
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut archive.by_index(0).unwrap(), &mut text).unwrap();
    assert!(std::str::from_utf8(&text).is_err());
    let (decoded, _, bad) = encoding_rs::GBK.decode(&text);
    assert!(!bad);
    assert!(decoded.starts_with("#支付宝业务明细查询\r\n#账号：["));
    assert!(decoded.contains("\r\n#导出时间：["));

    // 30 seconds of sandbox time later the link is dead; a new one works.
    sb.advance(31).await;
    let gone = reqwest::get(&answer.bill_download_url).await.unwrap();
    assert_eq!(gone.status().as_u16(), 410);
    let fresh = url_of(&app, &day).await;
    assert_eq!(
        reqwest::get(&fresh.bill_download_url)
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let unknown = reqwest::get(format!("{}/bill/download/nope", sb.base_url))
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
}

/// The query without the typed API's own date check, to reach the gateway with bad input.
#[derive(Debug, serde::Serialize)]
#[serde(transparent)]
struct RawBillQuery(Value);

impl alipay::ApiRequest for RawBillQuery {
    const METHOD: &'static str = "alipay.data.dataservice.bill.downloadurl.query";
    type Response = Value;
}

#[tokio::test]
async fn todays_future_and_malformed_dates_and_unsupported_types_are_refused() {
    let sb = spawn_sandbox().await;
    let app = sb.app("2021000000000803").await;
    let day = to_ten_oclock(&sb).await;
    let now_s = sb.get("/control/clock").await["now_ms"].as_i64().unwrap() / 1000;
    let tomorrow = day_of(now_s + 86_400);
    let query =
        |date: &str, kind: &str| RawBillQuery(json!({ "bill_type": kind, "bill_date": date }));

    assert_eq!(app.fails(&query(&day, "trade")).await, "BILL_NOT_EXIST");
    assert_eq!(
        app.fails(&query(&day[..7], "trade")).await,
        "BILL_NOT_EXIST"
    );
    assert_eq!(
        app.fails(&query(&tomorrow, "trade")).await,
        "INVAILID_ARGUMENTS"
    );
    for bad in ["2019/09/16", "2019-02-30", "20190916", "2019-9-1", ""] {
        assert_eq!(
            app.fails(&query(bad, "trade")).await,
            "INVAILID_ARGUMENTS",
            "{bad:?}"
        );
    }
    assert_eq!(
        app.fails(&query("2020-01-01", "TRADE")).await,
        "INVAILID_ARGUMENTS"
    );
    assert_eq!(
        app.fails(&query("2020-01-01", "merchant_act")).await,
        "TYPE_NOT_SUPPORTED"
    );
    // The typed API refuses a malformed date before sending anything.
    let typed = app
        .client
        .execute(
            &BillDownloadUrlQuery::trade_daily("2019/09/16"),
            &CallOptions::default(),
        )
        .await;
    assert!(matches!(
        typed,
        Outcome::Failure(alipay::Failure::NotSent(_))
    ));
}

#[tokio::test]
async fn a_day_without_business_gets_an_empty_bill_file() {
    let sb = spawn_sandbox().await;
    let app = sb.app("2021000000000804").await;
    let answer = url_of(&app, "2020-01-15").await;
    assert_eq!(
        answer.bill_file_code.as_deref(),
        Some("EMPTY_DATA_WITH_BILL_FILE")
    );
    let mut bill = bill_of(&app, "2020-01-15").await.unwrap();
    let (rows, totals, _) = read_rows(&mut bill);
    assert!(rows.is_empty());
    assert_eq!(totals.payments.unwrap().count, 0);
    assert_eq!(totals.refunds.unwrap().count, 0);
    let summary = bill.summary().unwrap();
    assert_eq!(summary.rows.len(), 1); // only 合计

    // A monthly bill and the fund ledger come the same way.
    let monthly = BillDownloadUrlQuery {
        bill_type: BillType::Trade,
        bill_date: "2020-01".into(),
        smid: None,
        secure: None,
    };
    assert!(
        app.client
            .download_bill(&monthly, &CallOptions::default())
            .await
            .is_ok()
    );
    let ledger = BillDownloadUrlQuery {
        bill_type: BillType::Signcustomer,
        ..monthly
    };
    let url = match app.client.execute(&ledger, &CallOptions::default()).await {
        Outcome::Success(r) => r.bill_download_url,
        other => panic!("{other:?}"),
    };
    let bytes = reqwest::get(url)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let name = archive.by_index_raw(0).unwrap().name_raw().to_vec();
    assert_eq!(
        name,
        gbk(&format!("{}0156_202001_账务明细.csv", app.seller_pid))
    );
}

#[tokio::test]
async fn injected_differences_show_up_in_the_bill() {
    let sb = spawn_sandbox().await;
    let app = sb.app("2021000000000805").await;
    let day = to_ten_oclock(&sb).await;
    for (no, amount) in [("d-ok", "1.00"), ("d-short", "2.00"), ("d-diff", "3.00")] {
        pay(
            &sb,
            &app,
            json!({ "out_trade_no": no, "total_amount": amount, "subject": "水" }),
        )
        .await;
    }
    sb.advance(24 * 3600).await;

    let add = |body: Value| sb.post_status("/control/bill/differences", body);
    let (status, extra) = add(
        json!({ "app_id": app.app_id, "date": day, "kind": "extra_trade",
        "out_trade_no": "d-long", "amount": "9.99" }),
    )
    .await;
    assert_eq!(status, 201, "{extra}");
    assert_eq!(
        add(json!({ "app_id": app.app_id, "date": day, "kind": "missing_trade", "out_trade_no": "d-short" }))
            .await
            .0,
        201
    );
    assert_eq!(
        add(
            json!({ "app_id": app.app_id, "date": day, "kind": "amount_mismatch",
            "out_trade_no": "d-diff", "amount": "3.01" })
        )
        .await
        .0,
        201
    );
    // Bad input changes nothing.
    assert_eq!(add(json!({ "app_id": app.app_id, "date": day, "kind": "missing_trade", "out_trade_no": "nope" })).await.0, 404);
    assert_eq!(add(json!({ "app_id": app.app_id, "date": "yesterday", "kind": "extra_trade", "amount": "1.00" })).await.0, 422);
    assert_eq!(
        add(json!({ "app_id": app.app_id, "date": day, "kind": "lost" }))
            .await
            .0,
        422
    );
    assert_eq!(
        sb.get("/control/bill/differences").await["differences"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let mut bill = bill_of(&app, &day).await.unwrap();
    let (rows, totals, _) = read_rows(&mut bill);
    let nos: Vec<&str> = rows.iter().map(|r| r.out_trade_no.as_str()).collect();
    assert_eq!(rows.len(), 3, "{nos:?}");
    assert!(!nos.contains(&"d-short"));
    assert_eq!(row(&rows, "d-long", BillRowKind::Payment).receipt_fen, 999);
    assert_eq!(row(&rows, "d-diff", BillRowKind::Payment).receipt_fen, 301);
    assert_eq!(row(&rows, "d-ok", BillRowKind::Payment).receipt_fen, 100);
    assert_eq!(totals.payments.unwrap().receipt_fen, 999 + 301 + 100);

    let cleared = sb
        .http
        .delete(format!("{}/control/bill/differences", sb.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status().as_u16(), 204);
    let mut bill = bill_of(&app, &day).await.unwrap();
    assert_eq!(read_rows(&mut bill).0.len(), 3);
}
