//! Face payment (刷脸付) server calls: initialise a face session for a device and, optionally,
//! identify the person behind an ftoken (§6). Paying with the ftoken is [`super::trade::Pay::face`].

use serde::{Deserialize, Serialize};

use super::checks::validate_ftoken;
use crate::request::ApiRequest;

/// `ext_info` of the initialise call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InitExtInfo {
    /// Business type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub biz_type: Option<String>,
}

/// `machine_info` of the initialise call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MachineInfo {
    /// Camera driver version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub camera_drive_ver: Option<String>,
    /// Camera model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub camera_model: Option<String>,
    /// Camera name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub camera_name: Option<String>,
    /// Camera version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub camera_ver: Option<String>,
    /// Extra data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ext: Option<String>,
    /// Machine code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_code: Option<String>,
    /// Machine model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_model: Option<String>,
    /// Machine version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_ver: Option<String>,
}

/// `merchant_info` of the initialise call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MerchantInfo {
    /// Area code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub area_code: Option<String>,
    /// Brand code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brand_code: Option<String>,
    /// Device MAC address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_mac: Option<String>,
    /// Device number (the SDK `deviceNum`; use it as the payment's `terminal_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_num: Option<String>,
    /// Location.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geo: Option<String>,
    /// Group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Merchant id (`2088…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant_id: Option<String>,
    /// ISV partner id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner_id: Option<String>,
    /// Store code (use it as the payment's `store_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_code: Option<String>,
    /// Wi-Fi MAC address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wifimac: Option<String>,
    /// Wi-Fi name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wifiname: Option<String>,
}

/// `zoloz.authentication.smilepay.initialize`: start a face session from the device's
/// `metaInfo`. The answer's `zim_id` and `zim_init_client_data` go back to the device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SmilepayInitialize {
    /// `apdidToken` of metaInfo.
    pub apdid_token: String,
    /// `appName`.
    pub app_name: String,
    /// `appVersion`.
    pub app_version: String,
    /// Base version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_ver: Option<String>,
    /// `bioMetaInfo`.
    pub bio_meta_info: String,
    /// `deviceModel`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_model: Option<String>,
    /// `deviceType`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    /// `osVersion`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// `zimVer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zim_ver: Option<String>,
    /// Remote log id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_log_id: Option<String>,
    /// Extra info.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ext_info: Option<InitExtInfo>,
    /// Camera and machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_info: Option<MachineInfo>,
    /// Merchant and store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant_info: Option<MerchantInfo>,
}

impl ApiRequest for SmilepayInitialize {
    const METHOD: &'static str = "zoloz.authentication.smilepay.initialize";
    type Response = SmilepayInitializeResponse;
    fn validate(&self) -> Result<(), String> {
        for (field, value) in [
            ("apdid_token", &self.apdid_token),
            ("app_name", &self.app_name),
            ("app_version", &self.app_version),
            ("bio_meta_info", &self.bio_meta_info),
        ] {
            if value.is_empty() {
                return Err(format!("{field} is required (from the device's metaInfo)"));
            }
        }
        Ok(())
    }
}

/// Answer to `zoloz.authentication.smilepay.initialize`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SmilepayInitializeResponse {
    /// Face session id, for the device.
    pub zim_id: Option<String>,
    /// Client data, for the device.
    pub zim_init_client_data: Option<String>,
    /// Detailed return code.
    pub ret_code_sub: Option<String>,
    /// Detailed return message.
    pub ret_message_sub: Option<String>,
}

/// `ext_info` of the ftoken query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FtokenExtInfo {
    /// Query type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_type: Option<String>,
    /// Minimum age for the age check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_age: Option<String>,
    /// Maximum age for the age check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

/// `zoloz.authentication.customer.ftoken.query`: who is behind an ftoken (not needed to pay).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FtokenQuery {
    /// The face token (`fp…`).
    pub ftoken: String,
    /// `1` 1:1 verification, `2` 1:N by Alipay uid, `3` 1:N by phone, `4` phone + face.
    pub biz_type: String,
    /// Face session id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zim_id: Option<String>,
    /// Query extras.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ext_info: Option<FtokenExtInfo>,
}

impl ApiRequest for FtokenQuery {
    const METHOD: &'static str = "zoloz.authentication.customer.ftoken.query";
    type Response = FtokenQueryResponse;
    const READ_ONLY: bool = true;
    fn validate(&self) -> Result<(), String> {
        validate_ftoken("ftoken", &self.ftoken)?;
        if !matches!(self.biz_type.as_str(), "1" | "2" | "3" | "4") {
            return Err("biz_type must be \"1\", \"2\", \"3\" or \"4\"".into());
        }
        Ok(())
    }
}

/// One user of a phone-number match.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UidTelPair {
    /// User id.
    pub user_id: Option<String>,
    /// Open id.
    pub open_id: Option<String>,
}

/// Answer to `zoloz.authentication.customer.ftoken.query`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FtokenQueryResponse {
    /// Alipay user id.
    pub uid: Option<String>,
    /// Open id.
    pub open_id: Option<String>,
    /// Certificate number (masked).
    pub cert_no: Option<String>,
    /// Certificate name.
    pub cert_name: Option<String>,
    /// Face id.
    pub face_id: Option<String>,
    /// Result of the age check.
    pub age_check_result: Option<String>,
    /// Users matching a phone number.
    #[serde(default)]
    pub uid_tel_pair_list: Vec<UidTelPair>,
}
