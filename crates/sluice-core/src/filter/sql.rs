//! SQL92 filters: RocketMQ's subset of SQL over message properties.
//!
//! sqlparser turns the text into its general SQL AST; [`predicate`] and [`term`] then
//! convert that into our own small AST, refusing everything the subset lacks, so that
//! evaluation only ever sees constructs it knows. Evaluation follows SQL's
//! three-valued logic: a missing property or a type mismatch is UNKNOWN, and only TRUE
//! matches.

use std::borrow::Cow;
use std::cmp::Ordering;

use sqlparser::ast::{BinaryOperator, Expr, Ident, ObjectNamePart, UnaryOperator, Value};
use sqlparser::dialect::GenericDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use super::FilterError;

/// Longest SQL expression accepted. RocketMQ filters are a line or two; the bound
/// keeps hostile input from costing much time or memory.
const SQL_EXPRESSION_BYTES_MAX: usize = 4 * 1024;

/// Deepest nesting accepted, counted in both sqlparser's recursion and ours, so that
/// neither parsing, conversion nor evaluation can exhaust the stack.
const SQL_NESTING_DEPTH_MAX: usize = 64;

/// Stack of the thread that runs sqlparser. Its frames are large: at the nesting
/// limit it needs up to ~5.5 MiB in debug builds (measured: NOT, CASE, function-call
/// and subquery chains), more than the 2 MiB of a tokio worker or test thread, so it
/// gets a thread of its own with about three times that.
const PARSE_STACK_BYTES: usize = 16 * 1024 * 1024;

/// The property under which RocketMQ exposes a message's tag to SQL filters.
const TAGS_PROPERTY: &str = "TAGS";

/// A SQL92 filter: an expression over message properties that evaluates to TRUE,
/// FALSE or UNKNOWN for each message. It holds only supported constructs, nests at
/// most 64 levels deep, and evaluates without allocating beyond property lookups.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlFilter {
    root: Predicate,
}

/// A condition: evaluates to a [`Truth`].
#[derive(Debug, Clone, PartialEq)]
enum Predicate {
    Constant(bool),
    Not(Box<Predicate>),
    // AND and OR chains are flattened into one node, so that a long chain is neither
    // deep nor evaluated by deep recursion.
    And(Vec<Predicate>),
    Or(Vec<Predicate>),
    Compare {
        left: Operand,
        op: CompareOp,
        right: Operand,
    },
    IsNull {
        property: String,
        negated: bool,
    },
    In {
        operand: Operand,
        list: Vec<Literal>,
        negated: bool,
    },
    Between {
        operand: Operand,
        low: Operand,
        high: Operand,
        negated: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CompareOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

/// A value: a property of the message, or a constant.
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Property(String),
    Literal(Literal),
}

/// A non-NULL constant. NULL is resolved while converting (see [`Term`]).
#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Text(String),
    Number(Number),
    Bool(bool),
}

/// A number as written or as found in a property. Floats are always finite.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Number {
    Int(i64),
    Float(f64),
}

/// An operand while converting: NULL is kept apart because only IS [NOT] NULL accepts it.
enum Term {
    Null,
    Operand(Operand),
}

/// SQL's three truth values, ordered so that AND is the minimum and OR the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Truth {
    False,
    Unknown,
    True,
}

impl SqlFilter {
    pub(super) fn parse(expression: &str) -> Result<SqlFilter, FilterError> {
        if expression.len() > SQL_EXPRESSION_BYTES_MAX {
            return Err(FilterError::TooLong {
                len: expression.len(),
                max: SQL_EXPRESSION_BYTES_MAX,
            });
        }
        if expression.trim().is_empty() {
            return Err(FilterError::Empty);
        }
        std::thread::scope(|scope| {
            let parsing = std::thread::Builder::new()
                .name("sql-filter-parser".to_owned())
                .stack_size(PARSE_STACK_BYTES)
                .spawn_scoped(scope, || parse_on_this_thread(expression))
                .map_err(|error| FilterError::ParserFailed {
                    reason: format!("its thread did not start: {error}"),
                })?;
            // A panic inside sqlparser is its bug, but must not take the broker down
            // with it: the subscription is refused instead.
            parsing.join().unwrap_or_else(|_| {
                Err(FilterError::ParserFailed {
                    reason: "it panicked".to_owned(),
                })
            })
        })
    }

    pub(super) fn matches(
        &self,
        tag: Option<&str>,
        property: &dyn Fn(&str) -> Option<String>,
    ) -> bool {
        let message = Message { tag, property };
        self.root.eval(&message) == Truth::True
    }
}

/// Parses on the current thread, which must have [`PARSE_STACK_BYTES`] of stack.
fn parse_on_this_thread(expression: &str) -> Result<SqlFilter, FilterError> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, expression)
        .tokenize_with_location()
        .map_err(|error| FilterError::Syntax {
            message: error.to_string(),
        })?;
    check_token_nesting(&tokens)?;
    let mut parser = Parser::new(&dialect)
        .with_recursion_limit(SQL_NESTING_DEPTH_MAX)
        .with_tokens_with_locations(tokens);
    let expr = parser.parse_expr().map_err(parser_error)?;
    // parse_expr stops at the first token that cannot continue the expression;
    // without this check "a > 5 garbage" would silently mean "a > 5".
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(FilterError::TrailingInput {
            found: next.token.to_string(),
            line: next.span.start.line,
            column: next.span.start.column,
        });
    }
    let root = predicate(&expr, 0)?;
    Ok(SqlFilter { root })
}

