//! 分账关系: `alipay.trade.royalty.relation.bind` / `.unbind` / `.batchquery`. A receiver must
//! be bound to the app before `order.settle` may pay it.

use serde_json::{Map, Value, json};

use super::Call;
use super::fields::*;
use crate::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::model::RoyaltyRelation;
use crate::store::Store;

/// Most receivers one bind or unbind call may carry.
const MAX_RECEIVERS: usize = 20;
/// Largest page `batchquery` serves.
const MAX_PAGE_SIZE: i64 = 100;

/// One `receiver_list` entry, checked.
fn read_receiver(app_id: &str, v: &Value) -> Result<RoyaltyRelation, ApiError> {
    let field = |name: &str| {
        v.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let account_type = field("type").ok_or_else(|| ApiError::bad_param("缺少必选参数type"))?;
    let account = field("account").ok_or_else(|| ApiError::bad_param("缺少必选参数account"))?;
    let name = field("name").map(str::to_owned);
    match account_type {
        "userId" if !alipay::types::is_user_id(account) => {
            return Err(ApiError::bad_param(
                "userId类型的account必须为2088开头的16位数字",
            ));
        }
        "loginName" if name.is_none() => {
            return Err(ApiError::bad_param("loginName类型的分账方必须填写name"));
        }
        "userId" | "loginName" | "openId" => {}
        _ => return Err(ApiError::bad_param("type取值userId、loginName或openId")),
    }
    let memo = field("memo").map(str::to_owned);
    if let Some(m) = &memo {
        check_len("memo", m, 200)?;
    }
    Ok(RoyaltyRelation {
        app_id: app_id.to_owned(),
        account_type: account_type.to_owned(),
        account: account.to_owned(),
        name,
        memo,
    })
}

fn read_receivers(call: &Call<'_>) -> Result<Vec<RoyaltyRelation>, ApiError> {
    let out_request_no = req_str(&call.biz, "out_request_no")?;
    check_merchant_no("out_request_no", out_request_no, 64)?;
    let list = call
        .biz
        .get("receiver_list")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| ApiError::bad_param("缺少必选参数receiver_list"))?;
    if list.len() > MAX_RECEIVERS {
        return Err(ApiError::bad_param(format!(
            "receiver_list最多{MAX_RECEIVERS}个"
        )));
    }
    list.iter()
        .map(|v| read_receiver(&call.app.app_id, v))
        .collect()
}

fn success() -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("result_code".into(), "SUCCESS".into());
    out
}

/// `alipay.trade.royalty.relation.bind`. Binding an already bound account succeeds again.
pub fn bind(_ctx: &Ctx, store: &mut Store, call: &Call<'_>) -> ApiResult {
    let receivers = read_receivers(call)?;
    if receivers.iter().any(|r| r.account == call.app.seller_pid) {
        return Err(ApiError::bad_param("分账方不能是商户自己"));
    }
    for r in receivers {
        store.put_relation(r);
    }
    Ok(success())
}

/// `alipay.trade.royalty.relation.unbind`. Unbinding an unknown account succeeds too.
pub fn unbind(_ctx: &Ctx, store: &mut Store, call: &Call<'_>) -> ApiResult {
    for r in read_receivers(call)? {
        store.remove_relation(&r.app_id, &r.account);
    }
    Ok(success())
}

/// A positive integer given as a number or a string, or `default` when absent.
fn page_param(call: &Call<'_>, name: &str, default: i64) -> Result<i64, ApiError> {
    let n = match call.biz.get(name) {
        None | Some(Value::Null) => return Ok(default),
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        Some(_) => None,
    };
    n.filter(|n| *n > 0)
        .ok_or_else(|| ApiError::bad_param(format!("参数{name}必须为正整数")))
}

/// `alipay.trade.royalty.relation.batchquery`: the app's receivers, a page at a time.
pub fn batch_query(_ctx: &Ctx, store: &mut Store, call: &Call<'_>) -> ApiResult {
    let out_request_no = req_str(&call.biz, "out_request_no")?;
    check_merchant_no("out_request_no", out_request_no, 64)?;
    let page_num = page_param(call, "page_num", 1)?;
    let page_size = page_param(call, "page_size", 10)?.min(MAX_PAGE_SIZE);
    let all: Vec<&RoyaltyRelation> = store
        .data
        .relations
        .values()
        .filter(|r| r.app_id == call.app.app_id)
        .collect();
    let total = all.len() as i64;
    let pages = (total + page_size - 1) / page_size;
    let list: Vec<Value> = all
        .iter()
        .skip(((page_num - 1) * page_size) as usize)
        .take(page_size as usize)
        .map(|r| {
            let mut v = json!({ "type": r.account_type, "account": r.account });
            if r.account_type == "loginName" {
                v["login_name"] = r.account.clone().into();
            }
            if let Some(m) = &r.memo {
                v["memo"] = m.clone().into();
            }
            v
        })
        .collect();
    let mut out = success();
    out.insert("receiver_list".into(), list.into());
    out.insert("total_page_num".into(), pages.into());
    out.insert("total_record_num".into(), total.into());
    out.insert("current_page_num".into(), page_num.into());
    out.insert("current_page_size".into(), page_size.into());
    Ok(out)
}
