//! Profit sharing: relations, settling frozen funds to bound receivers, and the queries.

use serde_json::{Value, json};

use crate::support::*;

async fn frozen_trade(sandbox: &TestSandbox, app: &TestApp, no: &str, amount: &str) -> String {
    let buyer = sandbox.buyer("100.00").await;
    let code = sandbox.payment_code(&buyer).await;
    let paid = app
        .ok(&TradePay(json!({
            "out_trade_no": no, "auth_code": code, "scene": "bar_code", "total_amount": amount,
            "subject": "咖啡", "extend_params": { "royalty_freeze": "true" },
        })))
        .await;
    paid["trade_no"].as_str().expect("trade_no").to_owned()
}

fn bind(accounts: &[&str]) -> RelationBind {
    let list: Vec<Value> = accounts
        .iter()
        .map(|a| json!({ "type": "userId", "account": a, "memo": "点位分成" }))
        .collect();
    RelationBind(json!({ "out_request_no": "b1", "receiver_list": list }))
}

#[tokio::test]
async fn relations_bind_unbind_and_page() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000301").await;
    let accounts: Vec<String> = (0..5).map(|i| format!("208800000000100{i}")).collect();
    let refs: Vec<&str> = accounts.iter().map(String::as_str).collect();

    assert_eq!(app.ok(&bind(&refs)).await["result_code"], "SUCCESS");
    let page = |n: u32| {
        RelationBatchQuery(json!({ "out_request_no": "q1", "page_num": n, "page_size": 2 }))
    };
    let p1 = app.ok(&page(1)).await;
    assert_eq!(p1["total_record_num"], 5);
    assert_eq!(p1["total_page_num"], 3);
    assert_eq!(p1["receiver_list"].as_array().unwrap().len(), 2);
    let p3 = app.ok(&page(3)).await;
    assert_eq!(p3["receiver_list"].as_array().unwrap().len(), 1);
    assert_eq!(p3["current_page_num"], 3);

    app.ok(&RelationUnbind(json!({
        "out_request_no": "u1", "receiver_list": [{ "type": "userId", "account": accounts[0] }],
    })))
    .await;
    assert_eq!(app.ok(&page(1)).await["total_record_num"], 4);

    assert_eq!(
        app.fails(&RelationBind(json!({
            "out_request_no": "b2", "receiver_list": [{ "type": "userId", "account": "12345" }],
        })))
        .await,
        "ACQ.INVALID_PARAMETER"
    );
    assert_eq!(
        app.fails(&RelationBind(json!({ "out_request_no": "b3" })))
            .await,
        "ACQ.INVALID_PARAMETER"
    );
}

#[tokio::test]
async fn settling_pays_bound_receivers_once_and_finishing_releases_the_rest() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000302").await;
    let receiver = sandbox.buyer("0.00").await;
    app.ok(&bind(&[&receiver])).await;
    let trade_no = frozen_trade(&sandbox, &app, "s1", "10.00").await;
    let settle = |no: &str, amount: &str| {
        OrderSettle(json!({
            "out_request_no": no, "trade_no": trade_no,
            "royalty_parameters": [{ "trans_in": receiver, "amount": amount, "desc": "分成" }],
        }))
    };

    let first = app.ok(&settle("st1", "2.00")).await;
    let settle_no = first["settle_no"].as_str().unwrap().to_owned();
    assert_eq!(first["trade_no"], trade_no.as_str());
    assert_eq!(sandbox.balance_fen(&receiver).await, 200);
    let again = app.ok(&settle("st1", "2.00")).await;
    assert_eq!(
        again["settle_no"],
        settle_no.as_str(),
        "an identical repeat answers the same"
    );
    assert_eq!(
        sandbox.balance_fen(&receiver).await,
        200,
        "and moves nothing"
    );
    assert_eq!(
        app.fails(&settle("st1", "3.00")).await,
        "ACQ.CONTEXT_INCONSISTENT"
    );
    assert_eq!(
        app.fails(&settle("st2", "8.01")).await,
        "ACQ.TRADE_SETTLE_ERROR",
        "more than the unsettled 8.00"
    );
    let on = app
        .ok(&OnSettleQuery(json!({ "trade_no": trade_no })))
        .await;
    assert_eq!(on["unsettled_amount"], "8.00");

    let q = app
        .ok(&SettleQuery(json!({ "settle_no": settle_no })))
        .await;
    assert_eq!(q["out_request_no"], "st1");
    let line = &q["royalty_detail_list"][0];
    assert_eq!(line["amount"], "2.00");
    assert_eq!(line["trans_in"], receiver.as_str());
    assert_eq!(line["state"], "SUCCESS");
    assert_eq!(line["operation_type"], "transfer");
    let by_request = app
        .ok(&SettleQuery(
            json!({ "out_request_no": "st1", "trade_no": trade_no }),
        ))
        .await;
    assert_eq!(by_request["settle_no"], settle_no.as_str());

    // A finish-only call, without royalty_parameters, releases the rest to the seller.
    app.ok(&OrderSettle(json!({
        "out_request_no": "fin", "trade_no": trade_no,
        "extend_params": { "royalty_finish": "true" },
    })))
    .await;
    let on = app
        .ok(&OnSettleQuery(json!({ "trade_no": trade_no })))
        .await;
    assert_eq!(on["unsettled_amount"], "0.00");
    let q = app
        .ok(&TradeQuery(
            json!({ "trade_no": trade_no, "query_options": ["trade_settle_info"] }),
        ))
        .await;
    assert_eq!(q["trade_settle_info"]["trade_unsettled_amount"], "0.00");
}

