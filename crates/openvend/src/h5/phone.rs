//! Mainland China mobile numbers: parsed once into [`Phone`] (11 digits, `1[3-9]` then 9
//! digits), accepting the usual ways people type them (spaces, dashes, a `+86`/`86` prefix),
//! and shown masked (`138****0000`) everywhere but to their owner.

use std::fmt;

/// A valid mainland mobile number, normalised to its 11 digits.
#[derive(Clone, PartialEq, Eq)]
pub struct Phone(String);

/// Why a number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a mainland China mobile number (11 digits starting 13–19)")]
pub struct BadPhone(String);

impl Phone {
    /// Parses what a person typed.
    pub fn parse(input: &str) -> Result<Phone, BadPhone> {
        let shown: String = input.chars().take(32).collect();
        let digits: String = input
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-'))
            .collect();
        let digits = digits
            .strip_prefix("+86")
            .or_else(|| {
                (digits.len() == 13)
                    .then(|| digits.strip_prefix("86"))
                    .flatten()
            })
            .unwrap_or(&digits);
        let b = digits.as_bytes();
        let ok = b.len() == 11
            && b.iter().all(u8::is_ascii_digit)
            && b[0] == b'1'
            && (b'3'..=b'9').contains(&b[1]);
        if ok {
            Ok(Phone(digits.to_owned()))
        } else {
            Err(BadPhone(shown))
        }
    }

    /// The 11 digits (for the carrier and the owner only).
    pub fn digits(&self) -> &str {
        &self.0
    }

    /// `138****0000`.
    pub fn masked(&self) -> String {
        format!("{}****{}", &self.0[..3], &self.0[7..])
    }
}

/// Never prints the number in full.
impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({})", self.masked())
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mainland_mobiles_are_accepted_in_the_usual_spellings() {
        for input in [
            "13800000000",
            " 138 0000 0000 ",
            "138-0000-0000",
            "+8613800000000",
            "8613800000000",
        ] {
            assert_eq!(
                Phone::parse(input).unwrap().digits(),
                "13800000000",
                "{input}"
            );
        }
        assert_eq!(Phone::parse("19912345678").unwrap().masked(), "199****5678");
    }

    #[test]
    fn other_numbers_are_refused() {
        for input in [
            "",
            "12800000000",
            "10086",
            "1380000000",
            "138000000001",
            "+1 415 555 0100",
            "1380000000a",
            "１３８００００００００",
            "+85213800000000",
        ] {
            assert!(Phone::parse(input).is_err(), "{input}");
        }
    }

    #[test]
    fn debug_and_display_are_masked() {
        let p = Phone::parse("13812345678").unwrap();
        assert_eq!(format!("{p} {p:?}"), "138****5678 Phone(138****5678)");
    }
}
