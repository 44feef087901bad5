//! The small expression language inside `${{ ... }}`: references
//! (`params.version`, `steps.migrate.outcome`), literals (`'failed'`, `3`,
//! `true`), comparisons (`==`, `!=`, `<`, `<=`, `>`, `>=`), `&&`, `||`, `!`
//! and parentheses. Parsing and evaluation only: no I/O.

use serde_json::Value;
use std::fmt;

/// A reference an expression can make.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reference {
    /// `params.NAME`: a runbook parameter.
    Param(String),
    /// `vars.NAME`: a variable of the chosen environment.
    Var(String),
    /// `steps.ID.outputs.KEY`: an output of an ancestor step.
    StepOutput {
        /// The step's id.
        step: String,
        /// The output's key.
        key: String,
    },
    /// `steps.ID.outcome`: `succeeded`, `failed`, `skipped`, `cancelled`, `denied`.
    StepOutcome(String),
    /// `secrets.NAME`: a sealed secret handle.
    Secret(String),
    /// `run.id`, `run.environment`, `run.operator`.
    Run(RunField),
    /// `item` or `item.KEY`: the current element of a `for_each` step.
    Item(Option<String>),
}

/// The facts about the current run an expression can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RunField {
    /// The run's id.
    Id,
    /// The environment's name.
    Environment,
    /// Who started the run.
    Operator,
    /// How the run went so far: `running` until the `always` steps, then
    /// `succeeded`, `failed`, `denied` or `cancelled`.
    Status,
    /// The step that stopped the run, empty if none.
    FailedStep,
}

impl fmt::Display for Reference {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Param(name) => write!(formatter, "params.{name}"),
            Reference::Var(name) => write!(formatter, "vars.{name}"),
            Reference::StepOutput { step, key } => write!(formatter, "steps.{step}.outputs.{key}"),
            Reference::StepOutcome(step) => write!(formatter, "steps.{step}.outcome"),
            Reference::Secret(name) => write!(formatter, "secrets.{name}"),
            Reference::Run(RunField::Id) => formatter.write_str("run.id"),
            Reference::Run(RunField::Environment) => formatter.write_str("run.environment"),
            Reference::Run(RunField::Operator) => formatter.write_str("run.operator"),
            Reference::Run(RunField::Status) => formatter.write_str("run.status"),
            Reference::Run(RunField::FailedStep) => formatter.write_str("run.failed_step"),
            Reference::Item(None) => formatter.write_str("item"),
            Reference::Item(Some(key)) => write!(formatter, "item.{key}"),
        }
    }
}

/// A comparison or logical operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
    /// `<`
    Less,
    /// `<=`
    LessOrEqual,
    /// `>`
    Greater,
    /// `>=`
    GreaterOrEqual,
    /// `&&`
    And,
    /// `||`
    Or,
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A string, number, boolean or null.
    Literal(Value),
    /// A reference.
    Reference(Reference),
    /// `!expr`.
    Not(Box<Expr>),
    /// `left OP right`.
    Binary(Box<Expr>, Operator, Box<Expr>),
}

/// How tightly an operator binds: `||` loosest, then `&&`, then the
/// comparisons (as the parser reads them).
fn precedence(operator: Operator) -> u8 {
    match operator {
        Operator::Or => 1,
        Operator::And => 2,
        _ => 3,
    }
}

/// Writes an expression back as it parses: the same meaning, with
/// parentheses only where precedence needs them. A placeholder that names
/// an expression not known yet (`plan`, `validate`) is written this way.
impl fmt::Display for Expr {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Literal(Value::String(text)) if !text.contains('\'') => {
                write!(formatter, "'{text}'")
            }
            Expr::Literal(Value::String(text)) => write!(formatter, "\"{text}\""),
            Expr::Literal(value) => write!(formatter, "{value}"),
            Expr::Reference(reference) => write!(formatter, "{reference}"),
            Expr::Not(inner) => match inner.as_ref() {
                Expr::Binary(..) => write!(formatter, "!({inner})"),
                _ => write!(formatter, "!{inner}"),
            },
            Expr::Binary(left, operator, right) => {
                let binds = precedence(*operator);
                // `&&` and `||` chains read left to right, so only a right
                // operand that binds as loosely needs parentheses; a
                // comparison does not chain, so neither side may be one.
                let left_loosest = if binds == 3 { 4 } else { binds };
                let wrap = |operand: &Expr, loosest: u8| match operand {
                    Expr::Binary(_, inner, _) if precedence(*inner) < loosest => {
                        format!("({operand})")
                    }
                    _ => operand.to_string(),
                };
                write!(
                    formatter,
                    "{} {} {}",
                    wrap(left, left_loosest),
                    Token::Operator(*operator),
                    wrap(right, binds + 1)
                )
            }
        }
    }
}