#[tokio::test]
async fn settle_refuses_unbound_receivers_unfrozen_trades_and_missing_parameters() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000303").await;
    let stranger = sandbox.buyer("0.00").await;
    let trade_no = frozen_trade(&sandbox, &app, "s2", "10.00").await;

    assert_eq!(
        app.fails(&OrderSettle(json!({
            "out_request_no": "x1", "trade_no": trade_no,
            "royalty_parameters": [{ "trans_in": stranger, "amount": "1.00" }],
        })))
        .await,
        "ACQ.ROYALTY_ACCOUNT_NOT_EXIST"
    );
    assert_eq!(
        app.fails(&OrderSettle(
            json!({ "out_request_no": "x2", "trade_no": trade_no })
        ))
        .await,
        "ACQ.INVALID_PARAMETER"
    );

    let buyer = sandbox.buyer("100.00").await;
    let code = sandbox.payment_code(&buyer).await;
    let plain = app
        .ok(&TradePay(json!({
            "out_trade_no": "s3", "auth_code": code, "scene": "bar_code",
            "total_amount": "5.00", "subject": "咖啡",
        })))
        .await;
    app.ok(&bind(&[&stranger])).await;
    assert_eq!(
        app.fails(&OrderSettle(json!({
            "out_request_no": "x3", "trade_no": plain["trade_no"],
            "royalty_parameters": [{ "trans_in": stranger, "amount": "1.00" }],
        })))
        .await,
        "ACQ.TRADE_SETTLE_ERROR"
    );
}

#[tokio::test]
async fn per_trade_royalty_info_is_checked_on_pay() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000304").await;
    let buyer = sandbox.buyer("100.00").await;
    let code = sandbox.payment_code(&buyer).await;

    let over = TradePay(json!({
        "out_trade_no": "ri1", "auth_code": code, "scene": "bar_code", "total_amount": "1.00",
        "subject": "水", "royalty_info": { "royalty_detail_infos": [
            { "serial_no": 1, "trans_in": "2088000000009999", "amount": "1.01" }
        ]},
    }));
    assert_eq!(app.fails(&over).await, "ACQ.ROYALTY_AMOUNT_EXCEED");
}

#[tokio::test]
async fn royalty_finish_amount_releases_only_that_much() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000305").await;
    let receiver = sandbox.buyer("0.00").await;
    app.ok(&bind(&[&receiver])).await;
    let trade_no = frozen_trade(&sandbox, &app, "s5", "10.00").await;
    let finish = |no: &str, amount: &str| {
        OrderSettle(json!({
            "out_request_no": no, "trade_no": trade_no,
            "royalty_parameters": [{ "trans_in": receiver, "amount": "1.00" }],
            "extend_params": { "royalty_finish": "true", "royalty_finish_amount": amount },
        }))
    };

    assert_eq!(
        app.fails(&finish("f0", "9.01")).await,
        "ACQ.TRADE_SETTLE_ERROR",
        "only 9.00 is left after the split"
    );
    app.ok(&finish("f1", "4.00")).await;

    let on = app
        .ok(&OnSettleQuery(json!({ "trade_no": trade_no })))
        .await;
    assert_eq!(on["unsettled_amount"], "5.00");
    assert_eq!(sandbox.balance_fen(&receiver).await, 100);
    assert_eq!(
        app.fails(&OrderSettle(json!({
            "out_request_no": "f2", "trade_no": trade_no,
            "extend_params": { "royalty_finish_amount": "1.00" },
        })))
        .await,
        "ACQ.INVALID_PARAMETER",
        "royalty_finish_amount needs royalty_finish"
    );
}
