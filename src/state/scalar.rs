//! What a scalar of the state file means: the rules of the agent's writer.
//!
//! The agent writes with PyYAML, a YAML 1.1 library: the plain scalar `y` is a string to it,
//! `1e3` is a string (its floats need a dot and a signed exponent), `017` is octal and
//! `2001-12-14` a date. These rules are PyYAML's resolver and `SafeConstructor`, pattern for
//! pattern (the tests check them against PyYAML's own regular expressions); a document that
//! declares `%YAML 1.2` is read by the YAML 1.2 core schema instead, and a JSON document by
//! JSON's rules. Whatever JSON cannot carry (infinities, NaN, a date that does not exist, an
//! integer of more digits than Python will print) is carried as the text that was written.

use std::borrow::Cow;

use super::value::StateValue;

/// Which rules resolve plain scalars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Schema {
    /// PyYAML's (YAML 1.1): the default.
    Yaml11,
    /// The YAML 1.2 core schema, for documents that start with `%YAML 1.2`.
    Yaml12,
    /// JSON's, for a state file that is a JSON document.
    Json,
}

/// Most digits of an integer carried as a number: Python's own limit for turning text into
/// an int and back (`sys.get_int_max_str_digits()`), so the agent's side could write it
/// and every Python client can read it.
pub(crate) const MAX_INT_DIGITS: usize = 4300;

/// A plain (unquoted, untagged) scalar.
pub(crate) fn plain(text: String, schema: Schema) -> StateValue {
    let resolved = match schema {
        Schema::Yaml11 => plain_yaml11(&text),
        Schema::Yaml12 => plain_yaml12(&text),
        Schema::Json => plain_json(&text),
    };
    // Most scalars are strings: they keep the parser's own allocation.
    resolved.unwrap_or(StateValue::Text(text))
}

/// Whether a plain scalar is a string both to PyYAML and to YAML 1.2 readers: not a bool,
/// number, null or date to either, so it can be written unquoted.
pub(crate) fn is_plain_string(text: &str) -> bool {
    // Not `plain_yaml11` alone: a float JSON cannot carry (`.inf`) is read as its text, but
    // is a float to PyYAML.
    let yaml11 = match text.as_bytes().first() {
        None => false,
        Some(b'-' | b'+' | b'0'..=b'9' | b'.') => {
            !is_float11(text) && !is_int11(text) && !is_timestamp11(text)
        }
        Some(_) => plain_yaml11(text).is_none(),
    };
    yaml11 && plain_yaml12(text).is_none()
}

/// A scalar with an explicit tag of the YAML 1.1 tag repository (`!!int`, …); `None` for
/// any other tag, which is then ignored.
pub(crate) fn tagged(tag: &str, text: String) -> Result<StateValue, String> {
    let Some(kind) = tag.strip_prefix("tag:yaml.org,2002:") else {
        return Err(text);
    };
    let constructed = match kind {
        "str" => None,
        "null" => Some(StateValue::Null),
        "bool" => bool_word(&text).map(StateValue::Bool),
        "int" => int11(&text),
        "float" => float11(&text),
        "timestamp" => timestamp(&text, false).map(StateValue::Text),
        // Bytes: JSON has none, so the base64 text, without the line breaks of its layout.
        "binary" => Some(StateValue::Text(text.split_whitespace().collect())),
        _ => return Err(text),
    };
    Ok(constructed.unwrap_or(StateValue::Text(text)))
}

/// An object key's text: strings as they are, other scalars as JSON (and Python's
/// `json.dumps`) write them as keys.
pub(crate) fn key_text(key: StateValue) -> String {
    match key {
        StateValue::Text(text) => text,
        StateValue::Null => "null".into(),
        StateValue::Bool(b) => if b { "true" } else { "false" }.into(),
        StateValue::Int(n) => n.to_string(),
        StateValue::BigInt(digits) => digits.get().into(),
        StateValue::Float(f) => python_repr(f),
        // A mapping or list as a key (PyYAML refuses these): its compact JSON.
        composite => composite.to_json(),
    }
}