/// Refuses the common ways of nesting too deep (brackets, CASE, prefix NOT and signs)
/// from the tokens alone, before sqlparser recurses into them. sqlparser enforces its
/// recursion limit too, but on some paths (NOT, CASE) it swallows the limit error and
/// backtracks, which would surface as a misleading "unexpected NOT".
///
/// A prefix operator counts as open until the next AND, OR or comma at its bracket
/// level, which is where its operand must end.
fn check_token_nesting(tokens: &[TokenWithSpan]) -> Result<(), FilterError> {
    // Open prefix operators per open bracket; the first entry is the top level.
    let mut prefixes_open: Vec<usize> = vec![0];
    let mut prefixes_total: usize = 0;
    let mut after_operand = false;
    for token in tokens {
        let keyword = match &token.token {
            Token::Word(word) => Some(word.keyword),
            _ => None,
        };
        match (&token.token, keyword) {
            (Token::Whitespace(_), _) => continue,
            (Token::LParen | Token::LBracket | Token::LBrace, _) | (_, Some(Keyword::CASE)) => {
                prefixes_open.push(0);
            }
            // An unmatched closer is sqlparser's error to report; here it closes nothing.
            (Token::RParen | Token::RBracket | Token::RBrace, _) | (_, Some(Keyword::END))
                if prefixes_open.len() > 1 =>
            {
                prefixes_total -= prefixes_open.pop().unwrap_or(0);
            }
            (Token::Minus | Token::Plus, _) if !after_operand => {
                prefixes_total += 1;
                if let Some(open) = prefixes_open.last_mut() {
                    *open += 1;
                }
            }
            (_, Some(Keyword::NOT)) => {
                prefixes_total += 1;
                if let Some(open) = prefixes_open.last_mut() {
                    *open += 1;
                }
            }
            (Token::Comma, _) | (_, Some(Keyword::AND | Keyword::OR | Keyword::XOR)) => {
                if let Some(open) = prefixes_open.last_mut() {
                    prefixes_total -= *open;
                    *open = 0;
                }
            }
            _ => {}
        }
        // A sign right after an operand is binary arithmetic, not a prefix.
        after_operand = matches!(
            token.token,
            Token::Word(_)
                | Token::Number(..)
                | Token::SingleQuotedString(_)
                | Token::RParen
                | Token::RBracket
        ) && !matches!(keyword, Some(Keyword::NOT | Keyword::AND | Keyword::OR));
        let brackets_open = prefixes_open.len() - 1;
        if brackets_open + prefixes_total > SQL_NESTING_DEPTH_MAX {
            return Err(FilterError::TooDeep {
                max: SQL_NESTING_DEPTH_MAX,
            });
        }
    }
    Ok(())
}

fn parser_error(error: ParserError) -> FilterError {
    match error {
        ParserError::RecursionLimitExceeded => FilterError::TooDeep {
            max: SQL_NESTING_DEPTH_MAX,
        },
        ParserError::TokenizerError(message) | ParserError::ParserError(message) => {
            FilterError::Syntax { message }
        }
    }
}

/// One level deeper, or TooDeep. Every recursive step of the conversion goes through
/// here, which bounds the depth of our AST and of every recursion over it.
fn descend(depth: usize) -> Result<usize, FilterError> {
    if depth >= SQL_NESTING_DEPTH_MAX {
        return Err(FilterError::TooDeep {
            max: SQL_NESTING_DEPTH_MAX,
        });
    }
    Ok(depth + 1)
}

/// Converts an expression that must be a condition.
fn predicate(expr: &Expr, depth: usize) -> Result<Predicate, FilterError> {
    let depth = descend(depth)?;
    match expr {
        Expr::Nested(inner) => predicate(inner, depth),
        Expr::Value(value) => match &value.value {
            Value::Boolean(b) => Ok(Predicate::Constant(*b)),
            _ => Err(FilterError::NotBoolean {
                found: describe(expr),
            }),
        },
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => Err(FilterError::NotBoolean {
            found: describe(expr),
        }),
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr: inner,
        } => Ok(Predicate::Not(Box::new(predicate(inner, depth)?))),
        Expr::BinaryOp {
            op: op @ (BinaryOperator::And | BinaryOperator::Or),
            ..
        } => {
            let operands = chain(expr, op, depth)?;
            Ok(if *op == BinaryOperator::And {
                Predicate::And(operands)
            } else {
                Predicate::Or(operands)
            })
        }
        Expr::BinaryOp { left, op, right } => match compare_op(op) {
            Some(op) => comparison(left, op, right, depth),
            None => Err(unsupported(expr)),
        },
        Expr::IsNull(inner) => is_null(inner, false, depth),
        Expr::IsNotNull(inner) => is_null(inner, true, depth),
        Expr::InList {
            expr: inner,
            list,
            negated,
        } => in_list(inner, list, *negated, depth),
        Expr::Between {
            expr: inner,
            negated,
            low,
            high,
        } => {
            let operator = if *negated { "NOT BETWEEN" } else { "BETWEEN" };
            Ok(Predicate::Between {
                operand: numeric_operand(inner, operator, depth)?,
                low: numeric_operand(low, operator, depth)?,
                high: numeric_operand(high, operator, depth)?,
                negated: *negated,
            })
        }
        _ => Err(unsupported(expr)),
    }
}

/// The operands of `a OP b OP c ...`, in order, for OP = AND or OR.
fn chain(expr: &Expr, op: &BinaryOperator, depth: usize) -> Result<Vec<Predicate>, FilterError> {
    // sqlparser builds a chain as a left-deep tree without counting it against its
    // recursion limit, so a 4 KiB chain can be a thousand levels deep. Walk the left
    // spine in a loop instead of recursing into it.
    let mut rights = Vec::new();
    let mut leftmost = expr;
    while let Expr::BinaryOp {
        left,
        op: link,
        right,
    } = leftmost
    {
        if link != op {
            break;
        }
        rights.push(right.as_ref());
        leftmost = left;
    }
    let mut operands = Vec::with_capacity(rights.len() + 1);
    operands.push(predicate(leftmost, depth)?);
    for right in rights.into_iter().rev() {
        operands.push(predicate(right, depth)?);
    }
    Ok(operands)
}

fn compare_op(op: &BinaryOperator) -> Option<CompareOp> {
    Some(match op {
        BinaryOperator::Eq => CompareOp::Eq,
        BinaryOperator::NotEq => CompareOp::NotEq,
        BinaryOperator::Lt => CompareOp::Lt,
        BinaryOperator::LtEq => CompareOp::LtEq,
        BinaryOperator::Gt => CompareOp::Gt,
        BinaryOperator::GtEq => CompareOp::GtEq,
        _ => return None,
    })
}

fn comparison(
    left: &Expr,
    op: CompareOp,
    right: &Expr,
    depth: usize,
) -> Result<Predicate, FilterError> {
    let (left, right) = match op {
        CompareOp::Eq | CompareOp::NotEq => (operand(left, depth)?, operand(right, depth)?),
        CompareOp::Lt | CompareOp::LtEq | CompareOp::Gt | CompareOp::GtEq => (
            numeric_operand(left, op.symbol(), depth)?,
            numeric_operand(right, op.symbol(), depth)?,
        ),
    };
    Ok(Predicate::Compare { left, op, right })
}

