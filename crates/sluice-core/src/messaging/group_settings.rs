//! Per-group consumer settings: consume mode (clustering or broadcast) and the
//! retry policy (deliveries before dead-lettering, back-off announced to clients).
//!
//! Settings are kept durably in the internal log
//! `internal/__sluice_group_settings/0`: every change appends the group's whole
//! settings as one record (key = group name, value = `key=value` lines, no value
//! = the group has no settings any more), fsynced before the change is
//! acknowledged. At start-up the log is read from the beginning and the last
//! record of each group wins. Changes are rare (an operator's command), so the
//! log is not compacted.
//!
//! A group without a setting uses the default: clustering, the broker's
//! `--max-delivery-attempts`, RocketMQ's 16-step customized back-off.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use parking_lot::{Mutex, RwLock};
use sluice_storage::batch::{encode_records, RecordSpec};
use sluice_storage::{PartitionLog, VerifiedBatches};

use crate::error::CoreError;
use crate::messaging::{internal_log_config, replay, RETRY_BACKOFF_MS};
use crate::names::validate_group_name;
use crate::ConfigChange;

/// `clustering` (default: the group's consumers share the messages) or
/// `broadcast` (every consumer receives every message).
pub const KEY_CONSUME_MODE: &str = "consume.mode";
/// Deliveries of a message before it moves to the dead-letter topic.
pub const KEY_MAX_DELIVERY_ATTEMPTS: &str = "max.delivery.attempts";
/// `customized` (default: the steps of `retry.backoff.ms`) or `exponential`.
pub const KEY_RETRY_POLICY: &str = "retry.policy";
/// Customized back-off: one step (ms) per failed attempt, comma-separated.
pub const KEY_RETRY_BACKOFF_MS: &str = "retry.backoff.ms";
/// Exponential back-off: the first wait (ms).
pub const KEY_RETRY_INITIAL_BACKOFF_MS: &str = "retry.initial.backoff.ms";
/// Exponential back-off: the longest wait (ms).
pub const KEY_RETRY_MAX_BACKOFF_MS: &str = "retry.max.backoff.ms";
/// Exponential back-off: the factor between consecutive waits.
pub const KEY_RETRY_BACKOFF_MULTIPLIER: &str = "retry.backoff.multiplier";

/// Every group setting, in the order they are described.
pub const GROUP_SETTING_KEYS: [&str; 7] = [
    KEY_CONSUME_MODE,
    KEY_MAX_DELIVERY_ATTEMPTS,
    KEY_RETRY_POLICY,
    KEY_RETRY_BACKOFF_MS,
    KEY_RETRY_INITIAL_BACKOFF_MS,
    KEY_RETRY_MAX_BACKOFF_MS,
    KEY_RETRY_BACKOFF_MULTIPLIER,
];

/// Groups that may have settings at once; a change giving one more group
/// settings beyond it fails.
pub const GROUPS_WITH_SETTINGS_MAX: usize = 10_000;
/// Range of `max.delivery.attempts`.
pub const MAX_DELIVERY_ATTEMPTS_MAX: u32 = 1000;
/// Steps of `retry.backoff.ms` at most.
pub const RETRY_BACKOFF_STEPS_MAX: usize = 64;
/// Longest back-off step or exponential wait (ms): a client backs off by making
/// the message invisible that long, and RocketMQ allows at most 12 hours.
pub const RETRY_BACKOFF_MS_MAX: i64 = 12 * 3600 * 1000;
/// Range of `retry.backoff.multiplier`.
pub const RETRY_BACKOFF_MULTIPLIER_MIN: f64 = 1.0;
/// See [`RETRY_BACKOFF_MULTIPLIER_MIN`].
pub const RETRY_BACKOFF_MULTIPLIER_MAX: f64 = 10.0;
/// Defaults of the exponential back-off.
pub const DEFAULT_RETRY_INITIAL_BACKOFF_MS: i64 = 1_000;
/// See [`DEFAULT_RETRY_INITIAL_BACKOFF_MS`].
pub const DEFAULT_RETRY_MAX_BACKOFF_MS: i64 = 60_000;
/// See [`DEFAULT_RETRY_INITIAL_BACKOFF_MS`].
pub const DEFAULT_RETRY_BACKOFF_MULTIPLIER: f64 = 2.0;