// ---- YAML 1.1, as PyYAML resolves and constructs -------------------------------------------

/// `None` where the scalar is its text.
fn plain_yaml11(text: &str) -> Option<StateValue> {
    let Some(&first) = text.as_bytes().first() else {
        return Some(StateValue::Null);
    };
    // PyYAML picks the candidate patterns by the first character, in the order it
    // registers them: bool, float, int, merge, null, timestamp, value.
    let resolved = match first {
        b'y' | b'Y' | b'n' | b'N' | b't' | b'T' | b'f' | b'F' | b'o' | b'O' => bool_word(text)
            .map(StateValue::Bool)
            .or_else(|| is_null11(text).then_some(StateValue::Null)),
        b'~' => (text == "~").then_some(StateValue::Null),
        b'-' | b'+' | b'0'..=b'9' | b'.' => {
            if is_float11(text) {
                float11(text)
            } else if is_int11(text) {
                int11(text)
            } else if is_timestamp11(text) {
                timestamp(text, true).map(StateValue::Text)
            } else {
                None
            }
        }
        _ => None,
    };
    // `<<` and `=` resolve to the merge and value tags, which have no constructor of their
    // own: as values they are their text (a `<<` key is handled by the composer).
    resolved
}

fn bool_word(text: &str) -> Option<bool> {
    match text {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

fn is_null11(text: &str) -> bool {
    matches!(text, "~" | "null" | "Null" | "NULL" | "")
}

/// A cursor over ASCII bytes, for the patterns below.
struct Scan<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            s: text.as_bytes(),
            i: 0,
        }
    }
    fn done(&self) -> bool {
        self.i == self.s.len()
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        self.i += usize::from(hit);
        hit
    }
    fn eat_if(&mut self, f: impl Fn(u8) -> bool) -> bool {
        let hit = self.peek().is_some_and(f);
        self.i += usize::from(hit);
        hit
    }
    /// Eats bytes while `f` holds; how many.
    fn eat_while(&mut self, f: impl Fn(u8) -> bool) -> usize {
        let start = self.i;
        while self.eat_if(&f) {}
        self.i - start
    }
    fn sign(&mut self) {
        let _ = self.eat_if(|b| b == b'-' || b == b'+');
    }
    fn rest(&self) -> &'a [u8] {
        &self.s[self.i..]
    }
}

fn digit_(b: u8) -> bool {
    b.is_ascii_digit() || b == b'_'
}

/// `(?::[0-5]?[0-9])+`: at least one base-60 part.
fn sexagesimal_parts(scan: &mut Scan<'_>) -> bool {
    let mut parts = 0;
    while scan.eat(b':') {
        if scan.peek().is_some_and(|b| (b'0'..=b'5').contains(&b))
            && scan.s.get(scan.i + 1).is_some_and(u8::is_ascii_digit)
        {
            scan.i += 2;
        } else if !scan.eat_if(|b| b.is_ascii_digit()) {
            return false;
        }
        parts += 1;
    }
    parts > 0
}

/// `[eE][-+][0-9]+`, if there is one (it must be whole).
fn exponent11(scan: &mut Scan<'_>) -> bool {
    if scan.eat_if(|b| b == b'e' || b == b'E') {
        scan.eat_if(|b| b == b'-' || b == b'+') && scan.eat_while(|b| b.is_ascii_digit()) > 0
    } else {
        true
    }
}

