//! Subscription filters as RocketMQ defines them, evaluated by the broker so that a
//! consumer receives only the messages it asked for.
//!
//! Two kinds: a tag filter ("TagA || TagB") compared against the message's tag, and a
//! SQL92 filter over the message's properties. Both are parsed once, when the
//! subscription arrives, into a small value that is cheap to evaluate per message.
//! Parsing is total: any input yields a filter or a [`FilterError`], never a panic, and
//! its cost is bounded by fixed limits on the expression's length and nesting.

mod sql;
mod tag;

pub use sql::SqlFilter;
pub use tag::{tag_hash, TagFilter};

/// A parsed subscription filter.
///
/// Values are immutable and self-contained: matching needs only the message, so one
/// filter can be shared by every fetch of a subscription.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every message matches, including messages without a tag.
    All,
    /// Messages whose tag is one of a set.
    Tags(TagFilter),
    /// Messages for which a SQL92 expression over their properties is TRUE.
    Sql(SqlFilter),
}

impl Filter {
    /// Tag expression as RocketMQ clients send it: "*" or empty (after trimming
    /// whitespace) = all; "TagA || TagB" matches a message tagged exactly (case-sensitive)
    /// one of the listed tags. Whitespace around tags is ignored, and so are empty tags
    /// between `||`. A `*` next to other tags is an ordinary tag, as in RocketMQ.
    ///
    /// Fails when the expression is longer than 16 KiB or names no tag at all (e.g.
    /// "||"), since a filter that matches nothing is a client mistake.
    pub fn tags(expression: &str) -> Result<Filter, FilterError> {
        Ok(match TagFilter::parse(expression)? {
            Some(tags) => Filter::Tags(tags),
            None => Filter::All,
        })
    }

    /// SQL92 expression over message properties, in RocketMQ's subset: comparisons
    /// (`=`, `<>`, `!=`, `<`, `<=`, `>`, `>=`), `AND`, `OR`, `NOT`, `IS [NOT] NULL`,
    /// `[NOT] IN (...)`, `[NOT] BETWEEN .. AND ..`, parentheses; literals are integers,
    /// decimals, 'strings', TRUE, FALSE and NULL; identifiers name properties.
    ///
    /// The expression must be boolean as a whole and consumed to its end. Fails with a
    /// [`FilterError`] naming the problem for anything else (LIKE, functions,
    /// arithmetic, subqueries, ...), for expressions longer than 4 KiB and for nesting
    /// deeper than 64 levels; never panics and never recurses without bound.
    ///
    /// Parsing runs on a short-lived thread with a stack sized for sqlparser (see
    /// `PARSE_STACK_BYTES` in `sql.rs`), whatever the caller's stack: it costs a thread
    /// start, so parse once per subscription, not per message.
    pub fn sql(expression: &str) -> Result<Filter, FilterError> {
        SqlFilter::parse(expression).map(Filter::Sql)
    }

    /// Whether a message matches. `tag` is the message's tag (None when it has none);
    /// `property(name)` returns a user property value. For SQL filters, the message's
    /// tag is also visible as property "TAGS" (RocketMQ does this), and it takes the
    /// place of any user property of that name.
    ///
    /// A message without a tag matches a tag filter only when the filter is
    /// [`Filter::All`]. A SQL filter matches only when its expression is TRUE; UNKNOWN
    /// (from a missing property or a type mismatch) does not match.
    pub fn matches(&self, tag: Option<&str>, property: &dyn Fn(&str) -> Option<String>) -> bool {
        match self {
            Filter::All => true,
            Filter::Tags(tags) => tags.matches(tag),
            Filter::Sql(sql) => sql.matches(tag, property),
        }
    }

    /// Whether a record batch whose records all carry a tag with this hash (see
    /// [`tag_hash`]) may hold a match: lets the broker skip a batch without decoding it.
    /// Tags(..) -> whether the hash is one of the filter's tag hashes; All and Sql ->
    /// true. Never false for a batch that holds a match; may be true for one that does
    /// not (hash collisions), so matches are still confirmed with [`Filter::matches`].
    pub fn may_match_tag_hash(&self, hash: u32) -> bool {
        match self {
            Filter::All | Filter::Sql(_) => true,
            Filter::Tags(tags) => tags.may_match_hash(hash),
        }
    }

    /// Whether a record batch with this tag summary (the OR of
    /// [`tag_summary_bit`] over its records' tags; 0 when none has a tag) may
    /// hold a match. Never false for a batch that holds one, so a batch may be
    /// passed over unread when it is false.
    pub fn may_match_summary(&self, summary: u64) -> bool {
        match self {
            Filter::All | Filter::Sql(_) => true,
            Filter::Tags(tags) => tags.may_match_summary(summary),
        }
    }
}

/// A tag's bit in a batch's tag summary: one of 64, from its [`tag_hash`].
pub fn tag_summary_bit(tag: &str) -> u64 {
    1u64 << (tag_hash(tag) % 64)
}

