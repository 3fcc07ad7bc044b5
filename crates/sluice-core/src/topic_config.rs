//! Topic settings, named as Kafka names them, with their defaults and validation.

use std::collections::BTreeMap;

use sluice_storage::config::SEGMENT_BYTES_MIN;
use sluice_storage::{FlushPolicy, LogConfig};

use crate::error::CoreError;

/// Topic config keys Sluice understands, in the order they are described.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    "cleanup.policy",
    "flush.bytes",
    "flush.ms",
    "flush.policy",
    "max.message.bytes",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
];

/// Accepted segment sizes: index positions are 32-bit.
pub const SEGMENT_BYTES_RANGE: std::ops::RangeInclusive<u64> =
    SEGMENT_BYTES_MIN..=(i32::MAX as u64);

/// One described config entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: &'static str,
    pub value: String,
    /// True when the topic overrides the broker default.
    pub is_override: bool,
}

/// A topic's explicit settings; everything else comes from the broker defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopicConfig {
    pub overrides: BTreeMap<String, String>,
}

fn parse_i64(key: &str, value: &str, min: i64) -> Result<i64, CoreError> {
    let v: i64 = value
        .trim()
        .parse()
        .map_err(|_| CoreError::InvalidConfig(format!("{key}={value:?} is not an integer")))?;
    if v < min {
        return Err(CoreError::InvalidConfig(format!(
            "{key}={v} is below the minimum {min}"
        )));
    }
    Ok(v)
}

/// Checks one key and value; returns the normalised value.
pub fn validate_entry(key: &str, value: &str) -> Result<String, CoreError> {
    let normalised = match key {
        "retention.ms" | "retention.bytes" => parse_i64(key, value, -1)?.to_string(),
        "segment.bytes" => {
            let v = parse_i64(key, value, SEGMENT_BYTES_MIN as i64)?;
            if v > i64::from(i32::MAX) {
                return Err(CoreError::InvalidConfig(format!(
                    "{key}={v} exceeds 2^31-1"
                )));
            }
            v.to_string()
        }
        "segment.ms" | "flush.ms" => parse_i64(key, value, 1)?.to_string(),
        "flush.bytes" => parse_i64(key, value, 1)?.to_string(),
        "max.message.bytes" => {
            let v = parse_i64(key, value, 0)?;
            if v > i64::from(i32::MAX) {
                return Err(CoreError::InvalidConfig(format!(
                    "{key}={v} exceeds 2^31-1"
                )));
            }
            v.to_string()
        }
        "flush.policy" => match value.trim() {
            "always" | "interval" | "os" => value.trim().to_string(),
            other => {
                return Err(CoreError::InvalidConfig(format!(
                    "flush.policy={other:?}: expected always, interval or os"
                )))
            }
        },
        "cleanup.policy" => match value.trim() {
            "delete" => "delete".to_string(),
            "compact" | "compact,delete" | "delete,compact" => {
                return Err(CoreError::InvalidConfig(
                    "cleanup.policy=compact is not supported yet; only delete".to_string(),
                ))
            }
            other => {
                return Err(CoreError::InvalidConfig(format!(
                    "cleanup.policy={other:?}: expected delete"
                )))
            }
        },
        other => {
            return Err(CoreError::InvalidConfig(format!(
                "unknown topic config {other:?}"
            )))
        }
    };
    Ok(normalised)
}

/// The broker-wide defaults that topics inherit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDefaults {
    pub log: LogConfig,
}

impl TopicDefaults {
    fn default_value(&self, key: &str) -> String {
        let log = &self.log;
        match key {
            "cleanup.policy" => "delete".into(),
            "flush.bytes" => match log.flush {
                FlushPolicy::Interval { bytes, .. } => bytes.to_string(),
                _ => (64u64 << 20).to_string(),
            },
            "flush.ms" => match log.flush {
                FlushPolicy::Interval { ms, .. } => ms.to_string(),
                _ => "1000".into(),
            },
            "flush.policy" => log.flush.name().into(),
            "max.message.bytes" => log.max_message_bytes.to_string(),
            "retention.bytes" => log.retention_bytes.to_string(),
            "retention.ms" => log.retention_ms.to_string(),
            "segment.bytes" => log.segment_bytes.to_string(),
            "segment.ms" => log.segment_ms.to_string(),
            _ => String::new(),
        }
    }
}