/// PyYAML's float pattern:
/// `[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?` | `\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?`
/// | `[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*` | `[-+]?\.(?:inf|Inf|INF)` |
/// `\.(?:nan|NaN|NAN)`.
fn is_float11(text: &str) -> bool {
    let mut scan = Scan::new(text);
    let signed = matches!(scan.peek(), Some(b'-' | b'+'));
    scan.sign();
    if scan.peek() == Some(b'.') {
        let rest = &scan.rest()[1..];
        if matches!(rest, b"inf" | b"Inf" | b"INF") {
            return true;
        }
        if signed {
            return false;
        }
        if matches!(rest, b"nan" | b"NaN" | b"NAN") {
            return true;
        }
        scan.i += 1;
        return scan.eat_if(|b| b.is_ascii_digit())
            && {
                scan.eat_while(digit_);
                exponent11(&mut scan)
            }
            && scan.done();
    }
    if !scan.eat_if(|b| b.is_ascii_digit()) {
        return false;
    }
    scan.eat_while(digit_);
    if scan.peek() == Some(b':') {
        return sexagesimal_parts(&mut scan) && scan.eat(b'.') && {
            scan.eat_while(digit_);
            scan.done()
        };
    }
    scan.eat(b'.') && {
        scan.eat_while(digit_);
        exponent11(&mut scan) && scan.done()
    }
}

/// PyYAML's int pattern: `[-+]?0b[0-1_]+` | `[-+]?0[0-7_]+` | `[-+]?(?:0|[1-9][0-9_]*)` |
/// `[-+]?0x[0-9a-fA-F_]+` | `[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+`.
fn is_int11(text: &str) -> bool {
    let mut scan = Scan::new(text);
    scan.sign();
    if scan.eat(b'0') {
        if scan.done() {
            return true;
        }
        if scan.eat(b'b') {
            return scan.eat_while(|b| b == b'0' || b == b'1' || b == b'_') > 0 && scan.done();
        }
        if scan.eat(b'x') {
            return scan.eat_while(|b| b.is_ascii_hexdigit() || b == b'_') > 0 && scan.done();
        }
        return scan.eat_while(|b| (b'0'..=b'7').contains(&b) || b == b'_') > 0 && scan.done();
    }
    if !scan.eat_if(|b| (b'1'..=b'9').contains(&b)) {
        return false;
    }
    scan.eat_while(digit_);
    scan.done() || (sexagesimal_parts(&mut scan) && scan.done())
}

/// PyYAML's implicit timestamp pattern: `YYYY-MM-DD`, or a date and time.
fn is_timestamp11(text: &str) -> bool {
    let b = text.as_bytes();
    let date_only = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && [0, 1, 2, 3, 5, 6, 8, 9]
            .iter()
            .all(|&i| b[i].is_ascii_digit());
    date_only || parse_timestamp(text).is_some_and(|t| t.time.is_some())
}

/// `SafeConstructor.construct_yaml_int`: `_` ignored, then binary, hex, octal (a leading
/// 0), base 60 (`:`) or decimal. `None` if the digits do not make a number.
fn int11(text: &str) -> Option<StateValue> {
    let cleaned = without_underscores(text);
    let (negative, body) = match cleaned.as_bytes().first()? {
        b'-' => (true, &cleaned[1..]),
        b'+' => (false, &cleaned[1..]),
        _ => (false, &cleaned[..]),
    };
    let mut number = BigUint::default();
    if body == "0" {
        return Some(StateValue::Int(0));
    } else if let Some(bin) = body.strip_prefix("0b") {
        number.push_digits(bin, 2)?;
    } else if let Some(hex) = body.strip_prefix("0x") {
        number.push_digits(hex, 16)?;
    } else if body.starts_with('0') {
        number.push_digits(body, 8)?;
    } else if body.contains(':') {
        let mut parts = body.split(':');
        number.push_digits(parts.next()?, 10)?;
        for part in parts {
            number.mul_add(60, part.parse().ok()?)?;
        }
    } else {
        return decimal_int(&cleaned);
    }
    number.into_value(negative)
}

/// The text without PyYAML's digit separators, copied only when it has some.
fn without_underscores(text: &str) -> Cow<'_, str> {
    if text.contains('_') {
        Cow::Owned(text.replace('_', ""))
    } else {
        Cow::Borrowed(text)
    }
}

