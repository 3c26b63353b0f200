//! `alipay.data.dataservice.bill.downloadurl.query` (§3.9): checks the bill type and date,
//! renders the bill of the calling app, and answers a URL that works for 30 seconds.
//!
//! Errors follow the spec's list (no `ACQ.` prefix, `40004`): `INVAILID_ARGUMENTS` (sic) for a
//! malformed request or a future date, `BILL_NOT_EXIST` for a period that has not ended yet
//! (today, T+1), `TYPE_NOT_SUPPORTED` for bill types the sandbox does not make.

use serde_json::{Map, Value};
use time::{Date, Duration, Month, OffsetDateTime, Time};

use super::Call;
use crate::Ctx;
use crate::bill::render::{self, BillKind, Period};
use crate::clock::to_datetime;
use crate::error::{ApiError, ApiResult};
use crate::store::Store;

fn invalid() -> ApiError {
    ApiError::business("INVAILID_ARGUMENTS", "入参不合法")
}

fn digits(s: &str, len: usize) -> Option<u32> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// A `yyyy-MM-dd` day that exists in the calendar.
pub fn parse_day(text: &str) -> Option<Date> {
    let mut parts = text.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let month = Month::try_from(u8::try_from(digits(m, 2)?).ok()?).ok()?;
    Date::from_calendar_date(
        i32::try_from(digits(y, 4)?).ok()?,
        month,
        u8::try_from(digits(d, 2)?).ok()?,
    )
    .ok()
}

fn parse_month(text: &str) -> Option<Date> {
    let (y, m) = text.split_once('-')?;
    let month = Month::try_from(u8::try_from(digits(m, 2)?).ok()?).ok()?;
    Date::from_calendar_date(i32::try_from(digits(y, 4)?).ok()?, month, 1).ok()
}

fn beijing_midnight(d: Date) -> OffsetDateTime {
    d.with_time(Time::MIDNIGHT)
        .assume_offset(alipay::time::BEIJING)
}

/// The period a `bill_date` names, or `None` when it is malformed.
pub fn period_of(bill_date: &str) -> Option<Period> {
    if let Some(day) = parse_day(bill_date) {
        let start = beijing_midnight(day);
        return Some(Period {
            label: format!("{}{:02}{:02}", day.year(), u8::from(day.month()), day.day()),
            start,
            end: start + Duration::days(1),
        });
    }
    let first = parse_month(bill_date)?;
    let next = match first.month() {
        Month::December => Date::from_calendar_date(first.year() + 1, Month::January, 1).ok()?,
        m => Date::from_calendar_date(first.year(), m.next(), 1).ok()?,
    };
    Some(Period {
        label: format!("{}{:02}", first.year(), u8::from(first.month())),
        start: beijing_midnight(first),
        end: beijing_midnight(next),
    })
}

/// The handler.
pub fn download_url_query(ctx: &Ctx, store: &mut Store, call: &Call<'_>) -> ApiResult {
    let text = |name| call.biz.get(name).and_then(Value::as_str).unwrap_or("");
    let kind = match text("bill_type") {
        "trade" => BillKind::Trade,
        "signcustomer" => BillKind::SignCustomer,
        "merchant_act" | "trade_zft_merchant" | "zft_acc" => {
            return Err(ApiError::business("TYPE_NOT_SUPPORTED", "账单类型不支持"));
        }
        _ => return Err(invalid()),
    };
    let period = period_of(text("bill_date")).ok_or_else(invalid)?;
    let now = to_datetime(call.now);
    if period.end > now {
        // Today's (this month's) bill does not exist yet; a future date is a bad argument.
        return Err(if period.start <= now {
            ApiError::business("BILL_NOT_EXIST", "账单不存在")
        } else {
            invalid()
        });
    }
    let diffs = ctx.bills.differences_of(&call.app.app_id);
    let bill = render::render(store, call.app, kind, &period, &diffs, call.now).map_err(|e| {
        tracing::error!(error = %e, "bill rendering failed");
        ApiError::unknown()
    })?;
    let token = ctx.bills.issue(bill.file_name, bill.bytes, call.now);
    let mut out = Map::new();
    out.insert(
        "bill_download_url".into(),
        Value::String(format!("{}/bill/download/{token}", ctx.base_url)),
    );
    if bill.empty {
        out.insert(
            "bill_file_code".into(),
            Value::String("EMPTY_DATA_WITH_BILL_FILE".into()),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bill_dates_are_checked_against_the_calendar() {
        assert!(parse_day("2019-09-16").is_some());
        assert!(parse_day("2019-02-29").is_none());
        assert!(parse_day("2020-02-29").is_some());
        assert!(parse_day("2019-9-16").is_none());
        assert!(parse_day("20190916").is_none());
        assert!(parse_day("2019-09-16-01").is_none());
        let p = period_of("2019-12").unwrap();
        assert_eq!(p.label, "201912");
        assert_eq!(p.end - p.start, Duration::days(31));
        assert_eq!(period_of("2019-09-16").unwrap().label, "20190916");
        assert!(period_of("2019-13").is_none());
        assert!(period_of("yesterday").is_none());
    }
}
