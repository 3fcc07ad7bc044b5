//! Tag filters: a set of tags, compared exactly against the message's tag.

use super::FilterError;

/// Longest tag expression accepted. Larger than the SQL limit because a subscription
/// may list many tags, yet small enough that parsing one costs little.
const TAG_EXPRESSION_BYTES_MAX: usize = 16 * 1024;

/// The separator RocketMQ clients put between tags.
const TAG_SEPARATOR: &str = "||";

/// A set of tags, at least one. A message matches when its tag equals one of them
/// byte for byte.
#[derive(Debug, Clone, PartialEq)]
pub struct TagFilter {
    // Both sorted and free of duplicates: equal sets compare equal whatever order the
    // client listed them in, and a lookup is a binary search.
    tags: Vec<String>,
    hashes: Vec<u32>,
}

impl TagFilter {
    /// Parses a tag expression; `Ok(None)` when it selects every message.
    pub(super) fn parse(expression: &str) -> Result<Option<TagFilter>, FilterError> {
        if expression.len() > TAG_EXPRESSION_BYTES_MAX {
            return Err(FilterError::TooLong {
                len: expression.len(),
                max: TAG_EXPRESSION_BYTES_MAX,
            });
        }
        let expression = expression.trim();
        if expression.is_empty() || expression == "*" {
            return Ok(None);
        }
        let mut tags: Vec<String> = expression
            .split(TAG_SEPARATOR)
            .map(str::trim)
            .filter(|tag| !tag.is_empty())
            .map(str::to_owned)
            .collect();
        if tags.is_empty() {
            return Err(FilterError::NoTags);
        }
        tags.sort_unstable();
        tags.dedup();
        let mut hashes: Vec<u32> = tags.iter().map(|tag| tag_hash(tag)).collect();
        hashes.sort_unstable();
        hashes.dedup();
        Ok(Some(TagFilter { tags, hashes }))
    }

    pub(super) fn matches(&self, tag: Option<&str>) -> bool {
        tag.is_some_and(|tag| {
            self.tags
                .binary_search_by(|listed| listed.as_str().cmp(tag))
                .is_ok()
        })
    }

    pub(super) fn may_match_hash(&self, hash: u32) -> bool {
        self.hashes.binary_search(&hash).is_ok()
    }

    /// Whether any of the filter's tags has its bit set in a batch summary.
    pub(super) fn may_match_summary(&self, summary: u64) -> bool {
        self.hashes
            .iter()
            .any(|h| summary & (1u64 << (h % 64)) != 0)
    }
}

/// A stable 32-bit hash of a tag: FNV-1a over its UTF-8 bytes. Stable across versions,
/// because it may be stored on disk; changing it would make old batches be skipped
/// wrongly, so the known values are pinned by a test.
pub fn tag_hash(tag: &str) -> u32 {
    const FNV_OFFSET_BASIS: u32 = 0x811c_9dc5;
    const FNV_PRIME: u32 = 0x0100_0193;
    tag.bytes().fold(FNV_OFFSET_BASIS, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tags_of(expression: &str) -> Vec<String> {
        match TagFilter::parse(expression) {
            Ok(Some(filter)) => filter.tags,
            other => panic!("{expression:?} parsed as {other:?}, expected tags"),
        }
    }

    #[test]
    fn star_selects_every_message() {
        assert_eq!(TagFilter::parse("*"), Ok(None));
        assert_eq!(TagFilter::parse(" * "), Ok(None));
    }

    #[test]
    fn empty_expression_selects_every_message() {
        assert_eq!(TagFilter::parse(""), Ok(None));
        assert_eq!(TagFilter::parse("  "), Ok(None));
    }

    #[test]
    fn single_tag_parses() {
        assert_eq!(tags_of("TagA"), ["TagA"]);
    }

    #[test]
    fn tags_split_on_double_bar() {
        assert_eq!(tags_of("TagA || TagB"), ["TagA", "TagB"]);
    }

    #[test]
    fn whitespace_around_tags_is_ignored() {
        assert_eq!(tags_of(" A ||B "), ["A", "B"]);
    }

    #[test]
    fn empty_tags_between_separators_are_ignored() {
        assert_eq!(tags_of("A||||B"), ["A", "B"]);
        assert_eq!(tags_of("||A||"), ["A"]);
    }

    #[test]
    fn tag_order_and_duplicates_do_not_matter() {
        assert_eq!(TagFilter::parse("B || A || B"), TagFilter::parse("A||B"));
    }

    #[test]
    fn star_among_tags_is_a_plain_tag() {
        assert_eq!(tags_of("A || *"), ["*", "A"]);
    }

    #[test]
    fn separators_without_tags_are_refused() {
        assert_eq!(TagFilter::parse("||"), Err(FilterError::NoTags));
        assert_eq!(TagFilter::parse(" || || "), Err(FilterError::NoTags));
    }

    #[test]
    fn overlong_tag_expression_is_refused() {
        let expression = "A||".repeat(TAG_EXPRESSION_BYTES_MAX);
        assert_eq!(
            TagFilter::parse(&expression),
            Err(FilterError::TooLong {
                len: expression.len(),
                max: TAG_EXPRESSION_BYTES_MAX
            })
        );
    }

    #[test]
    fn tag_hash_is_fnv1a_32() {
        // Reference values of FNV-1a 32; they pin the on-disk format.
        assert_eq!(tag_hash(""), 0x811c_9dc5);
        assert_eq!(tag_hash("a"), 0xe40c_292c);
        assert_eq!(tag_hash("foobar"), 0xbf9c_f968);
    }

    #[test]
    fn message_without_tag_does_not_match_tags() {
        let filter = TagFilter::parse("A").unwrap().unwrap();
        assert!(!filter.matches(None));
        assert!(filter.matches(Some("A")));
        assert!(!filter.matches(Some(" A")));
    }

    proptest! {
        #[test]
        fn tag_parsing_never_panics(expression in any::<String>()) {
            let _ = TagFilter::parse(&expression);
        }

        #[test]
        fn every_parsed_tag_matches_and_may_match(
            tags in prop::collection::vec("[A-Za-z0-9_*| ]{0,8}", 0..8),
        ) {
            let expression = tags.join(TAG_SEPARATOR);
            if let Ok(Some(filter)) = TagFilter::parse(&expression) {
                for tag in &filter.tags {
                    prop_assert!(filter.matches(Some(tag)));
                    prop_assert!(filter.may_match_hash(tag_hash(tag)));
                }
            }
        }
    }
}
