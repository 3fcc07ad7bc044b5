//! Topic naming rules, the same as Kafka's so that names move freely between them.

use crate::error::CoreError;

/// Longest topic name accepted (Kafka's limit, leaving room in file names).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// Accepts names of 1..=249 ASCII letters, digits, '.', '_' and '-', except "." and "..".
pub fn validate_topic_name(name: &str) -> Result<(), CoreError> {
    let fail = |reason| {
        Err(CoreError::InvalidTopicName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return fail("empty");
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return fail("longer than 249 characters");
    }
    if name == "." || name == ".." {
        return fail("'.' and '..' are reserved");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return fail("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_naming_rules_hold() {
        for ok in ["a", "orders", "my.topic_v2-x", &"x".repeat(249)] {
            assert!(validate_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "bad topic!", "a/b", "é", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }
}