fn is_null(inner: &Expr, negated: bool, depth: usize) -> Result<Predicate, FilterError> {
    Ok(match term(inner, depth)? {
        Term::Operand(Operand::Property(property)) => Predicate::IsNull { property, negated },
        // A constant's nullness is known now.
        Term::Null => Predicate::Constant(!negated),
        Term::Operand(Operand::Literal(_)) => Predicate::Constant(negated),
    })
}

fn in_list(
    inner: &Expr,
    list: &[Expr],
    negated: bool,
    depth: usize,
) -> Result<Predicate, FilterError> {
    if list.is_empty() {
        return Err(FilterError::Unsupported {
            construct: "empty IN list".to_owned(),
        });
    }
    let tested = operand(inner, depth)?;
    let list = list
        .iter()
        .map(|item| match operand(item, depth)? {
            Operand::Literal(literal) => Ok(literal),
            Operand::Property(name) => Err(FilterError::Unsupported {
                construct: format!("property `{name}` in an IN list (only literals are allowed)"),
            }),
        })
        .collect::<Result<_, _>>()?;
    Ok(Predicate::In {
        operand: tested,
        list,
        negated,
    })
}

/// Converts an expression that must be a non-NULL value.
fn operand(expr: &Expr, depth: usize) -> Result<Operand, FilterError> {
    match term(expr, depth)? {
        Term::Operand(operand) => Ok(operand),
        Term::Null => Err(FilterError::NullComparison),
    }
}

/// Converts an operand of an ordering: a property or a numeric literal. A string or
/// boolean literal could never compare, so it is refused now rather than being
/// UNKNOWN for every message (RocketMQ refuses it too).
fn numeric_operand(
    expr: &Expr,
    operator: &'static str,
    depth: usize,
) -> Result<Operand, FilterError> {
    let operand = operand(expr, depth)?;
    match &operand {
        Operand::Property(_) | Operand::Literal(Literal::Number(_)) => Ok(operand),
        Operand::Literal(literal @ (Literal::Text(_) | Literal::Bool(_))) => {
            Err(FilterError::NotNumeric {
                operator,
                found: literal.describe(),
            })
        }
    }
}

/// Converts an expression that must be a value (possibly NULL).
fn term(expr: &Expr, depth: usize) -> Result<Term, FilterError> {
    let depth = descend(depth)?;
    match expr {
        Expr::Nested(inner) => term(inner, depth),
        Expr::Identifier(ident) => Ok(Term::Operand(Operand::Property(ident.value.clone()))),
        Expr::CompoundIdentifier(parts) => Ok(Term::Operand(Operand::Property(dotted_name(parts)))),
        Expr::Value(value) => literal(&value.value),
        // A sign on a numeric literal is part of the number, not arithmetic.
        Expr::UnaryOp {
            op: sign @ (UnaryOperator::Minus | UnaryOperator::Plus),
            expr: inner,
        } => match term(inner, depth)? {
            Term::Operand(Operand::Literal(Literal::Number(number))) => {
                let number = if *sign == UnaryOperator::Minus {
                    number.negated()
                } else {
                    number
                };
                Ok(Term::Operand(Operand::Literal(Literal::Number(number))))
            }
            _ => Err(unsupported(expr)),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            ..
        }
        | Expr::IsNull(_)
        | Expr::IsNotNull(_)
        | Expr::InList { .. }
        | Expr::Between { .. } => Err(FilterError::NotValue {
            found: describe(expr),
        }),
        Expr::BinaryOp { op, .. }
            if compare_op(op).is_some()
                || matches!(op, BinaryOperator::And | BinaryOperator::Or) =>
        {
            Err(FilterError::NotValue {
                found: describe(expr),
            })
        }
        _ => Err(unsupported(expr)),
    }
}

fn literal(value: &Value) -> Result<Term, FilterError> {
    let literal = match value {
        Value::Null => return Ok(Term::Null),
        // The flag marks a `L` suffix (a Java long), which changes nothing here.
        Value::Number(text, _) => Literal::Number(
            Number::parse(text).ok_or_else(|| FilterError::InvalidNumber { text: text.clone() })?,
        ),
        Value::SingleQuotedString(text) => Literal::Text(text.clone()),
        Value::Boolean(b) => Literal::Bool(*b),
        other => {
            return Err(FilterError::Unsupported {
                construct: format!("literal {other}"),
            })
        }
    };
    Ok(Term::Operand(Operand::Literal(literal)))
}

/// The property name of `a.b.c`: RocketMQ property names may contain dots, and
/// sqlparser splits them, so the parts are joined back.
fn dotted_name(parts: &[Ident]) -> String {
    parts
        .iter()
        .map(|part| part.value.as_str())
        .collect::<Vec<_>>()
        .join(".")
}

fn unsupported(expr: &Expr) -> FilterError {
    FilterError::Unsupported {
        construct: describe(expr),
    }
}