/// How a group's consumers share messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsumeMode {
    /// Each message goes to one consumer of the group (a shared subscription).
    #[default]
    Clustering,
    /// Each consumer of the group receives every message.
    Broadcast,
}

impl ConsumeMode {
    /// The setting's text.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsumeMode::Clustering => "clustering",
            ConsumeMode::Broadcast => "broadcast",
        }
    }
}

/// Which back-off a group's consumers use between deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetryPolicyKind {
    /// One fixed step per attempt (`retry.backoff.ms`).
    #[default]
    Customized,
    /// initial × multiplier^(attempt-1), capped.
    Exponential,
}

impl RetryPolicyKind {
    /// The setting's text.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryPolicyKind::Customized => "customized",
            RetryPolicyKind::Exponential => "exponential",
        }
    }
}

/// The retry policy in force for a group, announced to its consumers.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryPolicy {
    /// One step (ms) per failed attempt; the last repeats.
    Customized { backoff_ms: Vec<i64> },
    /// `initial_backoff_ms` × `multiplier`^(attempt-1), at most `max_backoff_ms`.
    Exponential {
        initial_backoff_ms: i64,
        max_backoff_ms: i64,
        multiplier: f64,
    },
}

/// Everything in force for a group: its own settings over the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveGroupSettings {
    pub consume_mode: ConsumeMode,
    /// Deliveries before the message moves to `%DLQ%<group>`; at least 1.
    pub max_delivery_attempts: u32,
    pub retry: RetryPolicy,
}

/// One setting as described: its value in force and whether it is the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSettingEntry {
    pub name: &'static str,
    pub value: String,
    pub is_default: bool,
}

/// The settings a group has explicitly; `None` = the default. Every value held
/// here passed validation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupSettings {
    pub consume_mode: Option<ConsumeMode>,
    pub max_delivery_attempts: Option<u32>,
    pub retry_policy: Option<RetryPolicyKind>,
    pub retry_backoff_ms: Option<Vec<i64>>,
    pub retry_initial_backoff_ms: Option<i64>,
    pub retry_max_backoff_ms: Option<i64>,
    pub retry_backoff_multiplier: Option<f64>,
}

fn invalid(key: &str, value: &str, why: impl std::fmt::Display) -> CoreError {
    CoreError::InvalidConfig(format!("{key}={value:?}: {why}"))
}

fn parse_backoff_ms(key: &str, value: &str, text: &str) -> Result<i64, CoreError> {
    let ms: i64 = text
        .trim()
        .parse()
        .map_err(|_| invalid(key, value, "not a whole number of milliseconds"))?;
    if !(1..=RETRY_BACKOFF_MS_MAX).contains(&ms) {
        return Err(invalid(
            key,
            value,
            format_args!("each back-off must be 1..={RETRY_BACKOFF_MS_MAX} ms"),
        ));
    }
    Ok(ms)
}

impl GroupSettings {
    /// Whether the group has no setting of its own.
    pub fn is_empty(&self) -> bool {
        *self == GroupSettings::default()
    }