/// `SafeConstructor.construct_yaml_float`. Infinities and NaN, which JSON lacks, are `None`:
/// the caller carries the text.
fn float11(text: &str) -> Option<StateValue> {
    let mut cleaned = without_underscores(text);
    if cleaned.bytes().any(|b| b.is_ascii_uppercase()) {
        cleaned = Cow::Owned(cleaned.to_ascii_lowercase());
    }
    let (negative, body) = match cleaned.as_bytes().first()? {
        b'-' => (true, &cleaned[1..]),
        b'+' => (false, &cleaned[1..]),
        _ => (false, &cleaned[..]),
    };
    let magnitude = if body.contains(':') {
        // Summed from the last part up, in floats, exactly as PyYAML does.
        let mut value = 0.0;
        let mut base = 1.0;
        for part in body.rsplit(':') {
            value += python_float(part)? * base;
            base *= 60.0;
        }
        value
    } else {
        python_float(body)?
    };
    let value = if negative { -magnitude } else { magnitude };
    value.is_finite().then_some(StateValue::Float(value))
}

/// Python's `float(text)` for the digits the patterns allow (`inf` and `nan` included).
fn python_float(text: &str) -> Option<f64> {
    match text {
        ".inf" => Some(f64::INFINITY),
        ".nan" => Some(f64::NAN),
        "" => None,
        _ => text.parse().ok(),
    }
}

/// A timestamp's parts, by `SafeConstructor.timestamp_regexp`.
struct Timestamp<'a> {
    year: u32,
    month: u32,
    day: u32,
    time: Option<Time<'a>>,
}

struct Time<'a> {
    hour: u32,
    minute: u32,
    second: u32,
    fraction: &'a str,
    /// Minutes east of UTC; `None` for a time without a zone.
    offset: Option<i32>,
}

/// `YYYY-M?M-D?D` then, optionally, `([Tt]|[ \t]+)H?H:MM:SS(\.F*)?([ \t]*(Z|[-+]H?H(:MM)?))?`.
fn parse_timestamp(text: &str) -> Option<Timestamp<'_>> {
    let mut scan = Scan::new(text);
    let number = |scan: &mut Scan<'_>, min: usize, max: usize| -> Option<u32> {
        let start = scan.i;
        let len = scan
            .rest()
            .iter()
            .take(max)
            .take_while(|b| b.is_ascii_digit())
            .count();
        (len >= min).then_some(())?;
        scan.i += len;
        text[start..scan.i].parse().ok()
    };
    let year = number(&mut scan, 4, 4)?;
    scan.eat(b'-').then_some(())?;
    let month = number(&mut scan, 1, 2)?;
    scan.eat(b'-').then_some(())?;
    let day = number(&mut scan, 1, 2)?;
    if scan.done() {
        return Some(Timestamp {
            year,
            month,
            day,
            time: None,
        });
    }
    if !scan.eat_if(|b| b == b'T' || b == b't') && scan.eat_while(|b| b == b' ' || b == b'\t') == 0
    {
        return None;
    }
    let hour = number(&mut scan, 1, 2)?;
    scan.eat(b':').then_some(())?;
    let minute = number(&mut scan, 2, 2)?;
    scan.eat(b':').then_some(())?;
    let second = number(&mut scan, 2, 2)?;
    let fraction = if scan.eat(b'.') {
        let start = scan.i;
        scan.eat_while(|b| b.is_ascii_digit());
        &text[start..scan.i]
    } else {
        ""
    };
    let blanks = scan.eat_while(|b| b == b' ' || b == b'\t');
    let offset = if scan.done() {
        // Blanks belong to a zone that must follow them.
        (blanks == 0).then_some(())?;
        None
    } else if scan.eat(b'Z') {
        Some(0)
    } else {
        let negative = scan.peek() == Some(b'-');
        scan.eat_if(|b| b == b'-' || b == b'+').then_some(())?;
        let hours = number(&mut scan, 1, 2)?;
        let minutes = if scan.eat(b':') {
            number(&mut scan, 2, 2)?
        } else {
            0
        };
        let total = i32::try_from(hours * 60 + minutes).ok()?;
        Some(if negative { -total } else { total })
    };
    scan.done().then_some(())?;
    Some(Timestamp {
        year,
        month,
        day,
        time: Some(Time {
            hour,
            minute,
            second,
            fraction,
            offset,
        }),
    })
}

