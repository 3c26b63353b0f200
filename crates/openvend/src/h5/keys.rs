//! The H5 pages' keys, all derived from one master secret (`h5.secret`, or a file made once in
//! the data folder): one signs OAuth `state` values, one makes the keyed phone index, one
//! seals phone numbers (AES-256-GCM), one hashes SMS codes. Separate keys so that one use can
//! never stand in for another.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::SecureRandom as _;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use crate::ids::hex;

/// The derived keys.
pub struct Keys {
    state: hmac::Key,
    phone_index: hmac::Key,
    sms_code: hmac::Key,
    seal: LessSafeKey,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

fn derive(master: &[u8], label: &str) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, master);
    let tag = hmac::sign(&key, label.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// SHA-256 in hex: how session tokens and browser ids are stored.
pub fn sha256_hex(text: &str) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes()).as_ref())
}

impl Keys {
    /// Derives every key from the master secret.
    pub fn from_master(master: &[u8]) -> anyhow::Result<Keys> {
        let seal = UnboundKey::new(&AES_256_GCM, &derive(master, "openvend h5 phone seal v1"))
            .map_err(|_| anyhow::anyhow!("h5.secret: cannot make the phone-sealing key"))?;
        Ok(Keys {
            state: hmac::Key::new(
                hmac::HMAC_SHA256,
                &derive(master, "openvend h5 oauth state v1"),
            ),
            phone_index: hmac::Key::new(
                hmac::HMAC_SHA256,
                &derive(master, "openvend h5 phone index v1"),
            ),
            sms_code: hmac::Key::new(
                hmac::HMAC_SHA256,
                &derive(master, "openvend h5 sms code v1"),
            ),
            seal: LessSafeKey::new(seal),
        })
    }

    /// The MAC binding a state nonce to a browser id (URL-safe, 22 characters).
    pub fn state_mac(&self, nonce: &str, browser: &str) -> String {
        let tag = hmac::sign(&self.state, format!("{nonce}|{browser}").as_bytes());
        URL_SAFE_NO_PAD.encode(&tag.as_ref()[..16])
    }

    /// True when `mac` is the state MAC of (nonce, browser); compared in constant time.
    pub fn state_mac_ok(&self, nonce: &str, browser: &str, mac: &str) -> bool {
        let want = self.state_mac(nonce, browser);
        aws_lc_rs::constant_time::verify_slices_are_equal(want.as_bytes(), mac.as_bytes()).is_ok()
    }

    /// The lookup key of a normalised phone number.
    pub fn phone_index(&self, phone: &str) -> String {
        hex(hmac::sign(&self.phone_index, phone.as_bytes()).as_ref())
    }

    /// The stored form of an SMS code, bound to its phone and its row.
    pub fn code_hash(&self, phone_index: &str, code: &str) -> String {
        hex(hmac::sign(&self.sms_code, format!("{phone_index}|{code}").as_bytes()).as_ref())
    }

    /// Encrypts a phone number: base64(nonce ‖ ciphertext ‖ tag).
    pub fn seal(&self, phone: &str) -> anyhow::Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| anyhow::anyhow!("no randomness for a nonce"))?;
        let mut data = phone.as_bytes().to_vec();
        self.seal
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
            .map_err(|_| anyhow::anyhow!("cannot seal"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(STANDARD.encode(out))
    }

    /// Decrypts what [`Keys::seal`] made; `None` when it was not made with this key.
    pub fn open(&self, sealed: &str) -> Option<String> {
        let raw = STANDARD.decode(sealed).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = rest.to_vec();
        let plain = self
            .seal
            .open_in_place(nonce, Aad::empty(), &mut data)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_phones_open_only_with_their_key_and_never_repeat() {
        let k = Keys::from_master(b"0123456789abcdef0123456789abcdef").unwrap();
        let a = k.seal("13800000000").unwrap();
        let b = k.seal("13800000000").unwrap();
        assert_ne!(a, b, "a fresh nonce each time");
        assert_eq!(k.open(&a).as_deref(), Some("13800000000"));
        let other = Keys::from_master(b"another secret of 32 characters!").unwrap();
        assert_eq!(other.open(&a), None);
        assert_eq!(k.open("not base64 at all!"), None);
    }

    #[test]
    fn state_macs_bind_the_browser() {
        let k = Keys::from_master(b"0123456789abcdef0123456789abcdef").unwrap();
        let mac = k.state_mac("n1", "browser-a");
        assert!(k.state_mac_ok("n1", "browser-a", &mac));
        assert!(!k.state_mac_ok("n1", "browser-b", &mac));
        assert!(!k.state_mac_ok("n2", "browser-a", &mac));
        assert_eq!(k.phone_index("13800000000"), k.phone_index("13800000000"));
        assert_ne!(k.phone_index("13800000000"), k.phone_index("13800000001"));
    }
}
