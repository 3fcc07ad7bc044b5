//! Topic naming rules, the same as Kafka's so that names move freely between them.

use crate::error::CoreError;

/// Longest topic name accepted (Kafka's limit, leaving room in file names).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// RocketMQ's prefix for a group's dead-letter topic, allowed before a valid name.
pub const DLQ_TOPIC_PREFIX: &str = "%DLQ%";

/// The dead-letter topic of a consumer group, as RocketMQ names it.
pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_TOPIC_PREFIX}{group}")
}

/// Accepts names of 1..=249 ASCII letters, digits, '.', '_' and '-', except "." and
/// "..", optionally after the prefix RocketMQ gives dead-letter topics.
pub fn validate_topic_name(name: &str) -> Result<(), CoreError> {
    if let Some(rest) = name.strip_prefix(DLQ_TOPIC_PREFIX) {
        return validate_topic_name(rest).map_err(|_| CoreError::InvalidTopicName {
            name: name.to_string(),
            reason: "a dead-letter topic is %DLQ% followed by a valid topic name",
        });
    }
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

/// Longest consumer group name accepted from RocketMQ clients.
pub const GROUP_NAME_BYTES_MAX: usize = 255;

/// RocketMQ's rule for group names: 1..=255 of ASCII letters, digits, '_', '-', '%', '|'.
pub fn validate_group_name(name: &str) -> Result<(), CoreError> {
    let ok = !name.is_empty()
        && name.len() <= GROUP_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'%' | b'|'));
    if ok {
        Ok(())
    } else {
        Err(CoreError::InvalidGroupId(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_naming_rules_hold() {
        for ok in ["a", "orders", "my.topic_v2-x", &"x".repeat(249)] {
            assert!(validate_topic_name(ok).is_ok(), "{ok}");
        }
        assert!(validate_topic_name("%DLQ%group-1").is_ok());
        for bad in [
            "",
            ".",
            "..",
            "bad topic!",
            "a/b",
            "é",
            &"x".repeat(250),
            "%DLQ%",
            "%x",
        ] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }
}
