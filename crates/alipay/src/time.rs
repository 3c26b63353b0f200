//! Beijing time (UTC+8), the zone of every Alipay timestamp (`yyyy-MM-dd HH:mm:ss`).

use time::format_description::FormatItem;
use time::macros::{format_description, offset};
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// Alipay's time zone.
pub const BEIJING: UtcOffset = offset!(+8);

const FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");

/// Formats an instant as Alipay's `yyyy-MM-dd HH:mm:ss` in Beijing time.
pub fn format_timestamp(at: OffsetDateTime) -> String {
    at.to_offset(BEIJING).format(FORMAT).unwrap_or_default()
}

/// Parses Alipay's `yyyy-MM-dd HH:mm:ss` (Beijing time); also accepts a `.SSS` millisecond tail,
/// which some refund times carry.
pub fn parse_timestamp(text: &str) -> Option<OffsetDateTime> {
    let main = text.split_once('.').map_or(text, |(m, _)| m);
    PrimitiveDateTime::parse(main, FORMAT)
        .ok()
        .map(|p| p.assume_offset(BEIJING))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_beijing_time() {
        let t = parse_timestamp("2014-07-24 03:07:50").unwrap();
        assert_eq!(t.unix_timestamp(), 1406142470);
        assert_eq!(format_timestamp(t), "2014-07-24 03:07:50");
        assert_eq!(
            format_timestamp(OffsetDateTime::UNIX_EPOCH),
            "1970-01-01 08:00:00"
        );
        assert!(parse_timestamp("2014-07-24T03:07:50").is_none());
        assert!(parse_timestamp("2023-06-01 17:35:26.123").is_some());
    }
}