    /// Sets one key from its text; an unknown key or a bad value changes nothing.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), CoreError> {
        let v = value.trim();
        match key {
            KEY_CONSUME_MODE => {
                self.consume_mode = Some(match v {
                    "clustering" => ConsumeMode::Clustering,
                    "broadcast" => ConsumeMode::Broadcast,
                    _ => return Err(invalid(key, value, "expected clustering or broadcast")),
                })
            }
            KEY_MAX_DELIVERY_ATTEMPTS => {
                let n: u32 = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_DELIVERY_ATTEMPTS_MAX).contains(n))
                    .ok_or_else(|| {
                        invalid(
                            key,
                            value,
                            format_args!("expected a whole number 1..={MAX_DELIVERY_ATTEMPTS_MAX}"),
                        )
                    })?;
                self.max_delivery_attempts = Some(n);
            }
            KEY_RETRY_POLICY => {
                self.retry_policy = Some(match v {
                    "customized" => RetryPolicyKind::Customized,
                    "exponential" => RetryPolicyKind::Exponential,
                    _ => return Err(invalid(key, value, "expected customized or exponential")),
                })
            }
            KEY_RETRY_BACKOFF_MS => {
                let parts: Vec<&str> = v.split(',').collect();
                if v.is_empty() || parts.len() > RETRY_BACKOFF_STEPS_MAX {
                    return Err(invalid(
                        key,
                        value,
                        format_args!(
                            "expected 1..={RETRY_BACKOFF_STEPS_MAX} comma-separated back-offs (ms)"
                        ),
                    ));
                }
                let steps = parts
                    .iter()
                    .map(|p| parse_backoff_ms(key, value, p))
                    .collect::<Result<Vec<_>, _>>()?;
                self.retry_backoff_ms = Some(steps);
            }
            KEY_RETRY_INITIAL_BACKOFF_MS => {
                self.retry_initial_backoff_ms = Some(parse_backoff_ms(key, value, v)?)
            }
            KEY_RETRY_MAX_BACKOFF_MS => {
                self.retry_max_backoff_ms = Some(parse_backoff_ms(key, value, v)?)
            }
            KEY_RETRY_BACKOFF_MULTIPLIER => {
                let m: f64 = v
                    .parse()
                    .ok()
                    .filter(|m: &f64| {
                        m.is_finite()
                            && (RETRY_BACKOFF_MULTIPLIER_MIN..=RETRY_BACKOFF_MULTIPLIER_MAX)
                                .contains(m)
                    })
                    .ok_or_else(|| {
                        invalid(
                            key,
                            value,
                            format_args!(
                                "expected a number {RETRY_BACKOFF_MULTIPLIER_MIN:?}..={RETRY_BACKOFF_MULTIPLIER_MAX:?}"
                            ),
                        )
                    })?;
                self.retry_backoff_multiplier = Some(m);
            }
            _ => return Err(unknown_key(key)),
        }
        Ok(())
    }

    /// Reverts one key to its default; an unknown key is an error.
    pub fn delete(&mut self, key: &str) -> Result<(), CoreError> {
        match key {
            KEY_CONSUME_MODE => self.consume_mode = None,
            KEY_MAX_DELIVERY_ATTEMPTS => self.max_delivery_attempts = None,
            KEY_RETRY_POLICY => self.retry_policy = None,
            KEY_RETRY_BACKOFF_MS => self.retry_backoff_ms = None,
            KEY_RETRY_INITIAL_BACKOFF_MS => self.retry_initial_backoff_ms = None,
            KEY_RETRY_MAX_BACKOFF_MS => self.retry_max_backoff_ms = None,
            KEY_RETRY_BACKOFF_MULTIPLIER => self.retry_backoff_multiplier = None,
            _ => return Err(unknown_key(key)),
        }
        Ok(())
    }

    /// The canonical text of a key the group sets explicitly.
    pub fn value(&self, key: &str) -> Option<String> {
        match key {
            KEY_CONSUME_MODE => self.consume_mode.map(|m| m.as_str().to_string()),
            KEY_MAX_DELIVERY_ATTEMPTS => self.max_delivery_attempts.map(|n| n.to_string()),
            KEY_RETRY_POLICY => self.retry_policy.map(|p| p.as_str().to_string()),
            KEY_RETRY_BACKOFF_MS => self.retry_backoff_ms.as_deref().map(join_ms),
            KEY_RETRY_INITIAL_BACKOFF_MS => self.retry_initial_backoff_ms.map(|n| n.to_string()),
            KEY_RETRY_MAX_BACKOFF_MS => self.retry_max_backoff_ms.map(|n| n.to_string()),
            KEY_RETRY_BACKOFF_MULTIPLIER => self.retry_backoff_multiplier.map(|m| format!("{m:?}")),
            _ => None,
        }
    }

    /// These settings over the defaults (`default_max_attempts` is the broker's).
    pub fn effective(&self, default_max_attempts: u32) -> EffectiveGroupSettings {
        let retry = match self.retry_policy.unwrap_or_default() {
            RetryPolicyKind::Customized => RetryPolicy::Customized {
                backoff_ms: self
                    .retry_backoff_ms
                    .clone()
                    .unwrap_or_else(|| RETRY_BACKOFF_MS.to_vec()),
            },
            RetryPolicyKind::Exponential => RetryPolicy::Exponential {
                initial_backoff_ms: self
                    .retry_initial_backoff_ms
                    .unwrap_or(DEFAULT_RETRY_INITIAL_BACKOFF_MS),
                max_backoff_ms: self
                    .retry_max_backoff_ms
                    .unwrap_or(DEFAULT_RETRY_MAX_BACKOFF_MS),
                multiplier: self
                    .retry_backoff_multiplier
                    .unwrap_or(DEFAULT_RETRY_BACKOFF_MULTIPLIER),
            },
        };
        EffectiveGroupSettings {
            consume_mode: self.consume_mode.unwrap_or_default(),
            max_delivery_attempts: self
                .max_delivery_attempts
                .unwrap_or(default_max_attempts)
                .max(1),
            retry,
        }
    }

    /// Rules between keys: the exponential wait may not start above its cap.
    fn check_consistent(&self) -> Result<(), CoreError> {
        let initial = self
            .retry_initial_backoff_ms
            .unwrap_or(DEFAULT_RETRY_INITIAL_BACKOFF_MS);
        let max = self
            .retry_max_backoff_ms
            .unwrap_or(DEFAULT_RETRY_MAX_BACKOFF_MS);
        if initial > max {
            return Err(CoreError::InvalidConfig(format!(
                "{KEY_RETRY_INITIAL_BACKOFF_MS} ({initial}) exceeds {KEY_RETRY_MAX_BACKOFF_MS} ({max})"
            )));
        }
        Ok(())
    }

    /// The record value: one `key=value` line per explicit setting.
    fn encode(&self) -> String {
        let mut out = String::new();
        for key in GROUP_SETTING_KEYS {
            if let Some(v) = self.value(key) {
                out.push_str(key);
                out.push('=');
                out.push_str(&v);
                out.push('\n');
            }
        }
        out
    }

    /// Reads a record value back. A line this version does not understand (a key
    /// from a newer version, a damaged value) is skipped and logged, so one bad
    /// line does not lose the group's other settings.
    fn decode(group: &str, text: &str) -> GroupSettings {
        let mut s = GroupSettings::default();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let result = match line.split_once('=') {
                Some((k, v)) => s.set(k, v),
                None => Err(CoreError::InvalidConfig(format!("no '=' in {line:?}"))),
            };
            if let Err(e) = result {
                tracing::warn!(group, error = %e, "skipping a stored group setting");
            }
        }
        s
    }
}