/// Names an expression's construct for an error message. Never formats a whole
/// subtree: that recursion would be as deep as the tree, and the text as long.
fn describe(expr: &Expr) -> String {
    let text = match expr {
        Expr::Identifier(ident) => return format!("property `{}`", ident.value),
        Expr::CompoundIdentifier(parts) => return format!("property `{}`", dotted_name(parts)),
        Expr::Value(value) => return describe_value(&value.value),
        Expr::Function(function) => {
            let name = function
                .name
                .0
                .iter()
                .map(|part| match part {
                    ObjectNamePart::Identifier(ident) => ident.value.as_str(),
                    ObjectNamePart::Function(_) => "?",
                })
                .collect::<Vec<_>>()
                .join(".");
            return format!("function call {name}(..)");
        }
        Expr::BinaryOp { op, .. } => {
            return match op {
                BinaryOperator::And | BinaryOperator::Or => format!("condition with {op}"),
                _ if compare_op(op).is_some() => format!("comparison with {op}"),
                _ => format!("operator {op}"),
            }
        }
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            ..
        } => "condition with NOT",
        Expr::UnaryOp { op, .. } => return format!("operator {op}"),
        Expr::Nested(_) => "parenthesized expression",
        Expr::IsNull(_) => "IS NULL condition",
        Expr::IsNotNull(_) => "IS NOT NULL condition",
        Expr::InList { .. } => "IN condition",
        Expr::Between { .. } => "BETWEEN condition",
        Expr::Like { .. } => "operator LIKE",
        Expr::ILike { .. } => "operator ILIKE",
        Expr::SimilarTo { .. } => "operator SIMILAR TO",
        Expr::RLike { .. } => "operator REGEXP",
        Expr::IsTrue(_) => "operator IS TRUE",
        Expr::IsNotTrue(_) => "operator IS NOT TRUE",
        Expr::IsFalse(_) => "operator IS FALSE",
        Expr::IsNotFalse(_) => "operator IS NOT FALSE",
        Expr::IsUnknown(_) => "operator IS UNKNOWN",
        Expr::IsNotUnknown(_) => "operator IS NOT UNKNOWN",
        Expr::IsDistinctFrom(..) => "operator IS DISTINCT FROM",
        Expr::IsNotDistinctFrom(..) => "operator IS NOT DISTINCT FROM",
        Expr::AnyOp { .. } => "operator ANY",
        Expr::AllOp { .. } => "operator ALL",
        Expr::InSubquery { .. } | Expr::Subquery(_) | Expr::Exists { .. } => "subquery",
        Expr::InUnnest { .. } => "IN UNNEST",
        Expr::Case { .. } => "CASE expression",
        Expr::Cast { .. } => "type cast",
        Expr::Convert { .. } => "function CONVERT",
        Expr::Extract { .. } => "function EXTRACT",
        Expr::Ceil { .. } => "function CEIL",
        Expr::Floor { .. } => "function FLOOR",
        Expr::Position { .. } => "function POSITION",
        Expr::Substring { .. } => "function SUBSTRING",
        Expr::Trim { .. } => "function TRIM",
        Expr::Overlay { .. } => "function OVERLAY",
        Expr::Collate { .. } => "COLLATE",
        Expr::AtTimeZone { .. } => "AT TIME ZONE",
        Expr::Interval(_) => "INTERVAL literal",
        Expr::TypedString(_) => "typed literal",
        Expr::Tuple(_) => "tuple",
        Expr::Array(_) => "array",
        Expr::Map(_) | Expr::Dictionary(_) | Expr::Struct { .. } => "composite value",
        Expr::CompoundFieldAccess { .. } | Expr::JsonAccess { .. } => "field access",
        Expr::Wildcard(_) | Expr::QualifiedWildcard(..) => "wildcard *",
        _ => "expression of this kind",
    };
    text.to_owned()
}

fn describe_value(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_owned(),
        Value::Boolean(b) => format!("boolean {}", if *b { "TRUE" } else { "FALSE" }),
        Value::Number(text, _) => format!("number {text}"),
        Value::SingleQuotedString(text) => format!("string '{text}'"),
        other => format!("literal {other}"),
    }
}

impl CompareOp {
    fn symbol(self) -> &'static str {
        match self {
            CompareOp::Eq => "=",
            CompareOp::NotEq => "<>",
            CompareOp::Lt => "<",
            CompareOp::LtEq => "<=",
            CompareOp::Gt => ">",
            CompareOp::GtEq => ">=",
        }
    }

    fn holds(self, ordering: Ordering) -> bool {
        match self {
            CompareOp::Eq => ordering == Ordering::Equal,
            CompareOp::NotEq => ordering != Ordering::Equal,
            CompareOp::Lt => ordering == Ordering::Less,
            CompareOp::LtEq => ordering != Ordering::Greater,
            CompareOp::Gt => ordering == Ordering::Greater,
            CompareOp::GtEq => ordering != Ordering::Less,
        }
    }
}

impl Literal {
    fn describe(&self) -> String {
        match self {
            Literal::Text(text) => format!("string '{text}'"),
            Literal::Number(Number::Int(n)) => format!("number {n}"),
            Literal::Number(Number::Float(f)) => format!("number {f}"),
            Literal::Bool(b) => format!("boolean {}", if *b { "TRUE" } else { "FALSE" }),
        }
    }
}

impl Number {
    /// Reads a literal or a property value: an i64 if it is one, else a finite f64.
    /// No trimming: " 5" is text. Infinities and NaN are not numbers here, so every
    /// comparison between numbers has an answer.
    fn parse(text: &str) -> Option<Number> {
        if let Ok(n) = text.parse::<i64>() {
            return Some(Number::Int(n));
        }
        text.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Number::Float)
    }

    fn negated(self) -> Number {
        match self {
            Number::Int(n) => n
                .checked_neg()
                .map_or(Number::Float(-(n as f64)), Number::Int),
            Number::Float(f) => Number::Float(-f),
        }
    }

    /// Exact comparison, also between an i64 and an f64 (casting the i64 to f64
    /// would round large values and call unequal numbers equal).
    fn compare(self, other: Number) -> Option<Ordering> {
        match (self, other) {
            (Number::Int(a), Number::Int(b)) => Some(a.cmp(&b)),
            (Number::Float(a), Number::Float(b)) => a.partial_cmp(&b),
            (Number::Int(a), Number::Float(b)) => compare_int_float(a, b),
            (Number::Float(a), Number::Int(b)) => compare_int_float(b, a).map(Ordering::reverse),
        }
    }
}

fn compare_int_float(int: i64, float: f64) -> Option<Ordering> {
    // 2^63 is exact in f64: floats at or above it exceed every i64, floats below -2^63
    // are below every i64, and in between the whole part converts to i64 exactly.
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    if float.is_nan() {
        return None;
    }
    if float >= TWO_POW_63 {
        return Some(Ordering::Less);
    }
    if float < -TWO_POW_63 {
        return Some(Ordering::Greater);
    }
    let whole = float.trunc();
    match int.cmp(&(whole as i64)) {
        Ordering::Equal => 0.0.partial_cmp(&(float - whole)),
        unequal => Some(unequal),
    }
}

/// The message as a SQL filter sees it.
struct Message<'a> {
    tag: Option<&'a str>,
    property: &'a dyn Fn(&str) -> Option<String>,
}

/// An operand evaluated against a message.
enum Resolved<'a> {
    Missing,
    /// A property's text, typed by what it is compared with (see [`equals`]).
    Property(Cow<'a, str>),
    Literal(&'a Literal),
}

impl<'a> Message<'a> {
    fn property(&self, name: &str) -> Option<Cow<'a, str>> {
        if name == TAGS_PROPERTY {
            return self.tag.map(Cow::Borrowed);
        }
        (self.property)(name).map(Cow::Owned)
    }

    fn resolve<'f>(&self, operand: &'f Operand) -> Resolved<'f>
    where
        'a: 'f,
    {
        match operand {
            Operand::Property(name) => self
                .property(name)
                .map_or(Resolved::Missing, Resolved::Property),
            Operand::Literal(literal) => Resolved::Literal(literal),
        }
    }
}

