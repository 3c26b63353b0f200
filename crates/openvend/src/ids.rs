//! Random identifiers and secrets from the system CSPRNG.

use aws_lc_rs::rand::SecureRandom as _;

/// `len` random lowercase hex characters.
pub fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len.div_ceil(2)];
    // The system RNG does not fail on supported platforms; a failure would leave zeros, which
    // callers that need uniqueness also back with a unique column.
    let _ = aws_lc_rs::rand::SystemRandom::new().fill(&mut bytes);
    let mut out = hex(&bytes);
    out.truncate(len);
    out
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