/// `construct_yaml_timestamp` then `isoformat()`: what Python prints for the date or
/// datetime PyYAML reads. `None` where Python refuses it (no such day, hour 24, an offset of
/// a day or more). `date_pattern` requires the implicit pattern's two-digit month and day
/// for a date without a time.
fn timestamp(text: &str, date_pattern: bool) -> Option<String> {
    let t = parse_timestamp(text)?;
    let days = match t.month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if t.year % 4 == 0 && (t.year % 100 != 0 || t.year % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    if t.year == 0 || t.day == 0 || t.day > days {
        return None;
    }
    let date = format!("{:04}-{:02}-{:02}", t.year, t.month, t.day);
    let Some(time) = t.time else {
        return (!date_pattern || text.len() == 10).then_some(date);
    };
    if time.hour > 23 || time.minute > 59 || time.second > 59 {
        return None;
    }
    let mut iso = format!(
        "{date}T{:02}:{:02}:{:02}",
        time.hour, time.minute, time.second
    );
    // Microseconds: the first six digits, padded; printed only when not zero.
    let micros: String = time
        .fraction
        .chars()
        .chain(std::iter::repeat('0'))
        .take(6)
        .collect();
    if micros != "000000" {
        iso.push('.');
        iso.push_str(&micros);
    }
    if let Some(offset) = time.offset {
        if offset.abs() >= 24 * 60 {
            return None;
        }
        let sign = if offset < 0 { '-' } else { '+' };
        iso.push_str(&format!(
            "{sign}{:02}:{:02}",
            offset.abs() / 60,
            offset.abs() % 60
        ));
    }
    Some(iso)
}

/// Python's `repr(float)`: the shortest digits that read back as the same float, in
/// positional notation from 1e-4 up to 1e16 and in exponent notation (`1e+16`) outside.
fn python_repr(f: f64) -> String {
    if !f.is_finite() {
        return f.to_string();
    }
    // The shortest digits that read back as `f`, and of those the closest: serde_json's
    // (Ryū's) choice, and Python's. (`{:e}` gives shortest digits, not always the closest.)
    let shortest = StateValue::Float(f).to_json();
    let (mantissa, exponent) = shortest.split_once(['e', 'E']).unwrap_or((&shortest, "0"));
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all = format!("{whole}{fraction}");
    let Some(lead) = all.find(|c| c != '0') else {
        return format!("{sign}0.0");
    };
    let digits = all[lead..].trim_end_matches('0');
    let exponent = exponent.trim_start_matches('+').parse::<i32>().unwrap_or(0)
        + whole.len() as i32
        - 1
        - lead as i32;
    if (-4..16).contains(&exponent) {
        let point = exponent + 1;
        if point <= 0 {
            let zeros = "0".repeat(point.unsigned_abs() as usize);
            format!("{sign}0.{zeros}{digits}")
        } else {
            let point = point as usize;
            if digits.len() <= point {
                format!("{sign}{digits}{}.0", "0".repeat(point - digits.len()))
            } else {
                format!("{sign}{}.{}", &digits[..point], &digits[point..])
            }
        }
    } else {
        let (head, tail) = digits.split_at(1);
        let tail = if tail.is_empty() {
            String::new()
        } else {
            format!(".{tail}")
        };
        let esign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{head}{tail}e{esign}{:02}", exponent.abs())
    }
}

// ---- YAML 1.2 core schema and JSON ---------------------------------------------------------

fn plain_yaml12(text: &str) -> Option<StateValue> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Some(StateValue::Null),
        "true" | "True" | "TRUE" => return Some(StateValue::Bool(true)),
        "false" | "False" | "FALSE" => return Some(StateValue::Bool(false)),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => return None,
        _ => {}
    }
    let mut scan = Scan::new(text);
    let radix = if let Some(oct) = text.strip_prefix("0o") {
        Some((oct, 8))
    } else {
        text.strip_prefix("0x").map(|hex| (hex, 16))
    };
    if let Some((digits, radix)) = radix {
        if !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix)) {
            let mut number = BigUint::default();
            return number
                .push_digits(digits, radix)
                .and_then(|()| number.into_value(false));
        }
        return None;
    }
    // `[-+]?[0-9]+` and `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`.
    scan.sign();
    let whole = scan.eat_while(|b| b.is_ascii_digit());
    if whole > 0 && scan.done() {
        return decimal_int(text);
    }
    let mantissa = if whole > 0 {
        if scan.eat(b'.') {
            scan.eat_while(|b| b.is_ascii_digit());
        }
        true
    } else {
        scan.eat(b'.') && scan.eat_while(|b| b.is_ascii_digit()) > 0
    };
    let exponent = if scan.eat_if(|b| b == b'e' || b == b'E') {
        scan.eat_if(|b| b == b'-' || b == b'+');
        scan.eat_while(|b| b.is_ascii_digit()) > 0
    } else {
        true
    };
    if mantissa && exponent && scan.done() {
        return finite_float(text);
    }
    None
}