impl Predicate {
    fn eval(&self, message: &Message<'_>) -> Truth {
        match self {
            Predicate::Constant(b) => Truth::from(*b),
            Predicate::Not(inner) => inner.eval(message).not(),
            Predicate::And(operands) => {
                let mut truth = Truth::True;
                for operand in operands {
                    truth = truth.min(operand.eval(message));
                    if truth == Truth::False {
                        break;
                    }
                }
                truth
            }
            Predicate::Or(operands) => {
                let mut truth = Truth::False;
                for operand in operands {
                    truth = truth.max(operand.eval(message));
                    if truth == Truth::True {
                        break;
                    }
                }
                truth
            }
            Predicate::Compare { left, op, right } => {
                let (left, right) = (message.resolve(left), message.resolve(right));
                let truth = match op {
                    CompareOp::Eq | CompareOp::NotEq => {
                        equals(&left, &right).map(|equal| equal == (*op == CompareOp::Eq))
                    }
                    _ => order(&left, &right).map(|ordering| op.holds(ordering)),
                };
                Truth::from_option(truth)
            }
            Predicate::IsNull { property, negated } => {
                Truth::from(message.property(property).is_none() != *negated)
            }
            Predicate::In {
                operand,
                list,
                negated,
            } => {
                // x IN (v1, .., vn) is x = v1 OR .. OR x = vn, with its UNKNOWNs.
                let operand = message.resolve(operand);
                let mut truth = Truth::False;
                for item in list {
                    truth = truth.max(Truth::from_option(equals(
                        &operand,
                        &Resolved::Literal(item),
                    )));
                    if truth == Truth::True {
                        break;
                    }
                }
                truth.negated_if(*negated)
            }
            Predicate::Between {
                operand,
                low,
                high,
                negated,
            } => {
                // x BETWEEN l AND h is x >= l AND x <= h, with its UNKNOWNs.
                let operand = message.resolve(operand);
                let above_low = order(&operand, &message.resolve(low))
                    .map(|ordering| ordering != Ordering::Less);
                let below_high = order(&operand, &message.resolve(high))
                    .map(|ordering| ordering != Ordering::Greater);
                Truth::from_option(above_low)
                    .min(Truth::from_option(below_high))
                    .negated_if(*negated)
            }
        }
    }
}

/// Equality, or None (UNKNOWN) when an operand is missing or the types do not meet.
/// A property's text counts as a number when compared with a number, as a boolean
/// ("true"/"false", any case) when compared with a boolean, and as text when compared
/// with a string. Two properties compare as numbers when both read as numbers, else
/// as text.
fn equals(left: &Resolved<'_>, right: &Resolved<'_>) -> Option<bool> {
    match (left, right) {
        (Resolved::Missing, _) | (_, Resolved::Missing) => None,
        (Resolved::Property(a), Resolved::Property(b)) => {
            match (Number::parse(a), Number::parse(b)) {
                (Some(a), Some(b)) => a.compare(b).map(|ordering| ordering == Ordering::Equal),
                _ => Some(a == b),
            }
        }
        (Resolved::Property(text), Resolved::Literal(literal))
        | (Resolved::Literal(literal), Resolved::Property(text)) => match literal {
            Literal::Text(literal) => Some(text.as_ref() == literal.as_str()),
            Literal::Number(literal) => Number::parse(text)?
                .compare(*literal)
                .map(|ordering| ordering == Ordering::Equal),
            Literal::Bool(literal) => parse_bool(text).map(|b| b == *literal),
        },
        (Resolved::Literal(a), Resolved::Literal(b)) => match (a, b) {
            (Literal::Text(a), Literal::Text(b)) => Some(a == b),
            (Literal::Number(a), Literal::Number(b)) => {
                a.compare(*b).map(|ordering| ordering == Ordering::Equal)
            }
            (Literal::Bool(a), Literal::Bool(b)) => Some(a == b),
            _ => None,
        },
    }
}

/// Numeric ordering, or None (UNKNOWN) unless both operands are numbers.
fn order(left: &Resolved<'_>, right: &Resolved<'_>) -> Option<Ordering> {
    number(left)?.compare(number(right)?)
}

