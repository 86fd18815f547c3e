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

use crate::domain::money::{MoneyError, parse_decimal};

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
    let text = number_text(deserializer)?;
    parse_decimal(&text).map_err(D::Error::custom)
}

/// The text of a JSON number, or of a numeric string.
fn number_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let raw = Box::<RawValue>::deserialize(deserializer)?;
    let text = raw.get();
    if text.starts_with('"') {
        serde_json::from_str::<String>(text).map_err(D::Error::custom)
    } else if text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) {
        Ok(text.to_owned())
    } else {
        Err(D::Error::custom(format!("expected an amount as a number, found {text}")))
    }
}

/// What [`ExactNumber`] reads: a sum of money that the money rules check next. A number with
/// more decimal places than a `Decimal` holds cannot be read, yet it is a sum the rules refuse as
/// too precise (an invalid amount, like 10.555), not a malformed request. So it is read as the
/// smallest `Decimal`, 0.0000000000000000000000000001: as over-precise as it, and refused as such
/// by every rule; never rounded into a sum that could pass.
fn deserialize_argument<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
    let text = number_text(deserializer)?;
    match parse_decimal(&text) {
        Err(MoneyError::TooPrecise) => Ok(Decimal::new(1, Decimal::MAX_SCALE)),
        parsed => parsed.map_err(D::Error::custom),
    }
}

/// A decimal that travels as an exact JSON number; for server function arguments, where
/// `#[serde(with)]` cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExactNumber(#[serde(serialize_with = "serialize", deserialize_with = "deserialize_argument")] pub Decimal);

impl From<Decimal> for ExactNumber {
    fn from(value: Decimal) -> ExactNumber {
        ExactNumber(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::properties::{self, MAX_CENTS};
    use crate::domain::{Amount, Money};
    use proptest::prelude::*;
    use rust_decimal::dec;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Wrapped {
        #[serde(with = "super")]
        value: Decimal,
    }

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
    fn refuses_numbers_a_decimal_cannot_hold_never_rounding_them() {
        let read = |json: &str| serde_json::from_str::<Wrapped>(&format!(r#"{{"value": {json}}}"#)).map(|w| w.value);
        for json in ["1.00000000000000000000000000001", "\"1.00000000000000000000000000001\"", "1e-30", "1e999"] {
            assert!(read(json).is_err(), "{json} was accepted");
        }
        assert_eq!(read("1.000000000000000000000000000000").unwrap(), dec!(1));
        assert_eq!(read("1.5E2").unwrap(), dec!(150));
    }

    #[test]
    fn an_argument_too_precise_for_a_decimal_stays_too_precise_for_money() {
        for json in ["1.00000000000000000000000000001", "\"1.00000000000000000000000000001\"", "1e-30", "-1e-40"] {
            let read = parse(json).unwrap();
            assert_eq!(Amount::try_from(read), Err(MoneyError::TooPrecise), "{json}");
            assert_eq!(Money::try_from(read), Err(MoneyError::TooPrecise), "{json}");
        }
        // Too large for a decimal is no amount at all: a malformed request, as before.
        assert!(parse("1e999").is_err());
    }

    #[test]
    fn writes_the_exact_number() {
        let json = serde_json::to_string(&ExactNumber(dec!(150.50))).unwrap();
        assert_eq!(json, "150.50");
        let json = serde_json::to_string(&ExactNumber(dec!(999999999999999999.99))).unwrap();
        assert_eq!(json, "999999999999999999.99");
        assert_eq!(serde_json::to_string(&ExactNumber(dec!(0))).unwrap(), "0.00");
    }

    proptest! {
        #![proptest_config(properties::config())]

        /// Money goes out as the number it prints as, and comes back as the same money, through
        /// a server function argument and through a DTO field alike.
        #[test]
        fn valid_money_survives_the_json_round_trip(money in properties::money()) {
            let json = serde_json::to_string(&ExactNumber(money.value())).unwrap();
            prop_assert_eq!(&json, &money.to_string());
            let read = serde_json::from_str::<ExactNumber>(&json).unwrap();
            prop_assert_eq!(read, ExactNumber(money.value()));
            prop_assert_eq!(Money::try_from(read.0), Ok(money));

            let wrapped = Wrapped { value: money.value() };
            let json = serde_json::to_string(&wrapped).unwrap();
            prop_assert_eq!(&json, &format!(r#"{{"value":{money}}}"#));
            prop_assert_eq!(serde_json::from_str::<Wrapped>(&json).unwrap(), wrapped);
        }

        /// As a number or as a string, an over-precise argument reaches the money rules and is
        /// refused by them as too precise: never rounded into a sum that passes.
        #[test]
        fn an_over_precise_argument_is_refused_as_too_precise(text in properties::over_precise()) {
            for json in [text.clone(), format!("{text:?}")] {
                let read = serde_json::from_str::<ExactNumber>(&json).unwrap().0;
                prop_assert_eq!(Money::try_from(read), Err(MoneyError::TooPrecise), "{}", json);
                prop_assert_eq!(Amount::try_from(read), Err(MoneyError::TooPrecise), "{}", json);
            }
        }

        #[test]
        fn a_sum_above_the_limit_is_read_exactly_and_refused(c in MAX_CENTS + 1..=i64::MAX) {
            let read = serde_json::from_str::<ExactNumber>(&Decimal::new(c, 2).to_string()).unwrap().0;
            prop_assert_eq!(read, Decimal::new(c, 2));
            prop_assert_eq!(Money::try_from(read), Err(MoneyError::TooLarge));
        }
    }
}