fn unknown_key(key: &str) -> CoreError {
    CoreError::InvalidConfig(format!(
        "unknown group setting {key:?}; known: {}",
        GROUP_SETTING_KEYS.join(", ")
    ))
}

fn join_ms(steps: &[i64]) -> String {
    steps
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The durable settings of every group.
pub struct GroupSettingsStore {
    /// Held while a change is written, so changes of one group apply in order.
    log: Mutex<PartitionLog>,
    groups: RwLock<HashMap<String, GroupSettings>>,
    /// The broker's `--max-delivery-attempts`.
    default_max_attempts: u32,
    /// [`GROUPS_WITH_SETTINGS_MAX`]; smaller in tests.
    groups_max: usize,
}

impl GroupSettingsStore {
    /// Opens (or creates) the settings log under `data_dir` and reads every
    /// group's settings back. Blocking (file work).
    pub(crate) fn open(
        data_dir: &Path,
        default_max_attempts: u32,
        now_ms: i64,
    ) -> Result<Self, CoreError> {
        let dir = data_dir
            .join("internal")
            .join("__sluice_group_settings")
            .join("0");
        let (log, _) = PartitionLog::open(&dir, internal_log_config(16 << 20), now_ms)?;
        let mut last: BTreeMap<String, Option<String>> = BTreeMap::new();
        replay(&log, &mut |r| {
            let Some(key) = r.key.as_deref() else {
                return;
            };
            let group = String::from_utf8_lossy(key).into_owned();
            let value = r
                .value
                .as_deref()
                .map(|v| String::from_utf8_lossy(v).into_owned());
            last.insert(group, value);
        })?;
        let mut groups = HashMap::new();
        for (group, value) in last {
            let Some(text) = value else { continue };
            let settings = GroupSettings::decode(&group, &text);
            if !settings.is_empty() {
                groups.insert(group, settings);
            }
        }
        if !groups.is_empty() {
            tracing::info!(groups = groups.len(), "group settings loaded");
        }
        Ok(GroupSettingsStore {
            log: Mutex::new(log),
            groups: RwLock::new(groups),
            default_max_attempts,
            groups_max: GROUPS_WITH_SETTINGS_MAX,
        })
    }

    /// The settings `group` has explicitly (empty for most groups).
    pub fn get(&self, group: &str) -> GroupSettings {
        self.groups.read().get(group).cloned().unwrap_or_default()
    }

    /// The settings in force for `group`.
    pub fn effective(&self, group: &str) -> EffectiveGroupSettings {
        match self.groups.read().get(group) {
            Some(s) => s.effective(self.default_max_attempts),
            None => GroupSettings::default().effective(self.default_max_attempts),
        }
    }

    /// The group's consume mode (cheap: called on every receive).
    pub fn consume_mode(&self, group: &str) -> ConsumeMode {
        self.groups
            .read()
            .get(group)
            .and_then(|s| s.consume_mode)
            .unwrap_or_default()
    }

    /// Deliveries a message of `group` gets (cheap: called on every receive and
    /// sweep).
    pub fn max_delivery_attempts(&self, group: &str) -> u32 {
        self.groups
            .read()
            .get(group)
            .and_then(|s| s.max_delivery_attempts)
            .unwrap_or(self.default_max_attempts)
            .max(1)
    }

    /// Every setting of `group` with its value in force and whether it is the
    /// default, in [`GROUP_SETTING_KEYS`] order.
    pub fn describe(&self, group: &str) -> Result<Vec<GroupSettingEntry>, CoreError> {
        validate_group_name(group)?;
        let own = self.get(group);
        let defaults = GroupSettings {
            consume_mode: Some(ConsumeMode::Clustering),
            max_delivery_attempts: Some(self.default_max_attempts),
            retry_policy: Some(RetryPolicyKind::Customized),
            retry_backoff_ms: Some(RETRY_BACKOFF_MS.to_vec()),
            retry_initial_backoff_ms: Some(DEFAULT_RETRY_INITIAL_BACKOFF_MS),
            retry_max_backoff_ms: Some(DEFAULT_RETRY_MAX_BACKOFF_MS),
            retry_backoff_multiplier: Some(DEFAULT_RETRY_BACKOFF_MULTIPLIER),
        };
        Ok(GROUP_SETTING_KEYS
            .iter()
            .map(|&name| match own.value(name) {
                Some(value) => GroupSettingEntry {
                    name,
                    value,
                    is_default: false,
                },
                None => GroupSettingEntry {
                    name,
                    value: defaults.value(name).unwrap_or_default(),
                    is_default: true,
                },
            })
            .collect())
    }

    /// Applies `changes` to `group` all or nothing: any unknown key or bad value
    /// fails the whole change. Unless `validate_only`, returns once the group's
    /// new settings are fsynced. Blocking (fsync): call off the async threads.
    pub fn alter(
        &self,
        group: &str,
        changes: &[ConfigChange],
        validate_only: bool,
        now_ms: i64,
    ) -> Result<(), CoreError> {
        validate_group_name(group)?;
        let log = self.log.lock();
        let had = self.groups.read().contains_key(group);
        let mut settings = self.get(group);
        for change in changes {
            match change {
                ConfigChange::Set(k, v) => settings.set(k, v)?,
                ConfigChange::Delete(k) => settings.delete(k)?,
            }
        }
        settings.check_consistent()?;
        if !had && !settings.is_empty() && self.groups.read().len() >= self.groups_max {
            return Err(CoreError::InvalidConfig(format!(
                "{} groups have settings, the most this broker keeps; \
                 delete another group's settings first",
                self.groups_max
            )));
        }
        if validate_only || (!had && settings.is_empty()) {
            return Ok(());
        }
        let text = settings.encode();
        let batch = encode_records(
            &[RecordSpec {
                key: Some(group.as_bytes()),
                value: (!settings.is_empty()).then_some(text.as_bytes()),
                headers: Vec::new(),
                timestamp: now_ms,
            }],
            (-1, -1, -1),
        );
        let verified = VerifiedBatches::new(&batch, usize::MAX)?;
        let appended = log.append(&verified, now_ms)?;
        log.sync_through(appended.seq)?;
        let mut groups = self.groups.write();
        if settings.is_empty() {
            groups.remove(group);
        } else {
            groups.insert(group.to_string(), settings);
        }
        tracing::info!(group, "altered group settings");
        Ok(())
    }

    /// Groups that have settings of their own.
    pub fn len(&self) -> usize {
        self.groups.read().len()
    }

    /// Whether no group has settings of its own.
    pub fn is_empty(&self) -> bool {
        self.groups.read().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(k: &str, v: &str) -> ConfigChange {
        ConfigChange::Set(k.to_string(), v.to_string())
    }

    fn del(k: &str) -> ConfigChange {
        ConfigChange::Delete(k.to_string())
    }

    #[test]
    fn every_key_parses_its_valid_values_canonically() {
        let mut s = GroupSettings::default();
        for (k, v, canonical) in [
            (KEY_CONSUME_MODE, "broadcast", "broadcast"),
            (KEY_CONSUME_MODE, " clustering ", "clustering"),
            (KEY_MAX_DELIVERY_ATTEMPTS, "1", "1"),
            (KEY_MAX_DELIVERY_ATTEMPTS, "1000", "1000"),
            (KEY_RETRY_POLICY, "exponential", "exponential"),
            (KEY_RETRY_POLICY, "customized", "customized"),
            (KEY_RETRY_BACKOFF_MS, "1000, 2000,3000", "1000,2000,3000"),
            (KEY_RETRY_BACKOFF_MS, "43200000", "43200000"),
            (KEY_RETRY_INITIAL_BACKOFF_MS, "500", "500"),
            (KEY_RETRY_MAX_BACKOFF_MS, "90000", "90000"),
            (KEY_RETRY_BACKOFF_MULTIPLIER, "1.5", "1.5"),
            (KEY_RETRY_BACKOFF_MULTIPLIER, "2", "2.0"),
        ] {
            s.set(k, v).unwrap_or_else(|e| panic!("{k}={v}: {e}"));
            assert_eq!(s.value(k).as_deref(), Some(canonical), "{k}={v}");
        }
        let steps: Vec<String> = (1..=RETRY_BACKOFF_STEPS_MAX)
            .map(|i| i.to_string())
            .collect();
        s.set(KEY_RETRY_BACKOFF_MS, &steps.join(",")).unwrap();
    }

    #[test]
    fn every_key_refuses_bad_values_and_unknown_keys_and_keeps_the_old_value() {
        let too_many: Vec<String> = (0..=RETRY_BACKOFF_STEPS_MAX).map(|_| "1".into()).collect();
        let too_many = too_many.join(",");
        let mut s = GroupSettings::default();
        s.set(KEY_MAX_DELIVERY_ATTEMPTS, "7").unwrap();
        let before = s.clone();
        for (k, v) in [
            (KEY_CONSUME_MODE, "BROADCAST"),
            (KEY_CONSUME_MODE, ""),
            (KEY_MAX_DELIVERY_ATTEMPTS, "0"),
            (KEY_MAX_DELIVERY_ATTEMPTS, "1001"),
            (KEY_MAX_DELIVERY_ATTEMPTS, "-1"),
            (KEY_MAX_DELIVERY_ATTEMPTS, "2.5"),
            (KEY_RETRY_POLICY, "linear"),
            (KEY_RETRY_BACKOFF_MS, ""),
            (KEY_RETRY_BACKOFF_MS, "1000,,2000"),
            (KEY_RETRY_BACKOFF_MS, "0"),
            (KEY_RETRY_BACKOFF_MS, "43200001"),
            (KEY_RETRY_BACKOFF_MS, "1s"),
            (KEY_RETRY_BACKOFF_MS, too_many.as_str()),
            (KEY_RETRY_INITIAL_BACKOFF_MS, "0"),
            (KEY_RETRY_MAX_BACKOFF_MS, "x"),
            (KEY_RETRY_BACKOFF_MULTIPLIER, "0.5"),
            (KEY_RETRY_BACKOFF_MULTIPLIER, "10.5"),
            (KEY_RETRY_BACKOFF_MULTIPLIER, "NaN"),
            (KEY_RETRY_BACKOFF_MULTIPLIER, "inf"),
            ("retry.backoff", "1"),
            ("unknown.key", "1"),
        ] {
            let e = s.set(k, v).expect_err(&format!("{k}={v:?} accepted"));
            assert!(matches!(e, CoreError::InvalidConfig(_)), "{k}={v:?}: {e:?}");
            assert_eq!(s, before, "{k}={v:?} changed the settings");
        }
        assert!(matches!(s.delete("nope"), Err(CoreError::InvalidConfig(_))));
    }

    #[test]
    fn effective_settings_fall_back_to_the_defaults() {
        let e = GroupSettings::default().effective(16);
        assert_eq!(e.consume_mode, ConsumeMode::Clustering);
        assert_eq!(e.max_delivery_attempts, 16);
        assert_eq!(
            e.retry,
            RetryPolicy::Customized {
                backoff_ms: RETRY_BACKOFF_MS.to_vec()
            }
        );
        let mut s = GroupSettings::default();
        s.set(KEY_RETRY_POLICY, "exponential").unwrap();
        s.set(KEY_RETRY_MAX_BACKOFF_MS, "5000").unwrap();
        s.set(KEY_MAX_DELIVERY_ATTEMPTS, "3").unwrap();
        let e = s.effective(16);
        assert_eq!(e.max_delivery_attempts, 3);
        assert_eq!(
            e.retry,
            RetryPolicy::Exponential {
                initial_backoff_ms: DEFAULT_RETRY_INITIAL_BACKOFF_MS,
                max_backoff_ms: 5000,
                multiplier: DEFAULT_RETRY_BACKOFF_MULTIPLIER,
            }
        );
    }

    #[test]
    fn settings_survive_reopen_last_change_wins_and_delete_clears() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = GroupSettingsStore::open(dir.path(), 16, 0).unwrap();
            store
                .alter("a", &[set(KEY_CONSUME_MODE, "broadcast")], false, 0)
                .unwrap();
            store
                .alter("a", &[set(KEY_MAX_DELIVERY_ATTEMPTS, "2")], false, 0)
                .unwrap();
            store
                .alter(
                    "b",
                    &[
                        set(KEY_RETRY_POLICY, "exponential"),
                        set(KEY_RETRY_BACKOFF_MULTIPLIER, "3"),
                    ],
                    false,
                    0,
                )
                .unwrap();
            store
                .alter("c", &[set(KEY_MAX_DELIVERY_ATTEMPTS, "5")], false, 0)
                .unwrap();
            // Deleting every setting of a group forgets it.
            store
                .alter("c", &[del(KEY_MAX_DELIVERY_ATTEMPTS)], false, 0)
                .unwrap();
            store
                .alter("b", &[del(KEY_RETRY_BACKOFF_MULTIPLIER)], false, 0)
                .unwrap();
            // validate_only changes nothing.
            store
                .alter("a", &[set(KEY_MAX_DELIVERY_ATTEMPTS, "9")], true, 0)
                .unwrap();
            assert_eq!(store.len(), 2);
        }
        let store = GroupSettingsStore::open(dir.path(), 16, 0).unwrap();
        assert_eq!(store.len(), 2);
        assert_eq!(store.consume_mode("a"), ConsumeMode::Broadcast);
        assert_eq!(store.max_delivery_attempts("a"), 2);
        assert_eq!(
            store.get("b").retry_policy,
            Some(RetryPolicyKind::Exponential)
        );
        assert_eq!(store.get("b").retry_backoff_multiplier, None);
        assert!(store.get("c").is_empty());
        assert_eq!(store.max_delivery_attempts("c"), 16);
        let described = store.describe("a").unwrap();
        assert_eq!(described.len(), GROUP_SETTING_KEYS.len());
        assert_eq!(
            described[0],
            GroupSettingEntry {
                name: KEY_CONSUME_MODE,
                value: "broadcast".into(),
                is_default: false
            }
        );
        assert_eq!(
            described[3],
            GroupSettingEntry {
                name: KEY_RETRY_BACKOFF_MS,
                value: join_ms(&RETRY_BACKOFF_MS),
                is_default: true
            }
        );
    }

    #[test]
    fn a_bad_change_among_good_ones_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = GroupSettingsStore::open(dir.path(), 16, 0).unwrap();
        store
            .alter("g", &[set(KEY_MAX_DELIVERY_ATTEMPTS, "4")], false, 0)
            .unwrap();
        for changes in [
            vec![
                set(KEY_CONSUME_MODE, "broadcast"),
                set(KEY_MAX_DELIVERY_ATTEMPTS, "0"),
            ],
            vec![set(KEY_CONSUME_MODE, "broadcast"), del("bogus")],
            vec![
                set(KEY_RETRY_INITIAL_BACKOFF_MS, "9000"),
                set(KEY_RETRY_MAX_BACKOFF_MS, "8000"),
            ],
        ] {
            let e = store.alter("g", &changes, false, 0).unwrap_err();
            assert!(matches!(e, CoreError::InvalidConfig(_)), "{e:?}");
        }
        assert!(matches!(
            store.alter(
                "bad group!",
                &[set(KEY_CONSUME_MODE, "broadcast")],
                false,
                0
            ),
            Err(CoreError::InvalidGroupId(_))
        ));
        let mut want = GroupSettings::default();
        want.set(KEY_MAX_DELIVERY_ATTEMPTS, "4").unwrap();
        assert_eq!(store.get("g"), want);
        drop(store);
        let store = GroupSettingsStore::open(dir.path(), 16, 0).unwrap();
        assert_eq!(store.get("g"), want);
    }

    #[test]
    fn groups_with_settings_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = GroupSettingsStore::open(dir.path(), 16, 0).unwrap();
        store.groups_max = 2;
        let mode = [set(KEY_CONSUME_MODE, "broadcast")];
        store.alter("a", &mode, false, 0).unwrap();
        store.alter("b", &mode, false, 0).unwrap();
        let e = store.alter("c", &mode, false, 0).unwrap_err();
        assert!(e.to_string().contains("the most this broker keeps"), "{e}");
        // A group that has settings may still change them, and a freed place is reusable.
        store
            .alter("a", &[set(KEY_MAX_DELIVERY_ATTEMPTS, "3")], false, 0)
            .unwrap();
        store
            .alter("b", &[del(KEY_CONSUME_MODE)], false, 0)
            .unwrap();
        store.alter("c", &mode, false, 0).unwrap();
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn stored_lines_this_version_does_not_know_are_skipped() {
        let s = GroupSettings::decode("g", "consume.mode=broadcast\nfuture.key=1\ngarbage\n");
        let mut want = GroupSettings::default();
        want.set(KEY_CONSUME_MODE, "broadcast").unwrap();
        assert_eq!(s, want);
    }
}