/// Why an expression was refused. Each message names what is wrong and, where the
/// parser knows it, the line and column.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FilterError {
    /// The expression is longer than its limit; nothing of it was parsed.
    #[error("filter expression is {len} bytes, more than the limit of {max}")]
    TooLong { len: usize, max: usize },
    /// The expression nests (parentheses, NOT, operands) deeper than the limit.
    #[error("filter expression nests deeper than {max} levels")]
    TooDeep { max: usize },
    /// A SQL expression that is empty or only whitespace.
    #[error("SQL filter expression is empty")]
    Empty,
    /// A tag expression made only of separators, e.g. "||".
    #[error("tag expression names no tag: expected \"*\" or tags separated by \"||\"")]
    NoTags,
    /// The SQL text does not parse; the message is the parser's, with line and column.
    #[error("syntax error: {message}")]
    Syntax { message: String },
    /// A whole expression parsed, but more input followed it.
    #[error("unexpected {found} at line {line}, column {column}, after a complete expression")]
    TrailingInput {
        found: String,
        line: u64,
        column: u64,
    },
    /// Valid SQL that filters do not support, e.g. "operator LIKE", "function call f(..)".
    #[error("unsupported {construct}")]
    Unsupported { construct: String },
    /// A value where a condition is needed, e.g. `a` alone or `5 AND b = 1`.
    #[error("expected a boolean expression, found {found}")]
    NotBoolean { found: String },
    /// A condition where a value is needed, e.g. `(a > 1) = TRUE`.
    #[error("expected a property or a literal, found {found}")]
    NotValue { found: String },
    /// An ordering operator or BETWEEN with a string or boolean literal operand.
    #[error("{operator} compares numbers, found {found}")]
    NotNumeric {
        operator: &'static str,
        found: String,
    },
    /// NULL as an operand of a comparison, IN or BETWEEN, which can never be TRUE.
    #[error("comparison with NULL is never true: use IS NULL or IS NOT NULL")]
    NullComparison,
    /// A numeric literal that is neither an i64 nor a finite f64.
    #[error("number {text} is neither a 64-bit integer nor a finite decimal")]
    InvalidNumber { text: String },
    /// The SQL parser could not run to an answer (its thread did not start, or it
    /// panicked); the expression may be fine, and nothing was parsed.
    #[error("the SQL parser failed: {reason}")]
    ParserFailed { reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn no_properties(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn all_matches_every_message_and_every_hash() {
        let filter = Filter::All;
        assert!(filter.matches(None, &no_properties));
        assert!(filter.matches(Some("TagA"), &no_properties));
        assert!(filter.may_match_tag_hash(0));
        assert!(filter.may_match_tag_hash(tag_hash("TagA")));
    }

    #[test]
    fn tag_filter_matches_listed_tags_only() {
        let filter = Filter::tags("TagA || TagB").unwrap();
        assert!(filter.matches(Some("TagA"), &no_properties));
        assert!(filter.matches(Some("TagB"), &no_properties));
        assert!(!filter.matches(Some("TagC"), &no_properties));
        assert!(!filter.matches(Some("taga"), &no_properties));
        assert!(!filter.matches(None, &no_properties));
    }

    #[test]
    fn tag_filter_may_match_only_its_hashes() {
        let filter = Filter::tags("TagA || TagB").unwrap();
        assert!(filter.may_match_tag_hash(tag_hash("TagA")));
        assert!(filter.may_match_tag_hash(tag_hash("TagB")));
        assert!(!filter.may_match_tag_hash(tag_hash("TagC")));
    }

    #[test]
    fn tag_filter_passes_over_batches_without_its_tags() {
        let filter = Filter::tags("TagA || TagB").unwrap();
        let a = tag_summary_bit("TagA");
        let others = (0..200)
            .map(|i| format!("other-{i}"))
            .filter(|t| {
                let bit = tag_summary_bit(t);
                bit != a && bit != tag_summary_bit("TagB")
            })
            .take(3)
            .fold(0u64, |s, t| s | tag_summary_bit(&t));
        assert!(filter.may_match_summary(a));
        assert!(filter.may_match_summary(a | others));
        assert!(!filter.may_match_summary(others));
        // Untagged records never match a tag filter.
        assert!(!filter.may_match_summary(0));
        assert!(Filter::All.may_match_summary(0));
        assert!(Filter::sql("a = 1").unwrap().may_match_summary(0));
    }

    #[test]
    fn sql_filter_may_match_every_hash() {
        let filter = Filter::sql("TAGS = 'TagA'").unwrap();
        assert!(filter.may_match_tag_hash(tag_hash("TagB")));
    }

    #[test]
    fn sql_filter_reads_properties_and_tag() {
        let properties: HashMap<&str, &str> = [("a", "7"), ("b", "x")].into_iter().collect();
        let property = |name: &str| properties.get(name).map(|v| v.to_string());
        let filter = Filter::sql("a > 5 AND b = 'x' AND TAGS = 'TagA'").unwrap();
        assert!(filter.matches(Some("TagA"), &property));
        assert!(!filter.matches(Some("TagB"), &property));
        assert!(!filter.matches(None, &property));
    }

    #[test]
    fn tags_property_is_the_message_tag_not_a_user_property() {
        let property = |name: &str| (name == "TAGS").then(|| "TagB".to_string());
        let filter = Filter::sql("TAGS = 'TagB'").unwrap();
        assert!(!filter.matches(Some("TagA"), &property));
        assert!(!filter.matches(None, &property));
        assert!(Filter::sql("TAGS IS NULL")
            .unwrap()
            .matches(None, &property));
    }
}