/// A plain scalar of a JSON document: `null`, `true`, `false` or a number (the document was
/// checked to be JSON before it got here).
fn plain_json(text: &str) -> Option<StateValue> {
    match text {
        "null" => Some(StateValue::Null),
        "true" => Some(StateValue::Bool(true)),
        "false" => Some(StateValue::Bool(false)),
        _ if text.bytes().all(|b| b.is_ascii_digit() || b == b'-') => decimal_int(text),
        _ => finite_float(text),
    }
}

fn decimal_int(text: &str) -> Option<StateValue> {
    if let Ok(n) = text.parse::<i64>() {
        return Some(StateValue::Int(n));
    }
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let mut number = BigUint::default();
    number
        .push_digits(digits, 10)
        .and_then(|()| number.into_value(negative))
}

fn finite_float(text: &str) -> Option<StateValue> {
    text.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(StateValue::Float)
}

// ---- integers of any size --------------------------------------------------------------------

/// An unsigned integer of any size, for reading digits in base 2, 8, 10, 16 and 60 and
/// writing them in base 10. Only what that needs; bounded by [`MAX_INT_DIGITS`].
#[derive(Default)]
struct BigUint {
    /// Base 10⁹, least significant first.
    limbs: Vec<u32>,
}

const LIMB: u64 = 1_000_000_000;

impl BigUint {
    /// `self = self * radix + digit` for each digit of `digits`; `None` for a character
    /// that is not a digit of `radix`, or a number too long to carry.
    fn push_digits(&mut self, digits: &str, radix: u32) -> Option<()> {
        if digits.is_empty() {
            return None;
        }
        for c in digits.chars() {
            self.mul_add(radix, c.to_digit(radix)?)?;
        }
        Some(())
    }

    fn mul_add(&mut self, factor: u32, add: u32) -> Option<()> {
        let mut carry = u64::from(add);
        for limb in &mut self.limbs {
            let v = u64::from(*limb) * u64::from(factor) + carry;
            *limb = (v % LIMB) as u32;
            carry = v / LIMB;
        }
        while carry > 0 {
            self.limbs.push((carry % LIMB) as u32);
            carry /= LIMB;
        }
        // Nine digits a limb: past the limit by a limb, it is too long however it ends.
        (self.limbs.len() <= MAX_INT_DIGITS / 9 + 1).then_some(())
    }