/// Why an expression did not parse: a message and a hint.
pub type ParseError = (String, String);

const EXPECTED: &str = "write one of `params.NAME`, `vars.NAME`, `steps.ID.outputs.KEY`, `steps.ID.outcome`, `secrets.NAME`, `run.id`, `run.environment`, `run.operator`, `run.status`, `run.failed_step`, `item`";

impl Expr {
    /// Parses the text between `${{` and `}}`.
    pub fn parse(text: &str) -> Result<Expr, ParseError> {
        let tokens = tokenize(text)?;
        if tokens.is_empty() {
            return Err(("empty expression".into(), EXPECTED.into()));
        }
        let mut parser = Parser {
            tokens,
            position: 0,
            nesting: 0,
        };
        let (expr, _height) = parser.or()?;
        if let Some(token) = parser.tokens.get(parser.position) {
            return Err((
                format!("unexpected `{token}` in `{text}`"),
                "combine conditions with `&&` and `||`, compare with `==`, `!=`, `<`, `>`".into(),
            ));
        }
        Ok(expr)
    }

    /// Every reference in the expression.
    pub fn references(&self) -> Vec<&Reference> {
        let mut found = Vec::new();
        self.collect(&mut found);
        found
    }

    fn collect<'a>(&'a self, found: &mut Vec<&'a Reference>) {
        match self {
            Expr::Literal(_) => {}
            Expr::Reference(reference) => found.push(reference),
            Expr::Not(inner) => inner.collect(found),
            Expr::Binary(left, _, right) => {
                left.collect(found);
                right.collect(found);
            }
        }
    }

    /// Evaluates with `lookup` giving each reference's value.
    pub fn evaluate<E>(
        &self,
        lookup: &mut impl FnMut(&Reference) -> Result<Value, E>,
    ) -> Result<Value, E> {
        Ok(match self {
            Expr::Literal(value) => value.clone(),
            Expr::Reference(reference) => lookup(reference)?,
            Expr::Not(inner) => Value::Bool(!truthy(&inner.evaluate(lookup)?)),
            Expr::Binary(left, Operator::And, right) => {
                let left = left.evaluate(lookup)?;
                if truthy(&left) {
                    right.evaluate(lookup)?
                } else {
                    left
                }
            }
            Expr::Binary(left, Operator::Or, right) => {
                let left = left.evaluate(lookup)?;
                if truthy(&left) {
                    left
                } else {
                    right.evaluate(lookup)?
                }
            }
            Expr::Binary(left, operator, right) => {
                let left = left.evaluate(lookup)?;
                let right = right.evaluate(lookup)?;
                Value::Bool(compare(&left, *operator, &right))
            }
        })
    }
}

impl Expr {
    /// The expression's value where `lookup` knows only some references
    /// (`None`: not known yet, such as another step's outcome while
    /// planning): `None` when the value depends on one, else the value.
    /// `false && X` is false and `true || X` true whatever `X` is, so a
    /// condition can be decided before the run when its known part
    /// settles it.
    pub fn decide(&self, lookup: &mut impl FnMut(&Reference) -> Option<Value>) -> Option<Value> {
        match self {
            Expr::Literal(value) => Some(value.clone()),
            Expr::Reference(reference) => lookup(reference),
            Expr::Not(inner) => inner
                .decide(lookup)
                .map(|value| Value::Bool(!truthy(&value))),
            Expr::Binary(left, Operator::And, right) => match left.decide(lookup) {
                Some(left) if !truthy(&left) => Some(left),
                Some(_) => right.decide(lookup),
                None => match right.decide(lookup) {
                    Some(right) if !truthy(&right) => Some(Value::Bool(false)),
                    _ => None,
                },
            },
            Expr::Binary(left, Operator::Or, right) => match left.decide(lookup) {
                Some(left) if truthy(&left) => Some(left),
                Some(_) => right.decide(lookup),
                None => match right.decide(lookup) {
                    Some(right) if truthy(&right) => Some(Value::Bool(true)),
                    _ => None,
                },
            },
            Expr::Binary(left, operator, right) => {
                let left = left.decide(lookup)?;
                let right = right.decide(lookup)?;
                Some(Value::Bool(compare(&left, *operator, &right)))
            }
        }
    }
}