fn number(resolved: &Resolved<'_>) -> Option<Number> {
    match resolved {
        Resolved::Property(text) => Number::parse(text),
        Resolved::Literal(Literal::Number(number)) => Some(*number),
        Resolved::Missing | Resolved::Literal(_) => None,
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

impl Truth {
    fn from_option(truth: Option<bool>) -> Truth {
        truth.map_or(Truth::Unknown, Truth::from)
    }

    fn not(self) -> Truth {
        match self {
            Truth::False => Truth::True,
            Truth::Unknown => Truth::Unknown,
            Truth::True => Truth::False,
        }
    }

    fn negated_if(self, negated: bool) -> Truth {
        if negated {
            self.not()
        } else {
            self
        }
    }
}

impl From<bool> for Truth {
    fn from(b: bool) -> Truth {
        if b {
            Truth::True
        } else {
            Truth::False
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Evaluates `expression` against a message with these properties and no tag.
    fn matches(expression: &str, properties: &[(&str, &str)]) -> bool {
        matches_tagged(expression, None, properties)
    }

    fn matches_tagged(expression: &str, tag: Option<&str>, properties: &[(&str, &str)]) -> bool {
        let filter = match SqlFilter::parse(expression) {
            Ok(filter) => filter,
            Err(error) => panic!("{expression:?} failed to parse: {error}"),
        };
        let properties: HashMap<&str, &str> = properties.iter().copied().collect();
        filter.matches(tag, &|name: &str| {
            properties.get(name).map(|value| value.to_string())
        })
    }

    fn error(expression: &str) -> FilterError {
        match SqlFilter::parse(expression) {
            Ok(filter) => panic!("{expression:?} parsed as {filter:?}, expected an error"),
            Err(error) => error,
        }
    }

    fn unsupported(construct: &str) -> FilterError {
        FilterError::Unsupported {
            construct: construct.to_owned(),
        }
    }

    #[test]
    fn and_of_numeric_and_string_comparisons() {
        let expression = "a > 5 AND b = 'x'";
        assert!(matches(expression, &[("a", "6"), ("b", "x")]));
        assert!(!matches(expression, &[("a", "5"), ("b", "x")]));
        assert!(!matches(expression, &[("a", "6"), ("b", "y")]));
        assert!(!matches(expression, &[("b", "x")]));
    }

    #[test]
    fn is_null_matches_missing_property() {
        assert!(matches("a IS NULL", &[]));
        assert!(!matches("a IS NULL", &[("a", "")]));
    }

    #[test]
    fn is_not_null_matches_present_property() {
        assert!(matches("a IS NOT NULL", &[("a", "")]));
        assert!(!matches("a IS NOT NULL", &[]));
    }

    #[test]
    fn is_null_of_literals_is_constant() {
        assert!(matches("NULL IS NULL", &[]));
        assert!(matches("5 IS NOT NULL", &[]));
        assert!(!matches("'x' IS NULL", &[]));
    }

    #[test]
    fn in_list_matches_any_listed_string() {
        assert!(matches("b IN ('x','y')", &[("b", "y")]));
        assert!(!matches("b IN ('x','y')", &[("b", "z")]));
        assert!(!matches("b IN ('x','y')", &[]));
    }

    #[test]
    fn not_in_list_matches_unlisted_present_values() {
        assert!(matches("b NOT IN ('x')", &[("b", "y")]));
        assert!(!matches("b NOT IN ('x')", &[("b", "x")]));
        // Missing is UNKNOWN, and NOT UNKNOWN is UNKNOWN.
        assert!(!matches("b NOT IN ('x')", &[]));
    }

    #[test]
    fn in_list_with_numbers_compares_numerically() {
        assert!(matches("a IN (1, 2.5)", &[("a", "2.50")]));
        // A text property among numbers is a mismatch: UNKNOWN, also under NOT.
        assert!(!matches("a NOT IN (1, 2)", &[("a", "abc")]));
    }

    #[test]
    fn between_is_inclusive() {
        let expression = "a BETWEEN 1 AND 10";
        assert!(matches(expression, &[("a", "1")]));
        assert!(matches(expression, &[("a", "10")]));
        assert!(matches(expression, &[("a", "5.5")]));
        assert!(!matches(expression, &[("a", "0")]));
        assert!(!matches(expression, &[("a", "11")]));
        assert!(!matches(expression, &[]));
    }

    #[test]
    fn not_between_matches_outside_values_only() {
        let expression = "a NOT BETWEEN 1 AND 10";
        assert!(matches(expression, &[("a", "0")]));
        assert!(matches(expression, &[("a", "11")]));
        assert!(!matches(expression, &[("a", "5")]));
        assert!(!matches(expression, &[]));
        assert!(!matches(expression, &[("a", "abc")]));
    }

    #[test]
    fn not_of_unknown_does_not_match() {
        assert!(!matches("NOT (a > 5)", &[]));
        assert!(matches("NOT (a > 5)", &[("a", "5")]));
    }

    #[test]
    fn true_or_unknown_matches() {
        assert!(matches("a > 5 OR b = 'x'", &[("b", "x")]));
    }

    #[test]
    fn false_and_unknown_does_not_match_even_negated() {
        // FALSE AND UNKNOWN is FALSE, so its negation is TRUE.
        assert!(matches("NOT (b = 'y' AND a > 5)", &[("b", "x")]));
        // TRUE AND UNKNOWN is UNKNOWN, and so is its negation.
        assert!(!matches("NOT (b = 'x' AND a > 5)", &[("b", "x")]));
    }

    #[test]
    fn decimals_compare_numerically() {
        assert!(matches("a >= 1.5", &[("a", "1.5")]));
        assert!(matches("a >= 1.5", &[("a", "2")]));
        assert!(!matches("a >= 1.5", &[("a", "1.49")]));
    }

    #[test]
    fn negative_literals_are_numbers() {
        assert!(matches("a > -5", &[("a", "-4")]));
        assert!(!matches("a > -5", &[("a", "-5.5")]));
        assert!(matches("a = -(-3)", &[("a", "3")]));
    }

    #[test]
    fn numeric_equality_ignores_spelling() {
        assert!(matches("a = 5", &[("a", "5.0")]));
        assert!(matches("a <> 5", &[("a", "6")]));
        assert!(matches("a != 5", &[("a", "6")]));
    }

    #[test]
    fn string_equality_compares_text_exactly() {
        assert!(matches("a = '5'", &[("a", "5")]));
        assert!(!matches("a = '5'", &[("a", "5.0")]));
        assert!(matches("a <> 'x'", &[("a", "X")]));
        assert!(matches("a = 'it''s'", &[("a", "it's")]));
    }

    #[test]
    fn type_mismatch_is_unknown() {
        assert!(!matches("a > 5", &[("a", "abc")]));
        assert!(!matches("NOT (a > 5)", &[("a", "abc")]));
        assert!(!matches("a = 5", &[("a", "abc")]));
        assert!(!matches("a <> 5", &[("a", "abc")]));
        assert!(!matches("a <> 5", &[("a", " 5")]));
        assert!(!matches("a > 5", &[("a", "NaN")]));
    }

    #[test]
    fn large_integers_compare_exactly() {
        // As f64 both sides would round to the same value.
        assert!(matches(
            "a > 9007199254740992",
            &[("a", "9007199254740993")]
        ));
        assert!(matches(
            "a < 9223372036854775808",
            &[("a", "9223372036854775807")]
        ));
        assert!(matches("a > 1.5", &[("a", "2")]));
        assert!(matches("a < -1.5", &[("a", "-2")]));
    }

    #[test]
    fn two_properties_compare_as_numbers_when_both_are() {
        assert!(matches("a = b", &[("a", "5"), ("b", "5.0")]));
        assert!(matches("a = b", &[("a", "x"), ("b", "x")]));
        assert!(matches("a < b", &[("a", "9"), ("b", "10")]));
        assert!(!matches("a < b", &[("a", "a"), ("b", "b")]));
    }

    #[test]
    fn booleans_compare_with_true_and_false_text() {
        assert!(matches("vip = TRUE", &[("vip", "true")]));
        assert!(matches("vip = FALSE", &[("vip", "FALSE")]));
        assert!(!matches("vip = TRUE", &[("vip", "yes")]));
        assert!(!matches("vip <> TRUE", &[("vip", "yes")]));
    }

    #[test]
    fn tags_property_is_the_message_tag() {
        assert!(matches_tagged("TAGS = 'TagA'", Some("TagA"), &[]));
        assert!(!matches_tagged("TAGS = 'TagA'", Some("TagB"), &[]));
        assert!(!matches_tagged("TAGS = 'TagA'", None, &[("TAGS", "TagA")]));
        assert!(matches_tagged(
            "TAGS IN ('TagA', 'TagB')",
            Some("TagB"),
            &[]
        ));
    }

    #[test]
    fn true_alone_matches_everything() {
        assert!(matches("TRUE", &[]));
        assert!(!matches("FALSE", &[]));
        assert!(matches("(TRUE)", &[]));
    }

    #[test]
    fn quoted_and_dotted_identifiers_are_property_names() {
        assert!(matches("\"order\" = 'x'", &[("order", "x")]));
        assert!(matches("a.b = 'x'", &[("a.b", "x")]));
        assert!(matches("\"a b\" = 'x'", &[("a b", "x")]));
    }

    #[test]
    fn property_names_are_case_sensitive() {
        assert!(!matches("A = 'x'", &[("a", "x")]));
    }

    #[test]
    fn precedence_follows_sql() {
        // AND binds tighter than OR; NOT tighter than both.
        assert!(matches("a = 1 OR a = 2 AND b = 3", &[("a", "1")]));
        assert!(!matches("(a = 1 OR a = 2) AND b = 3", &[("a", "1")]));
        assert!(matches("NOT a = 1 AND b = 2", &[("a", "2"), ("b", "2")]));
    }

    #[test]
    fn long_and_chain_is_flat_not_deep() {
        let expression = vec!["a = 1"; 300].join(" AND ");
        assert!(expression.len() <= SQL_EXPRESSION_BYTES_MAX);
        assert!(matches(&expression, &[("a", "1")]));
        assert!(!matches(&expression, &[("a", "2")]));
        let expression = vec!["a = 1"; 300].join(" OR ");
        assert!(matches(&expression, &[("a", "1")]));
    }

    #[test]
    fn like_is_unsupported() {
        assert_eq!(error("a LIKE 'x%'"), unsupported("operator LIKE"));
        assert_eq!(
            error("a LIKE 'x%'").to_string(),
            "unsupported operator LIKE"
        );
    }

    #[test]
    fn incomplete_expression_is_a_syntax_error() {
        assert!(matches!(error("a +"), FilterError::Syntax { .. }));
        assert!(matches!(error("a >"), FilterError::Syntax { .. }));
        assert!(matches!(error("(a > 5"), FilterError::Syntax { .. }));
        assert!(matches!(error("a = 'x"), FilterError::Syntax { .. }));
    }

    #[test]
    fn trailing_input_is_refused() {
        assert_eq!(
            error("a > 5 garbage"),
            FilterError::TrailingInput {
                found: "garbage".to_owned(),
                line: 1,
                column: 7
            }
        );
        assert!(matches!(error("a > 5;"), FilterError::TrailingInput { .. }));
        assert!(matches!(error("a > 5)"), FilterError::TrailingInput { .. }));
    }

    #[test]
    fn functions_are_unsupported() {
        assert_eq!(error("func(a) = 1"), unsupported("function call func(..)"));
        assert_eq!(
            error("UPPER(a) = 'X'"),
            unsupported("function call UPPER(..)")
        );
    }

    #[test]
    fn arithmetic_is_unsupported() {
        assert_eq!(error("a + 1 > 2"), unsupported("operator +"));
        assert_eq!(error("a > 2 * 3"), unsupported("operator *"));
        assert_eq!(error("-a > 2"), unsupported("operator -"));
        assert_eq!(error("a + 1"), unsupported("operator +"));
    }

    #[test]
    fn other_sql_is_unsupported() {
        assert_eq!(error("a IN (SELECT b FROM t)"), unsupported("subquery"));
        assert_eq!(
            error("CASE WHEN a = 1 THEN TRUE ELSE FALSE END"),
            unsupported("CASE expression")
        );
        assert_eq!(error("a > 5 IS TRUE"), unsupported("operator IS TRUE"));
        assert_eq!(error("CAST(a AS INT) > 5"), unsupported("type cast"));
        assert!(matches!(error("a IN (b)"), FilterError::Unsupported { .. }));
    }

    #[test]
    fn empty_expression_is_refused() {
        assert_eq!(error(""), FilterError::Empty);
        assert_eq!(error(" \n\t"), FilterError::Empty);
    }

    #[test]
    fn top_level_must_be_boolean() {
        assert_eq!(
            error("a"),
            FilterError::NotBoolean {
                found: "property `a`".to_owned()
            }
        );
        assert_eq!(
            error("5"),
            FilterError::NotBoolean {
                found: "number 5".to_owned()
            }
        );
        assert!(matches!(error("'x'"), FilterError::NotBoolean { .. }));
        assert!(matches!(error("NULL"), FilterError::NotBoolean { .. }));
        assert!(matches!(
            error("a = 1 AND b"),
            FilterError::NotBoolean { .. }
        ));
        assert!(matches!(error("NOT a"), FilterError::NotBoolean { .. }));
    }

    #[test]
    fn conditions_are_not_values() {
        assert_eq!(
            error("(a > 1) = TRUE"),
            FilterError::NotValue {
                found: "comparison with >".to_owned()
            }
        );
        assert!(matches!(
            error("a IS NULL IS NULL"),
            FilterError::NotValue { .. }
        ));
    }

    #[test]
    fn ordering_needs_numeric_literals() {
        assert_eq!(
            error("a > 'x'"),
            FilterError::NotNumeric {
                operator: ">",
                found: "string 'x'".to_owned()
            }
        );
        assert!(matches!(
            error("a BETWEEN 'a' AND 'z'"),
            FilterError::NotNumeric { .. }
        ));
        assert!(matches!(error("a <= TRUE"), FilterError::NotNumeric { .. }));
    }

    #[test]
    fn comparison_with_null_is_refused() {
        assert_eq!(error("a = NULL"), FilterError::NullComparison);
        assert_eq!(error("a IN ('x', NULL)"), FilterError::NullComparison);
        assert_eq!(error("a BETWEEN NULL AND 5"), FilterError::NullComparison);
    }

    #[test]
    fn infinite_number_is_refused() {
        assert!(matches!(
            error("a > 1e999"),
            FilterError::InvalidNumber { .. }
        ));
    }

    #[test]
    fn overlong_expression_is_refused() {
        let expression = format!("a = '{}'", "x".repeat(SQL_EXPRESSION_BYTES_MAX));
        assert_eq!(
            error(&expression),
            FilterError::TooLong {
                len: expression.len(),
                max: SQL_EXPRESSION_BYTES_MAX
            }
        );
    }

    #[test]
    fn ten_thousand_parentheses_are_refused() {
        let expression = format!("{}a > 5{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(matches!(error(&expression), FilterError::TooLong { .. }));
    }

    #[test]
    fn deep_nesting_within_length_limit_is_refused() {
        let too_deep = [
            format!("{}a > 5{}", "(".repeat(1000), ")".repeat(1000)),
            format!("{}a > 5", "NOT ".repeat(1000)),
            format!("a > {}5", "- ".repeat(1000)),
            format!("a = {}5{}", "(".repeat(1000), ")".repeat(1000)),
            format!("{}a", "NOT a = ".repeat(100)),
            format!("{}a{}", "CASE WHEN ".repeat(100), " THEN 1 END".repeat(100)),
            format!("{}a{}", "f(".repeat(100), ")".repeat(100)),
            format!(
                "{}a > 5{}",
                "(".repeat(SQL_NESTING_DEPTH_MAX),
                ")".repeat(SQL_NESTING_DEPTH_MAX)
            ),
        ];
        for expression in &too_deep {
            assert!(expression.len() <= SQL_EXPRESSION_BYTES_MAX);
            assert_eq!(
                error(expression),
                FilterError::TooDeep {
                    max: SQL_NESTING_DEPTH_MAX
                },
                "{expression}"
            );
        }
    }

    #[test]
    fn long_operator_chains_within_length_limit_are_refused_without_overflow() {
        // Chains that sqlparser builds as deep left-leaning trees without counting them.
        for expression in [
            format!("a > 1{}", "+1".repeat(2000)),
            format!("a{} > 1", "||a".repeat(1300)),
            format!("a{}", " IS NULL".repeat(500)),
            format!("a{} > 1", "::INT".repeat(800)),
        ] {
            assert!(expression.len() <= SQL_EXPRESSION_BYTES_MAX);
            assert!(SqlFilter::parse(&expression).is_err());
        }
    }

    #[test]
    fn stack_hungry_shapes_are_refused_without_overflow() {
        // Shapes on which sqlparser spends the most stack per level (measured), at the
        // length limit: each must come back as an error, on the 2 MiB test thread.
        let fill = |unit: &str, tail: &str, close: &str| {
            let n = (SQL_EXPRESSION_BYTES_MAX - tail.len()) / (unit.len() + close.len());
            format!("{}{tail}{}", unit.repeat(n), close.repeat(n))
        };
        for expression in [
            fill("NOT a = ", "a", ""),
            fill("CASE WHEN ", "a", " THEN 1 END"),
            fill("EXISTS(SELECT 1 WHERE ", "a", ")"),
            fill("(SELECT ", "a", ")"),
            fill("a IN (SELECT ", "a", ")"),
            fill("f(", "a", ")"),
            fill("CAST(", "a", " AS INT)"),
            fill("a = - ", "a", ""),
            fill("NOT (", "a > 5", ")"),
            fill("[", "a", "]"),
            format!(
                "CAST(a AS {}INT{}) > 1",
                "ARRAY<".repeat(500),
                ">".repeat(500)
            ),
        ] {
            assert!(expression.len() <= SQL_EXPRESSION_BYTES_MAX);
            assert!(SqlFilter::parse(&expression).is_err(), "{expression}");
        }
    }

    #[test]
    fn deeply_nested_filter_evaluates_on_a_small_stack() {
        // Each `NOT (` is two levels.
        let depth = SQL_NESTING_DEPTH_MAX / 2 - 2;
        let expression = format!("{}a > 5{}", "NOT (".repeat(depth), ")".repeat(depth));
        let filter = SqlFilter::parse(&expression).unwrap();
        let evaluation = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || filter.matches(None, &|_: &str| Some("6".to_owned())))
            .unwrap();
        assert_eq!(evaluation.join().unwrap(), depth.is_multiple_of(2));
    }

    #[test]
    fn moderate_nesting_is_accepted() {
        let expression = format!("{}a > 5{}", "(".repeat(20), ")".repeat(20));
        assert!(matches(&expression, &[("a", "6")]));
    }

    /// SQL-looking input: random sequences of the tokens filters are made of, so the
    /// fuzzing reaches the converter and evaluator, not just the tokenizer.
    fn sqlish() -> impl Strategy<Value = String> {
        let token = prop::sample::select(vec![
            "a", "b", "TAGS", "5", "-1", "1.5", "'x'", "''", "TRUE", "FALSE", "NULL", "=", "<>",
            "!=", "<", "<=", ">", ">=", "AND", "OR", "NOT", "IS", "IN", "BETWEEN", "(", ")", ",",
            "LIKE", "+", "*", "f(", "\"q\"", ".", ";", "1e999",
        ]);
        prop::collection::vec(token, 0..24).prop_map(|tokens| tokens.join(" "))
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(expression in any::<String>()) {
            let _ = SqlFilter::parse(&expression);
        }

        #[test]
        fn parsing_and_matching_sqlish_text_never_panics(
            expression in sqlish(),
            a in prop::option::of("-?[0-9]{1,3}(\\.[0-9])?|x|abc|true"),
            tag in prop::option::of("x|TagA"),
        ) {
            if let Ok(filter) = SqlFilter::parse(&expression) {
                let property = |name: &str| if name == "a" { a.clone() } else { None };
                let _ = filter.matches(tag.as_deref(), &property);
            }
        }

        #[test]
        fn not_between_is_the_complement_for_numbers(
            value in -100i64..100,
            low in -50i64..50,
            high in -50i64..50,
        ) {
            let property_value = value.to_string();
            let properties = [("a", property_value.as_str())];
            let inside = matches(&format!("a BETWEEN {low} AND {high}"), &properties);
            let outside = matches(&format!("a NOT BETWEEN {low} AND {high}"), &properties);
            prop_assert_ne!(inside, outside);
            prop_assert_eq!(inside, low <= value && value <= high);
        }
    }
}
