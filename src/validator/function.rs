//! In-process validators that run inline (`kind = "function"`): checks so
//! cheap that handing them to another thread would cost more than running
//! them.

use async_trait::async_trait;
use regex::bytes::Regex;

use super::spec::Field;
use super::{Peer, Validator, Verdict};

/// `function = "max_bytes"`: the value is at most `max` bytes.
#[derive(Debug)]
pub struct MaxBytes {
    pub max: u64,
}

impl MaxBytes {
    fn judge(&self, _name: &[u8], value: &[u8]) -> Verdict {
        if value.len() as u64 <= self.max {
            Verdict::Allow
        } else {
            Verdict::Deny
        }
    }
}

#[async_trait]
impl Validator for MaxBytes {
    async fn validate(&self, name: &[u8], value: &[u8], _peer: &Peer) -> Verdict {
        self.judge(name, value)
    }

    fn check_now(&self, name: &[u8], value: &[u8], _peer: &Peer) -> Option<Verdict> {
        Some(self.judge(name, value))
    }

    fn describe(&self) -> String {
        format!("max_bytes {}", self.max)
    }
}

/// `function = "regex"`: the name or value contains a match of the pattern
/// (matched on bytes, so non-UTF-8 input is fine; anchor with `^` and `$`).
#[derive(Debug)]
pub struct RegexMatch {
    field: Field,
    regex: Regex,
}

impl RegexMatch {
    pub fn new(field: Field, pattern: &str) -> Result<RegexMatch, regex::Error> {
        Ok(RegexMatch {
            field,
            regex: Regex::new(pattern)?,
        })
    }
}

impl RegexMatch {
    fn judge(&self, name: &[u8], value: &[u8]) -> Verdict {
        let subject = match self.field {
            Field::Name => name,
            Field::Value => value,
        };
        if self.regex.is_match(subject) {
            Verdict::Allow
        } else {
            Verdict::Deny
        }
    }
}

#[async_trait]
impl Validator for RegexMatch {
    async fn validate(&self, name: &[u8], value: &[u8], _peer: &Peer) -> Verdict {
        self.judge(name, value)
    }

    fn check_now(&self, name: &[u8], value: &[u8], _peer: &Peer) -> Option<Verdict> {
        Some(self.judge(name, value))
    }

    fn describe(&self) -> String {
        let field = match self.field {
            Field::Name => "name",
            Field::Value => "value",
        };
        format!("regex {field} {}", self.regex.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn max_bytes_allows_up_to_the_limit() {
        let v = MaxBytes { max: 3 };
        assert_eq!(
            v.validate(b"n", b"abc", &Peer::default()).await,
            Verdict::Allow
        );
        assert_eq!(
            v.validate(b"n", b"abcd", &Peer::default()).await,
            Verdict::Deny
        );
    }

    #[tokio::test]
    async fn regex_matches_the_chosen_field_on_bytes() {
        let v = RegexMatch::new(Field::Name, "^[a-z]+$").unwrap();
        assert_eq!(
            v.validate(b"abc", b"ANY", &Peer::default()).await,
            Verdict::Allow
        );
        assert_eq!(
            v.validate(b"aBc", b"any", &Peer::default()).await,
            Verdict::Deny
        );
        let v = RegexMatch::new(Field::Value, r"(?-u)\xff").unwrap();
        assert_eq!(
            v.validate(b"n", b"a\xffb", &Peer::default()).await,
            Verdict::Allow
        );
        assert_eq!(
            v.validate(b"\xff", b"ab", &Peer::default()).await,
            Verdict::Deny
        );
    }
}