/// Whether a value counts as true in `if`: `false`, `null`, `0`, `""` and
/// `"false"` do not.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(flag) => *flag,
        Value::Number(number) => number.as_f64().is_some_and(|number| number != 0.0),
        Value::String(text) => !text.is_empty() && text != "false",
        Value::Array(items) => !items.is_empty(),
        Value::Object(_) => true,
    }
}

fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

fn compare(left: &Value, operator: Operator, right: &Value) -> bool {
    use std::cmp::Ordering;
    let ordering = match (as_number(left), as_number(right)) {
        (Some(left), Some(right)) => left.partial_cmp(&right),
        _ => match (left, right) {
            (Value::String(left), Value::String(right)) => Some(left.cmp(right)),
            (left, right) if left == right => Some(Ordering::Equal),
            (Value::Bool(left), Value::Bool(right)) => Some(left.cmp(right)),
            _ => None,
        },
    };
    match operator {
        Operator::Equal => ordering == Some(Ordering::Equal),
        Operator::NotEqual => ordering != Some(Ordering::Equal),
        Operator::Less => ordering == Some(Ordering::Less),
        Operator::LessOrEqual => matches!(ordering, Some(Ordering::Less | Ordering::Equal)),
        Operator::Greater => ordering == Some(Ordering::Greater),
        Operator::GreaterOrEqual => matches!(ordering, Some(Ordering::Greater | Ordering::Equal)),
        Operator::And | Operator::Or => unreachable!("logical operators are evaluated lazily"),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Name(String),
    Literal(Value),
    Operator(Operator),
    Not,
    Open,
    Close,
}

impl fmt::Display for Token {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Name(name) => formatter.write_str(name),
            Token::Literal(value) => write!(formatter, "{value}"),
            Token::Operator(operator) => formatter.write_str(match operator {
                Operator::Equal => "==",
                Operator::NotEqual => "!=",
                Operator::Less => "<",
                Operator::LessOrEqual => "<=",
                Operator::Greater => ">",
                Operator::GreaterOrEqual => ">=",
                Operator::And => "&&",
                Operator::Or => "||",
            }),
            Token::Not => formatter.write_str("!"),
            Token::Open => formatter.write_str("("),
            Token::Close => formatter.write_str(")"),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, ParseError> {
    let characters: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut index = 0;
    while index < characters.len() {
        let character = characters[index];
        let next = characters.get(index + 1).copied();
        let two = |token| (token, 2);
        let (token, width) = match (character, next) {
            (' ' | '\t' | '\n', _) => {
                index += 1;
                continue;
            }
            ('=', Some('=')) => two(Token::Operator(Operator::Equal)),
            ('!', Some('=')) => two(Token::Operator(Operator::NotEqual)),
            ('<', Some('=')) => two(Token::Operator(Operator::LessOrEqual)),
            ('>', Some('=')) => two(Token::Operator(Operator::GreaterOrEqual)),
            ('&', Some('&')) => two(Token::Operator(Operator::And)),
            ('|', Some('|')) => two(Token::Operator(Operator::Or)),
            ('<', _) => (Token::Operator(Operator::Less), 1),
            ('>', _) => (Token::Operator(Operator::Greater), 1),
            ('!', _) => (Token::Not, 1),
            ('(', _) => (Token::Open, 1),
            (')', _) => (Token::Close, 1),
            ('\'' | '"', _) => {
                let quote = character;
                let Some(length) = characters[index + 1..]
                    .iter()
                    .position(|found| *found == quote)
                else {
                    return Err((
                        "a string is not closed".into(),
                        format!("close it with {quote}"),
                    ));
                };
                let literal: String = characters[index + 1..index + 1 + length].iter().collect();
                (Token::Literal(Value::String(literal)), length + 2)
            }
            (digit, _)
                if digit.is_ascii_digit()
                    || (digit == '-' && next.is_some_and(|next| next.is_ascii_digit())) =>
            {
                let length = characters[index + 1..]
                    .iter()
                    .position(|found| !(found.is_ascii_digit() || *found == '.'))
                    .unwrap_or(characters.len() - index - 1)
                    + 1;
                let literal: String = characters[index..index + length].iter().collect();
                let number: f64 = literal.parse().map_err(|_| {
                    (
                        format!("`{literal}` is not a number"),
                        "write numbers like 3 or 2.5".to_owned(),
                    )
                })?;
                let value = if literal.contains('.') {
                    serde_json::Number::from_f64(number).map_or(Value::Null, Value::Number)
                } else {
                    Value::from(number as i64)
                };
                (Token::Literal(value), length)
            }
            (letter, _) if letter.is_ascii_alphabetic() || letter == '_' => {
                let length = characters[index..]
                    .iter()
                    .position(|found| {
                        !(found.is_ascii_alphanumeric() || matches!(found, '_' | '-' | '.'))
                    })
                    .unwrap_or(characters.len() - index);
                let name: String = characters[index..index + length].iter().collect();
                let token = match name.as_str() {
                    "true" => Token::Literal(Value::Bool(true)),
                    "false" => Token::Literal(Value::Bool(false)),
                    "null" => Token::Literal(Value::Null),
                    _ => Token::Name(name),
                };
                (token, length)
            }
            (other, _) => {
                return Err((
                    format!("unexpected `{other}` in `{text}`"),
                    "expressions use references, quoted strings, numbers, ==, !=, <, >, &&, || and !".into(),
                ));
            }
        };
        tokens.push(token);
        index += width;
    }
    Ok(tokens)
}

/// How deep an expression may nest: parentheses, `!` and each operator of
/// a chain (`a && b && c` is two deep) all count. Evaluating, walking and
/// dropping an expression recurse once per level, so this bounds the stack
/// they use; no real condition comes near it.
pub const MAX_DEPTH: usize = 64;

struct Parser {
    tokens: Vec<Token>,
    position: usize,
    /// Parentheses and `!` open around the current token: the parser's
    /// own recursion, checked before it goes deeper.
    nesting: usize,
}

/// A parsed expression with its height (a literal or reference is 1).
type Parsed = (Expr, usize);

fn too_deep() -> ParseError {
    (
        format!("the expression nests deeper than {MAX_DEPTH} levels"),
        "split the condition: compute parts as outputs of earlier steps".into(),
    )
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position)
    }

    /// `left OP right`, refused when the result would be too deep.
    fn binary(left: Parsed, operator: Operator, right: Parsed) -> Result<Parsed, ParseError> {
        let height = 1 + left.1.max(right.1);
        if height > MAX_DEPTH {
            return Err(too_deep());
        }
        Ok((
            Expr::Binary(Box::new(left.0), operator, Box::new(right.0)),
            height,
        ))
    }

    /// Enters a parenthesis or `!`, refusing to recurse past the limit.
    fn enter(&mut self) -> Result<(), ParseError> {
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            return Err(too_deep());
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Parsed, ParseError> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Operator(Operator::Or)) {
            self.position += 1;
            let right = self.and()?;
            left = Self::binary(left, Operator::Or, right)?;
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Parsed, ParseError> {
        let mut left = self.unary()?;
        while self.peek() == Some(&Token::Operator(Operator::And)) {
            self.position += 1;
            let right = self.unary()?;
            left = Self::binary(left, Operator::And, right)?;
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Parsed, ParseError> {
        if self.peek() == Some(&Token::Not) {
            self.position += 1;
            self.enter()?;
            let (inner, height) = self.unary()?;
            self.nesting -= 1;
            if height + 1 > MAX_DEPTH {
                return Err(too_deep());
            }
            return Ok((Expr::Not(Box::new(inner)), height + 1));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Parsed, ParseError> {
        let left = self.primary()?;
        match self.peek() {
            Some(Token::Operator(operator))
                if !matches!(operator, Operator::And | Operator::Or) =>
            {
                let operator = *operator;
                self.position += 1;
                let right = self.primary()?;
                Self::binary(left, operator, right)
            }
            _ => Ok(left),
        }
    }

    fn primary(&mut self) -> Result<Parsed, ParseError> {
        let token = self.tokens.get(self.position).cloned();
        self.position += 1;
        match token {
            Some(Token::Literal(value)) => Ok((Expr::Literal(value), 1)),
            Some(Token::Name(name)) => Ok((Expr::Reference(parse_reference(&name)?), 1)),
            Some(Token::Open) => {
                self.enter()?;
                let inner = self.or()?;
                self.nesting -= 1;
                if self.peek() != Some(&Token::Close) {
                    return Err(("`(` is not closed".into(), "close it with `)`".into()));
                }
                self.position += 1;
                Ok(inner)
            }
            Some(other) => Err((format!("unexpected `{other}`"), EXPECTED.into())),
            None => Err(("the expression ends too early".into(), EXPECTED.into())),
        }
    }
}

fn parse_reference(body: &str) -> Result<Reference, ParseError> {
    let segments: Vec<&str> = body.split('.').collect();
    if segments.iter().any(|segment| segment.is_empty()) {
        return Err((format!("`{body}` is not a reference"), EXPECTED.into()));
    }
    Ok(match segments.as_slice() {
        ["params", name] => Reference::Param((*name).into()),
        ["vars", name] => Reference::Var((*name).into()),
        ["secrets", name] => Reference::Secret((*name).into()),
        ["steps", step, "outputs", key] => Reference::StepOutput {
            step: (*step).into(),
            key: (*key).into(),
        },
        ["steps", step, "outcome"] => Reference::StepOutcome((*step).into()),
        ["run", "id"] => Reference::Run(RunField::Id),
        ["run", "environment"] => Reference::Run(RunField::Environment),
        ["run", "operator"] => Reference::Run(RunField::Operator),
        ["run", "status"] => Reference::Run(RunField::Status),
        ["run", "failed_step"] => Reference::Run(RunField::FailedStep),
        ["item"] => Reference::Item(None),
        ["item", key] => Reference::Item(Some((*key).into())),
        _ => return Err((format!("unknown reference `{body}`"), EXPECTED.into())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decide_settles_what_the_known_part_settles() {
        let parse = |text: &str| Expr::parse(text).unwrap();
        // `params.mode` is known; a step's outcome is not.
        let mut lookup = |reference: &Reference| match reference {
            Reference::Param(_) => Some(serde_json::Value::from("standard")),
            _ => None,
        };
        let decide =
            |text: &str, lookup: &mut dyn FnMut(&Reference) -> Option<serde_json::Value>| {
                parse(text)
                    .decide(&mut |reference| lookup(reference))
                    .map(|value| truthy(&value))
            };
        assert_eq!(
            decide(
                "params.mode == 'canary' && steps.a.outcome == 'succeeded'",
                &mut lookup
            ),
            Some(false)
        );
        assert_eq!(
            decide(
                "steps.a.outcome == 'succeeded' && params.mode == 'canary'",
                &mut lookup
            ),
            Some(false)
        );
        assert_eq!(
            decide(
                "params.mode == 'standard' || steps.a.outcome == 'failed'",
                &mut lookup
            ),
            Some(true)
        );
        assert_eq!(
            decide(
                "params.mode == 'standard' && steps.a.outcome == 'succeeded'",
                &mut lookup
            ),
            None
        );
        assert_eq!(decide("!(steps.a.outcome == 'failed')", &mut lookup), None);
        assert_eq!(decide("params.mode != 'canary'", &mut lookup), Some(true));
    }

    fn evaluate(text: &str) -> Value {
        let expr = Expr::parse(text).unwrap_or_else(|error| panic!("{text}: {error:?}"));
        expr.evaluate(&mut |reference| {
            Ok::<_, ()>(match reference.to_string().as_str() {
                "params.replicas" => json!("3"),
                "steps.migrate.outcome" => json!("failed"),
                "vars.canary" => json!(true),
                "item" => json!("api"),
                _ => Value::Null,
            })
        })
        .unwrap()
    }

    #[test]
    fn comparisons_coerce_numeric_strings() {
        assert_eq!(evaluate("params.replicas > 2"), json!(true));
        assert_eq!(evaluate("params.replicas == 3"), json!(true));
        assert_eq!(evaluate("params.replicas <= 2.5"), json!(false));
    }

    #[test]
    fn outcomes_compare_with_quoted_strings() {
        assert_eq!(evaluate("steps.migrate.outcome == 'failed'"), json!(true));
        assert_eq!(
            evaluate("steps.migrate.outcome != \"failed\""),
            json!(false)
        );
    }

    #[test]
    fn logic_has_the_usual_precedence() {
        assert_eq!(
            evaluate("vars.canary && item == 'api' || false"),
            json!(true)
        );
        assert_eq!(evaluate("!vars.canary || item == 'worker'"), json!(false));
        assert_eq!(evaluate("!(vars.canary && item == 'worker')"), json!(true));
    }

    /// Blue/green computes the idle colour from the live one read by a
    /// step: `&&` and `||` return an operand, so `a && b || c` picks.
    #[test]
    fn and_or_choose_a_value_as_a_conditional() {
        let idle = "steps.live.outputs.colour == 'blue' && 'green' || 'blue'";
        let expr = Expr::parse(idle).unwrap();
        for (live, expected) in [("blue", "green"), ("green", "blue")] {
            let value = expr.evaluate(&mut |_| Ok::<_, ()>(json!(live))).unwrap();
            assert_eq!(value, json!(expected), "live {live}");
        }
        assert_eq!(
            evaluate("params.replicas > 2 && 'many' || 'few'"),
            json!("many")
        );
    }

    #[test]
    fn an_expression_is_written_back_as_it_parses() {
        for text in [
            "steps.live.outputs.colour == 'blue' && 'green' || 'blue'",
            "vars.a && (vars.b || vars.c)",
            "!(vars.a && vars.b) || !vars.c",
            "params.x != \"it's\" && params.n >= -2.5",
            "(vars.a || vars.b) || vars.c",
            "vars.a || (vars.b || vars.c)",
            "(vars.a == 1) == (vars.b == 2)",
        ] {
            let expr = Expr::parse(text).unwrap();
            let written = expr.to_string();
            assert_eq!(Expr::parse(&written).unwrap(), expr, "{text} → {written}");
        }
        assert_eq!(
            Expr::parse("(params.a == 1) && ((vars.c))")
                .unwrap()
                .to_string(),
            "params.a == 1 && vars.c"
        );
    }

    #[test]
    fn truthiness_follows_the_documented_rules() {
        for falsy in [
            json!(false),
            json!(null),
            json!(0),
            json!(""),
            json!("false"),
        ] {
            assert!(!truthy(&falsy), "{falsy}");
        }
        for true_value in [json!(true), json!(1), json!("yes"), json!([1])] {
            assert!(truthy(&true_value), "{true_value}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let parenthesised = format!("{}params.x{}", "(".repeat(2_000), ")".repeat(2_000));
        assert!(
            Expr::parse(&parenthesised)
                .unwrap_err()
                .0
                .contains("deeper than 64")
        );
        let negated = format!("{}params.x", "!".repeat(2_000));
        assert!(
            Expr::parse(&negated)
                .unwrap_err()
                .0
                .contains("deeper than 64")
        );
        let chained = vec!["params.x"; 2_000].join(" && ");
        assert!(
            Expr::parse(&chained)
                .unwrap_err()
                .0
                .contains("deeper than 64")
        );
        let fine = format!("{}params.x{}", "(".repeat(60), ")".repeat(60));
        assert!(Expr::parse(&fine).is_ok());
        let chain = vec!["params.x"; 60].join(" || ");
        assert!(Expr::parse(&chain).is_ok());
    }

    #[test]
    fn malformed_expressions_are_rejected_with_hints() {
        assert!(
            Expr::parse("params.x ==")
                .unwrap_err()
                .0
                .contains("ends too early")
        );
        assert!(
            Expr::parse("(params.x")
                .unwrap_err()
                .0
                .contains("not closed")
        );
        assert!(
            Expr::parse("env.HOME")
                .unwrap_err()
                .0
                .contains("unknown reference `env.HOME`")
        );
        assert!(
            Expr::parse("params.x = 1")
                .unwrap_err()
                .0
                .contains("unexpected `=`")
        );
    }
}
