//! `alipay.data.dataservice.bill.downloadurl.query`: the short-lived URL of a daily or monthly
//! bill (§3.9). Downloading and reading the file is [`crate::bill`].

use serde::{Deserialize, Serialize};

use crate::request::ApiRequest;

/// Which bill (`bill_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillType {
    /// 收单业务账单: the trade bill used for reconciliation.
    Trade,
    /// Account fund-movement ledger.
    Signcustomer,
    /// Merchant activity bill.
    MerchantAct,
    /// 直付通 merchant trade bill (needs `smid`).
    TradeZftMerchant,
    /// 直付通 account bill.
    ZftAcc,
}

/// `alipay.data.dataservice.bill.downloadurl.query`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BillDownloadUrlQuery {
    /// Bill type.
    pub bill_type: BillType,
    /// `yyyy-MM-dd` (daily) or `yyyy-MM` (monthly); never today (T+1).
    pub bill_date: String,
    /// Sub-merchant id (`trade_zft_merchant`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smid: Option<String>,
    /// `"true"` asks for an https link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure: Option<String>,
}

impl BillDownloadUrlQuery {
    /// The daily trade bill of `date` (`yyyy-MM-dd`), over https.
    pub fn trade_daily(date: impl Into<String>) -> Self {
        BillDownloadUrlQuery {
            bill_type: BillType::Trade,
            bill_date: date.into(),
            smid: None,
            secure: Some("true".into()),
        }
    }
}

/// True for `yyyy-MM-dd` or `yyyy-MM` with plausible month and day numbers.
fn is_bill_date(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let num = |p: &str, len: usize, lo: u32, hi: u32| {
        p.len() == len
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| (lo..=hi).contains(&n))
    };
    match parts.as_slice() {
        [y, m] => num(y, 4, 1990, 9999) && num(m, 2, 1, 12),
        [y, m, d] => num(y, 4, 1990, 9999) && num(m, 2, 1, 12) && num(d, 2, 1, 31),
        _ => false,
    }
}

impl ApiRequest for BillDownloadUrlQuery {
    const METHOD: &'static str = "alipay.data.dataservice.bill.downloadurl.query";
    type Response = BillDownloadUrlResponse;
    const READ_ONLY: bool = true;
    fn validate(&self) -> Result<(), String> {
        if !is_bill_date(&self.bill_date) {
            return Err(format!(
                "bill_date must be yyyy-MM-dd (daily) or yyyy-MM (monthly), not {:?}",
                self.bill_date
            ));
        }
        if self.bill_type == BillType::TradeZftMerchant && self.smid.is_none() {
            return Err("bill_type trade_zft_merchant needs smid".into());
        }
        Ok(())
    }
}

/// Answer to `alipay.data.dataservice.bill.downloadurl.query`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BillDownloadUrlResponse {
    /// Plain-GET URL of the zip; **expires 30 seconds** after issue.
    pub bill_download_url: String,
    /// E.g. `EMPTY_DATA_WITH_BILL_FILE`: no business that day, but an empty file exists.
    pub bill_file_code: Option<String>,
}