impl TopicConfig {
    /// Builds a config from key/value pairs, validating each.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, CoreError> {
        let mut config = TopicConfig::default();
        for (k, v) in pairs {
            config.set(k, v)?;
        }
        Ok(config)
    }

    /// Sets one override after validating it.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), CoreError> {
        let v = validate_entry(key, value)?;
        self.overrides.insert(key.to_string(), v);
        Ok(())
    }

    /// Removes an override (back to the default).
    pub fn remove(&mut self, key: &str) -> Result<(), CoreError> {
        if !TOPIC_CONFIG_KEYS.contains(&key) {
            return Err(CoreError::InvalidConfig(format!(
                "unknown topic config {key:?}"
            )));
        }
        self.overrides.remove(key);
        Ok(())
    }

    fn value(&self, defaults: &TopicDefaults, key: &str) -> String {
        self.overrides
            .get(key)
            .cloned()
            .unwrap_or_else(|| defaults.default_value(key))
    }

    /// The log settings this topic's partitions run with.
    pub fn log_config(&self, defaults: &TopicDefaults) -> LogConfig {
        let num = |k: &str| -> i64 { self.value(defaults, k).parse().unwrap_or(0) };
        let flush = match self.value(defaults, "flush.policy").as_str() {
            "always" => FlushPolicy::Always,
            "os" => FlushPolicy::Os,
            _ => FlushPolicy::Interval {
                ms: num("flush.ms").max(1) as u64,
                bytes: num("flush.bytes").max(1) as u64,
            },
        };
        LogConfig {
            segment_bytes: num("segment.bytes").max(SEGMENT_BYTES_MIN as i64) as u64,
            segment_ms: num("segment.ms").max(1),
            index_interval_bytes: defaults.log.index_interval_bytes,
            retention_ms: num("retention.ms"),
            retention_bytes: num("retention.bytes"),
            max_message_bytes: num("max.message.bytes").max(0) as usize,
            flush,
        }
    }

    /// Every known config with its effective value.
    pub fn describe(&self, defaults: &TopicDefaults) -> Vec<ConfigEntry> {
        TOPIC_CONFIG_KEYS
            .iter()
            .map(|k| ConfigEntry {
                name: k,
                value: self.value(defaults, k),
                is_override: self.overrides.contains_key(*k),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> TopicDefaults {
        TopicDefaults {
            log: LogConfig::default(),
        }
    }

    #[test]
    fn overrides_shape_the_log_config() {
        let c = TopicConfig::from_pairs([
            ("retention.ms", "1000"),
            ("segment.bytes", "4096"),
            ("flush.policy", "always"),
        ])
        .unwrap();
        let log = c.log_config(&defaults());
        assert_eq!(log.retention_ms, 1000);
        assert_eq!(log.segment_bytes, 4096);
        assert_eq!(log.flush, FlushPolicy::Always);
        let described = c.describe(&defaults());
        let ret = described.iter().find(|e| e.name == "retention.ms").unwrap();
        assert!(ret.is_override);
        assert_eq!(ret.value, "1000");
        let seg_ms = described.iter().find(|e| e.name == "segment.ms").unwrap();
        assert!(!seg_ms.is_override);
    }

    #[test]
    fn invalid_values_and_unknown_keys_are_rejected() {
        for (k, v) in [
            ("retention.ms", "soon"),
            ("segment.bytes", "10"),
            ("flush.policy", "sometimes"),
            ("cleanup.policy", "compact"),
            ("no.such.key", "1"),
        ] {
            assert!(
                matches!(
                    TopicConfig::from_pairs([(k, v)]),
                    Err(CoreError::InvalidConfig(_))
                ),
                "{k}={v}"
            );
        }
    }
}