    fn into_value(self, negative: bool) -> Option<StateValue> {
        let mut text = String::with_capacity(self.limbs.len() * 9 + 1);
        if negative {
            text.push('-');
        }
        match self.limbs.split_last() {
            None => return Some(StateValue::Int(0)),
            Some((top, rest)) => {
                text.push_str(&top.to_string());
                for limb in rest.iter().rev() {
                    text.push_str(&format!("{limb:09}"));
                }
            }
        }
        if text.len() - usize::from(negative) > MAX_INT_DIGITS {
            return None;
        }
        StateValue::integer(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: StateValue) -> String {
        v.to_json()
    }

    #[test]
    fn pyyaml_reads_these_plain_scalars_as_strings() {
        for s in [
            "y",
            "n",
            "Y",
            "N",
            "yES",
            "1e3",
            "6e10",
            "1e-5",
            "4e12345",
            "0o17",
            "1.0e3",
            "-.5",
            "+.nan",
            "08",
            "09:30",
            "1:70",
            "0x",
            "<<",
            "=",
            "2001-1-2",
            "2001-12-14x",
        ] {
            assert_eq!(
                plain(s.into(), Schema::Yaml11),
                StateValue::Text(s.into()),
                "{s}"
            );
        }
    }

    #[test]
    fn pyyaml_numbers_booleans_and_nulls() {
        let cases = [
            ("yes", "true"),
            ("Off", "false"),
            ("~", "null"),
            ("", "null"),
            ("NULL", "null"),
            ("0", "0"),
            ("-0", "0"),
            ("017", "15"),
            ("0x1F", "31"),
            ("-0b101", "-5"),
            ("1_000", "1000"),
            ("190:20:30", "685230"),
            ("18446744073709551616", "18446744073709551616"),
            ("-9223372036854775809", "-9223372036854775809"),
            ("0_", "0"),
            ("1.5", "1.5"),
            ("1.", "1.0"),
            (".5", "0.5"),
            ("1.0e+3", "1000.0"),
            ("1_0.5_0", "10.5"),
            ("1:30.5", "90.5"),
            ("-0.0", "-0.0"),
            ("2001-12-14", "\"2001-12-14\""),
            (
                "2001-12-14t21:59:43.10-05:00",
                "\"2001-12-14T21:59:43.100000-05:00\"",
            ),
            (
                "2001-12-14 21:59:43.10 -5",
                "\"2001-12-14T21:59:43.100000-05:00\"",
            ),
            ("2001-12-15 2:59:43.10", "\"2001-12-15T02:59:43.100000\""),
            ("2001-12-14 21:59:43Z", "\"2001-12-14T21:59:43+00:00\""),
            ("2021-02-30", "\"2021-02-30\""),
            (".inf", "\".inf\""),
            ("-.Inf", "\"-.Inf\""),
            (".NaN", "\".NaN\""),
            ("1.0e+400", "\"1.0e+400\""),
            ("0x_", "\"0x_\""),
        ];
        for (text, want) in cases {
            assert_eq!(json(plain(text.into(), Schema::Yaml11)), want, "{text}");
        }
    }

    #[test]
    fn yaml_12_and_json_read_numbers_their_way() {
        for (text, want) in [
            ("1e3", "1000.0"),
            ("0o17", "15"),
            ("017", "17"),
            ("yes", "\"yes\""),
            ("True", "true"),
            ("-.5", "-0.5"),
            ("1e400", "\"1e400\""),
            (".inf", "\".inf\""),
        ] {
            assert_eq!(json(plain(text.into(), Schema::Yaml12)), want, "{text}");
        }
        assert_eq!(json(plain("1e3".into(), Schema::Json)), "1000.0");
        assert_eq!(
            json(plain("-18446744073709551617".into(), Schema::Json)),
            "-18446744073709551617"
        );
    }

    #[test]
    fn explicit_tags_are_constructed_or_carried_as_text() {
        let t = |tag: &str, text: &str| {
            json(tagged(&format!("tag:yaml.org,2002:{tag}"), text.into()).unwrap())
        };
        assert_eq!(t("str", "123"), "\"123\"");
        assert_eq!(t("int", "12"), "12");
        assert_eq!(t("int", "abc"), "\"abc\"");
        assert_eq!(t("float", "1"), "1.0");
        assert_eq!(t("bool", "maybe"), "\"maybe\"");
        assert_eq!(t("timestamp", "2001-1-2"), "\"2001-01-02\"");
        assert_eq!(t("binary", "aGVs\n bG8="), "\"aGVsbG8=\"");
        assert!(tagged("!local", "x".into()).is_err());
    }

    #[test]
    fn integers_past_pythons_digit_limit_are_text() {
        let long = "9".repeat(MAX_INT_DIGITS);
        assert!(matches!(plain(long, Schema::Yaml11), StateValue::BigInt(_)));
        let longer = "9".repeat(MAX_INT_DIGITS + 1);
        assert_eq!(
            plain(longer.clone(), Schema::Yaml11),
            StateValue::Text(longer.as_str().into())
        );
        let hex = format!("0x{}", "f".repeat(4000));
        assert!(matches!(plain(hex, Schema::Yaml11), StateValue::Text(_)));
    }

    #[test]
    fn keys_are_written_as_python_writes_them() {
        assert_eq!(&*key_text(StateValue::Float(1e16)), "1e+16");
        assert_eq!(&*key_text(StateValue::Float(1.5)), "1.5");
        assert_eq!(&*key_text(StateValue::Float(1e-5)), "1e-05");
        assert_eq!(&*key_text(StateValue::Float(0.0001)), "0.0001");
        assert_eq!(&*key_text(StateValue::Float(-2.0)), "-2.0");
        assert_eq!(
            &*key_text(StateValue::Float(123456789012345.6)),
            "123456789012345.6"
        );
        assert_eq!(&*key_text(StateValue::Float(5e-324)), "5e-324");
        assert_eq!(
            &*key_text(StateValue::Float(-2217514148396668.2)),
            "-2217514148396668.2"
        );
        assert_eq!(&*key_text(StateValue::Float(-0.0)), "-0.0");
        assert_eq!(&*key_text(StateValue::Float(100.0)), "100.0");
        assert_eq!(&*key_text(StateValue::Float(1.5e-7)), "1.5e-07");
        assert_eq!(&*key_text(StateValue::Bool(true)), "true");
        assert_eq!(&*key_text(StateValue::Null), "null");
    }
}

/// The hand-written patterns above against PyYAML's own regular expressions, copied from its
/// `resolver.py`, on strings made to sit near their edges.
#[cfg(test)]
mod against_pyyaml_patterns {
    use super::*;
    use proptest::prelude::*;
    use regex::Regex;

