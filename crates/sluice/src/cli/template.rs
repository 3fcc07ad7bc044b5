//! Output templates for `sluice consume --format`, in the style of kcat's `-f`:
//! `%k` key, `%v` value, `%o` offset, `%p` partition, `%t` timestamp (ms), `%h` headers as
//! `k=v` comma-separated, `%T` topic, `%%` a percent sign; `\n`, `\t`, `\r`, `\\` escapes.

use bytes::Bytes;
use indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;

/// One record as the consumer prints it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordView<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Partition index.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// Timestamp in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Key; `None` for a null key.
    pub key: Option<&'a Bytes>,
    /// Value; `None` for a null value (a tombstone).
    pub value: Option<&'a Bytes>,
    /// Headers in record order.
    pub headers: &'a IndexMap<StrBytes, Option<Bytes>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(Vec<u8>),
    Key,
    Value,
    Offset,
    Partition,
    Timestamp,
    Headers,
    Topic,
}

/// A parsed output template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses `text`; unknown `%x` and `\x` sequences are kept literally.
    pub fn parse(text: &str) -> Template {
        let mut pieces = Vec::new();
        let mut literal = Vec::new();
        let mut chars = text.chars().peekable();
        let push_char = |literal: &mut Vec<u8>, c: char| {
            let mut utf8 = [0u8; 4];
            literal.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        };
        while let Some(c) = chars.next() {
            match c {
                '%' => {
                    let field = match chars.peek() {
                        Some('k') => Some(Piece::Key),
                        Some('v') => Some(Piece::Value),
                        Some('o') => Some(Piece::Offset),
                        Some('p') => Some(Piece::Partition),
                        Some('t') => Some(Piece::Timestamp),
                        Some('h') => Some(Piece::Headers),
                        Some('T') => Some(Piece::Topic),
                        _ => None,
                    };
                    match (field, chars.peek()) {
                        (Some(field), _) => {
                            chars.next();
                            if !literal.is_empty() {
                                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                            }
                            pieces.push(field);
                        }
                        (None, Some('%')) => {
                            chars.next();
                            literal.push(b'%');
                        }
                        (None, _) => literal.push(b'%'),
                    }
                }
                '\\' => match chars.peek() {
                    Some('n') => {
                        chars.next();
                        literal.push(b'\n');
                    }
                    Some('t') => {
                        chars.next();
                        literal.push(b'\t');
                    }
                    Some('r') => {
                        chars.next();
                        literal.push(b'\r');
                    }
                    Some('\\') => {
                        chars.next();
                        literal.push(b'\\');
                    }
                    _ => literal.push(b'\\'),
                },
                c => push_char(&mut literal, c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Template { pieces }
    }

    /// Appends the rendering of `record` to `out`; keys and values are written as raw bytes,
    /// null ones as nothing.
    pub fn render(&self, record: &RecordView<'_>, out: &mut Vec<u8>) {
        for piece in &self.pieces {
            match piece {
                Piece::Literal(bytes) => out.extend_from_slice(bytes),
                Piece::Key => {
                    if let Some(key) = record.key {
                        out.extend_from_slice(key);
                    }
                }
                Piece::Value => {
                    if let Some(value) = record.value {
                        out.extend_from_slice(value);
                    }
                }
                Piece::Offset => out.extend_from_slice(record.offset.to_string().as_bytes()),
                Piece::Partition => out.extend_from_slice(record.partition.to_string().as_bytes()),
                Piece::Timestamp => {
                    out.extend_from_slice(record.timestamp_ms.to_string().as_bytes())
                }
                Piece::Headers => {
                    for (i, (name, value)) in record.headers.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(name.as_bytes());
                        out.push(b'=');
                        if let Some(value) = value {
                            out.extend_from_slice(value);
                        }
                    }
                }
                Piece::Topic => out.extend_from_slice(record.topic.as_bytes()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, record: &RecordView<'_>) -> String {
        let mut out = Vec::new();
        Template::parse(template).render(record, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn sample<'a>(
        key: Option<&'a Bytes>,
        value: Option<&'a Bytes>,
        headers: &'a IndexMap<StrBytes, Option<Bytes>>,
    ) -> RecordView<'a> {
        RecordView {
            topic: "orders",
            partition: 2,
            offset: 41,
            timestamp_ms: 1_700_000_000_000,
            key,
            value,
            headers,
        }
    }

    #[test]
    fn template_substitutes_every_field() {
        let key = Bytes::from_static(b"k1");
        let value = Bytes::from_static(b"hello");
        let mut headers = IndexMap::new();
        headers.insert(
            StrBytes::from_static_str("a"),
            Some(Bytes::from_static(b"1")),
        );
        headers.insert(StrBytes::from_static_str("b"), None);
        let record = sample(Some(&key), Some(&value), &headers);
        assert_eq!(
            render("%T/%p@%o %t [%h] %k=%v\\n", &record),
            "orders/2@41 1700000000000 [a=1,b=] k1=hello\n"
        );
    }

    #[test]
    fn template_escapes_and_unknown_sequences_are_literal() {
        let headers = IndexMap::new();
        let record = sample(None, None, &headers);
        assert_eq!(render("%%\\t%x\\q\\\\%", &record), "%\t%x\\q\\%");
    }

    #[test]
    fn template_prints_null_key_and_value_as_nothing() {
        let headers = IndexMap::new();
        let record = sample(None, None, &headers);
        assert_eq!(render("[%k][%v][%h]", &record), "[][][]");
    }

    #[test]
    fn template_keeps_non_ascii_literals() {
        let value = Bytes::from_static("é".as_bytes());
        let headers = IndexMap::new();
        let record = sample(None, Some(&value), &headers);
        assert_eq!(render("→%v←", &record), "→é←");
    }
}
