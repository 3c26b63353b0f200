//! The APIs the gateway serves, with Alipay's business rules. One module per family; each
//! handler takes the checked call and the store, and returns the answer's fields or an error.

pub mod agreement;
pub mod alipaycert;
pub mod bill;
pub mod cancel;
pub mod codes;
pub mod control_routes;
pub mod face;
pub mod fields;
pub mod fund_auth;
pub mod oauth;
pub mod pay;
pub mod refund;
pub mod royalty;
pub mod settle;
pub mod trade;

use serde_json::{Map, Value};

use crate::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::gateway::Params;
use crate::model::{App, Millis};

/// A checked call: the app, the method, its `biz_content` and the other parameters.
#[derive(Debug)]
pub struct Call<'a> {
    /// The calling app.
    pub app: &'a App,
    /// The method.
    pub method: &'a str,
    /// `biz_content`, parsed (empty when absent).
    pub biz: Map<String, Value>,
    /// Every parameter.
    pub params: &'a Params,
    /// `notify_url` of the call.
    pub notify_url: Option<String>,
    /// The sandbox time of the call.
    pub now: Millis,
}

/// Every method the sandbox serves.
pub const METHODS: &[&str] = &[
    "alipay.trade.precreate",
    "alipay.trade.create",
    "alipay.trade.query",
    "alipay.trade.pay",
    "alipay.trade.cancel",
    "alipay.trade.close",
    "alipay.trade.refund",
    "alipay.trade.fastpay.refund.query",
    "alipay.trade.royalty.relation.bind",
    "alipay.trade.royalty.relation.unbind",
    "alipay.trade.royalty.relation.batchquery",
    "alipay.trade.order.settle",
    "alipay.trade.order.settle.query",
    "alipay.trade.order.onsettle.query",
    "alipay.system.oauth.token",
    "alipay.user.info.share",
    "alipay.fund.auth.order.voucher.create",
    "alipay.fund.auth.order.app.freeze",
    "alipay.fund.auth.order.unfreeze",
    "alipay.fund.auth.operation.detail.query",
    "alipay.user.agreement.query",
    "zoloz.authentication.smilepay.initialize",
    "zoloz.authentication.customer.ftoken.query",
    "alipay.open.app.alipaycert.download",
    "alipay.data.dataservice.bill.downloadurl.query",
];

/// True when the gateway serves `method`.
pub fn is_known(method: &str) -> bool {
    METHODS.contains(&method)
}

/// Runs one call.
pub fn dispatch(ctx: &Ctx, call: &Call<'_>) -> ApiResult {
    let mut store = ctx.store();
    let result = match call.method {
        "alipay.trade.precreate" => trade::precreate(ctx, &mut store, call),
        "alipay.trade.create" => trade::create(ctx, &mut store, call),
        "alipay.trade.query" => trade::query(ctx, &mut store, call),
        "alipay.trade.pay" => pay::pay(ctx, &mut store, call),
        "alipay.trade.cancel" => cancel::cancel(ctx, &mut store, call),
        "alipay.trade.close" => cancel::close(ctx, &mut store, call),
        "alipay.trade.refund" => refund::refund(ctx, &mut store, call),
        "alipay.trade.fastpay.refund.query" => refund::refund_query(ctx, &mut store, call),
        "alipay.trade.royalty.relation.bind" => royalty::bind(ctx, &mut store, call),
        "alipay.trade.royalty.relation.unbind" => royalty::unbind(ctx, &mut store, call),
        "alipay.trade.royalty.relation.batchquery" => royalty::batch_query(ctx, &mut store, call),
        "alipay.trade.order.settle" => settle::settle(ctx, &mut store, call),
        "alipay.trade.order.settle.query" => settle::settle_query(ctx, &mut store, call),
        "alipay.trade.order.onsettle.query" => settle::onsettle_query(ctx, &mut store, call),
        "alipay.system.oauth.token" => oauth::token(ctx, &mut store, call),
        "alipay.user.info.share" => oauth::user_info(ctx, &mut store, call),
        "alipay.fund.auth.order.voucher.create" => fund_auth::voucher_create(ctx, &mut store, call),
        "alipay.fund.auth.order.app.freeze" => fund_auth::app_freeze(ctx, &mut store, call),
        "alipay.fund.auth.order.unfreeze" => fund_auth::unfreeze(ctx, &mut store, call),
        "alipay.fund.auth.operation.detail.query" => fund_auth::detail_query(ctx, &mut store, call),
        "alipay.user.agreement.query" => agreement::query(ctx, &mut store, call),
        "zoloz.authentication.smilepay.initialize" => face::initialize(ctx, &mut store, call),
        "zoloz.authentication.customer.ftoken.query" => face::ftoken_query(ctx, &mut store, call),
        "alipay.open.app.alipaycert.download" => alipaycert::download(ctx, call),
        "alipay.data.dataservice.bill.downloadurl.query" => {
            bill::download_url_query(ctx, &mut store, call)
        }
        _ => Err(ApiError::invalid("isv.invalid-method", "不存在的方法名")),
    };
    store.flush();
    result
}
