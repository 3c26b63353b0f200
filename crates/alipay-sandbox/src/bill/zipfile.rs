//! A small zip writer for bill files.
//!
//! Alipay's bill zips name their entries in GBK **without** the UTF-8 flag (general-purpose
//! bit 11), which the `zip` crate cannot write (it sets the flag for any non-ASCII name), so
//! this writes the format directly: per entry a local header and deflated data, then the
//! central directory and the end record. No zip64: an entry or archive over 4 GiB, or more
//! than 65,535 entries, is refused (a sandbox bill never comes close).

use std::io::Write as _;

use flate2::Compression;
use flate2::write::DeflateEncoder;
use time::PrimitiveDateTime;

const LOCAL_HEADER: u32 = 0x0403_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const END_OF_CENTRAL_DIRECTORY: u32 = 0x0605_4b50;
/// 2.0: deflate.
const VERSION: u16 = 20;
/// No flags: in particular bit 11 (names are UTF-8) is clear.
const FLAGS: u16 = 0;
const DEFLATE: u16 = 8;

/// Why an archive could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ZipError {
    /// Compressing failed (an I/O error of the in-memory encoder).
    #[error("deflate: {0}")]
    Deflate(#[from] std::io::Error),
    /// A size or count does not fit the 16/32-bit fields of a plain (non-zip64) archive.
    #[error("too large for a zip without zip64: {0}")]
    TooLarge(&'static str),
}

/// An archive being written in memory.
#[derive(Debug, Default)]
pub struct ZipWriter {
    out: Vec<u8>,
    central: Vec<u8>,
    entries: u16,
}

fn u16_le(v: &mut Vec<u8>, n: u16) {
    v.extend_from_slice(&n.to_le_bytes());
}

fn u32_le(v: &mut Vec<u8>, n: u32) {
    v.extend_from_slice(&n.to_le_bytes());
}

fn fit_u32(n: usize, what: &'static str) -> Result<u32, ZipError> {
    u32::try_from(n).map_err(|_| ZipError::TooLarge(what))
}

/// MS-DOS time and date, as zip headers store them (two-second resolution, 1980–2107).
fn dos_time_date(at: PrimitiveDateTime) -> (u16, u16) {
    let year = at.year().clamp(1980, 2107) as u16;
    let time =
        (u16::from(at.hour()) << 11) | (u16::from(at.minute()) << 5) | (u16::from(at.second()) / 2);
    let date = ((year - 1980) << 9) | (u16::from(u8::from(at.month())) << 5) | u16::from(at.day());
    (time, date)
}

impl ZipWriter {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a deflated entry. `name` is written as given (raw bytes, no UTF-8 flag).
    pub fn add(
        &mut self,
        name: &[u8],
        data: &[u8],
        modified: PrimitiveDateTime,
    ) -> Result<(), ZipError> {
        let mut encoder = DeflateEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data)?;
        let compressed = encoder.finish()?;
        let crc = crc32fast::hash(data);
        let (time, date) = dos_time_date(modified);
        let name_len = u16::try_from(name.len()).map_err(|_| ZipError::TooLarge("entry name"))?;
        let csize = fit_u32(compressed.len(), "compressed entry")?;
        let usize_ = fit_u32(data.len(), "entry")?;
        let offset = fit_u32(self.out.len(), "archive")?;
        self.entries = self
            .entries
            .checked_add(1)
            .ok_or(ZipError::TooLarge("entry count"))?;

        // Fields shared by the local and the central header, from "version needed" on.
        let mut common = Vec::with_capacity(26);
        u16_le(&mut common, VERSION);
        u16_le(&mut common, FLAGS);
        u16_le(&mut common, DEFLATE);
        u16_le(&mut common, time);
        u16_le(&mut common, date);
        u32_le(&mut common, crc);
        u32_le(&mut common, csize);
        u32_le(&mut common, usize_);
        u16_le(&mut common, name_len);
        u16_le(&mut common, 0); // extra field length

        u32_le(&mut self.out, LOCAL_HEADER);
        self.out.extend_from_slice(&common);
        self.out.extend_from_slice(name);
        self.out.extend_from_slice(&compressed);

        u32_le(&mut self.central, CENTRAL_HEADER);
        u16_le(&mut self.central, VERSION); // made by: MS-DOS, 2.0
        self.central.extend_from_slice(&common);
        u16_le(&mut self.central, 0); // comment length
        u16_le(&mut self.central, 0); // disk number
        u16_le(&mut self.central, 0); // internal attributes
        u32_le(&mut self.central, 0); // external attributes
        u32_le(&mut self.central, offset);
        self.central.extend_from_slice(name);
        fit_u32(self.out.len(), "archive")?;
        Ok(())
    }

    /// Appends the central directory and the end record; returns the archive.
    pub fn finish(mut self) -> Result<Vec<u8>, ZipError> {
        let cd_offset = fit_u32(self.out.len(), "archive")?;
        let cd_size = fit_u32(self.central.len(), "central directory")?;
        self.out.extend_from_slice(&self.central);
        fit_u32(self.out.len(), "archive")?;
        u32_le(&mut self.out, END_OF_CENTRAL_DIRECTORY);
        u16_le(&mut self.out, 0); // this disk
        u16_le(&mut self.out, 0); // disk of the central directory
        u16_le(&mut self.out, self.entries);
        u16_le(&mut self.out, self.entries);
        u32_le(&mut self.out, cd_size);
        u32_le(&mut self.out, cd_offset);
        u16_le(&mut self.out, 0); // comment length
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use time::macros::datetime;

    use super::*;

    fn gbk(s: &str) -> Vec<u8> {
        encoding_rs::GBK.encode(s).0.into_owned()
    }

    fn sample() -> Vec<u8> {
        let mut w = ZipWriter::new();
        let at = datetime!(2019-09-17 05:46:49);
        w.add(
            &gbk("20880211096256330156_20190916_业务明细.csv"),
            &gbk("#支付宝业务明细查询\r\n").repeat(50),
            at,
        )
        .unwrap();
        w.add(
            &gbk("20880211096256330156_20190916_业务明细(汇总).csv"),
            b"",
            at,
        )
        .unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn the_zip_crate_reads_names_as_gbk_bytes_and_contents_back() {
        let bytes = sample();
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(archive.len(), 2);
        let name = archive.by_index_raw(0).unwrap().name_raw().to_vec();
        assert_eq!(name, gbk("20880211096256330156_20190916_业务明细.csv"));
        let mut text = Vec::new();
        archive.by_index(0).unwrap().read_to_end(&mut text).unwrap();
        assert_eq!(text, gbk("#支付宝业务明细查询\r\n").repeat(50));
        let mut empty = Vec::new();
        archive
            .by_index(1)
            .unwrap()
            .read_to_end(&mut empty)
            .unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn no_header_sets_the_utf8_flag() {
        let bytes = sample();
        let mut checked = 0;
        for (i, w) in bytes.windows(4).enumerate() {
            let sig = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            // Flags sit at offset 6 of a local header and 8 of a central one.
            let flags_at = match sig {
                LOCAL_HEADER => i + 6,
                CENTRAL_HEADER => i + 8,
                _ => continue,
            };
            let flags = u16::from_le_bytes([bytes[flags_at], bytes[flags_at + 1]]);
            assert_eq!(flags & (1 << 11), 0);
            checked += 1;
        }
        assert_eq!(checked, 4);
    }

    #[test]
    fn dos_times_pack_as_the_format_says() {
        let (time, date) = dos_time_date(datetime!(2019-09-17 05:46:49));
        assert_eq!(time, (5 << 11) | (46 << 5) | 24);
        assert_eq!(date, (39 << 9) | (9 << 5) | 17);
    }
}