    fn pyyaml_float() -> Regex {
        Regex::new(
            r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        )
        .unwrap()
    }

    fn pyyaml_int() -> Regex {
        Regex::new(
            r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$",
        )
        .unwrap()
    }

    fn pyyaml_timestamp() -> Regex {
        Regex::new(
            r"^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$",
        )
        .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn the_patterns_agree(text in "[-+.:_0-9eEbxaAfFinINtTzZ \t]{0,14}") {
            prop_assert_eq!(is_float11(&text), pyyaml_float().is_match(&text), "float {:?}", text);
            prop_assert_eq!(is_int11(&text), pyyaml_int().is_match(&text), "int {:?}", text);
            prop_assert_eq!(is_timestamp11(&text), pyyaml_timestamp().is_match(&text), "timestamp {:?}", text);
        }

        #[test]
        fn the_timestamp_patterns_agree(text in "[0-9]{4}-[0-9]{1,3}-[0-9]{1,3}([Tt]| {1,2}|\t)?[0-9]{0,3}:?[0-9]{0,3}:?[0-9]{0,3}(\\.[0-9]{0,8})?[ \t]{0,2}(Z|[-+][0-9]{1,3}(:[0-9]{1,3})?)?") {
            prop_assert_eq!(is_timestamp11(&text), pyyaml_timestamp().is_match(&text), "timestamp {:?}", text);
        }

        #[test]
        fn the_number_patterns_agree(text in "[-+]?(0[bx]?)?[0-9a-f_]{0,6}(:[0-9]{1,3}){0,3}(\\.[0-9_]{0,4})?([eE][-+]?[0-9]{0,3})?") {
            prop_assert_eq!(is_float11(&text), pyyaml_float().is_match(&text), "float {:?}", text);
            prop_assert_eq!(is_int11(&text), pyyaml_int().is_match(&text), "int {:?}", text);
        }
    }
}
