//! Decimals as exact JSON numbers.
//!
//! The contract sends and answers amounts as JSON numbers (`"amount": 100.5`). Going through
//! `f64` would turn 0.29 into 0.28999999999999998 and wrongly refuse it as over-precise, so the
//! number's text is taken verbatim (serde_json's `RawValue`) and parsed as a decimal, and
//! written back verbatim. A numeric string (`"100.50"`) is accepted as well.

use rust_decimal::Decimal;
use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::domain::money::parse_decimal;

/// For `#[serde(with = "exact_number")]` on `Decimal` fields. Written with at least two
/// decimal places, as money is (`0.00`, `150.50`).
pub fn serialize<S: Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
    let mut value = *value;
    if value.scale() < 2 {
        value.rescale(2);
    }
    RawValue::from_string(value.to_string()).map_err(S::Error::custom)?.serialize(serializer)
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
    let raw = Box::<RawValue>::deserialize(deserializer)?;
    let text = raw.get();
    let number_text = if text.starts_with('"') {
        serde_json::from_str::<String>(text).map_err(D::Error::custom)?
    } else if text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) {
        text.to_owned()
    } else {
        return Err(D::Error::custom(format!("expected an amount as a number, found {text}")));
    };
    parse_decimal(&number_text).map_err(D::Error::custom)
}

/// A decimal that travels as an exact JSON number; for server function arguments, where
/// `#[serde(with)]` cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExactNumber(#[serde(with = "self")] pub Decimal);

impl From<Decimal> for ExactNumber {
    fn from(value: Decimal) -> ExactNumber {
        ExactNumber(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::dec;

    fn parse(json: &str) -> Result<Decimal, serde_json::Error> {
        serde_json::from_str::<ExactNumber>(json).map(|n| n.0)
    }

    #[test]
    fn reads_numbers_without_going_through_floats() {
        assert_eq!(parse("0.29").unwrap(), dec!(0.29));
        assert_eq!(parse("100.5").unwrap(), dec!(100.5));
        assert_eq!(parse("100.555").unwrap(), dec!(100.555));
        assert_eq!(parse("1e3").unwrap(), dec!(1000));
        assert_eq!(parse("\"42.10\"").unwrap(), dec!(42.10));
    }

    #[test]
    fn refuses_what_is_not_a_number() {
        for json in ["true", "null", "{}", "[1]", "\"abc\"", "\"\"", "1e999"] {
            assert!(parse(json).is_err(), "{json} was accepted");
        }
    }

    #[test]
    fn writes_the_exact_number() {
        let json = serde_json::to_string(&ExactNumber(dec!(150.50))).unwrap();
        assert_eq!(json, "150.50");
        let json = serde_json::to_string(&ExactNumber(dec!(999999999999999999.99))).unwrap();
        assert_eq!(json, "999999999999999999.99");
        assert_eq!(serde_json::to_string(&ExactNumber(dec!(0))).unwrap(), "0.00");
    }
}
