//! Money, parsed once at the edge so that the rest of the code cannot hold an invalid sum.
//!
//! Three types, because the three roles have different rules:
//! - [`Money`]: a sum accepted from outside (an initial balance): zero or more, at most
//!   2 decimal places, at most [`Money::MAX`].
//! - [`Amount`]: money a command moves (a deposit, a withdrawal): like `Money` but never zero.
//! - [`Balance`]: what an account holds: never negative, never beyond what the read model's
//!   `NUMERIC(20,2)` columns can store.
//!
//! All arithmetic is `rust_decimal`; a float never touches money.

use std::fmt;

use rust_decimal::{Decimal, dec};
use serde::{Deserialize, Serialize};

/// The bank's one currency, as ISO 4217 names it. Sums carry no currency of their own: every
/// amount, balance and limit is in this one, and the pages write it with each sum.
pub const CURRENCY: &str = "USD";

/// Why a sum of money was refused. The messages are shown to users as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("{0:?} is not a number")]
    NotANumber(String),
    #[error("the amount must be greater than zero")]
    NotPositive,
    #[error("the amount must not be negative")]
    Negative,
    #[error("the amount has more than 2 decimal places")]
    TooPrecise,
    #[error("the amount is larger than the limit of 1,000,000,000.00")]
    TooLarge,
    #[error("the balance is larger than {}", Balance::MAX)]
    BalanceTooLarge,
}

/// A sum of money accepted from outside: `0 ≤ value ≤ MAX`, at most 2 decimal places.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "Decimal", into = "Decimal")]
pub struct Money(Decimal);

impl Money {
    pub const ZERO: Money = Money(Decimal::ZERO);
    /// The largest sum one command may carry (1,000,000,000.00).
    pub const MAX: Decimal = dec!(1_000_000_000.00);
    pub const DECIMAL_PLACES: u32 = 2;

    /// Parses user input such as `"100"`, `"100.5"` or `" 1e2 "`.
    pub fn parse(input: &str) -> Result<Money, MoneyError> {
        Money::try_from(parse_decimal(input)?)
    }

    pub fn value(self) -> Decimal {
        self.0
    }
}

impl TryFrom<Decimal> for Money {
    type Error = MoneyError;

    fn try_from(value: Decimal) -> Result<Money, MoneyError> {
        checked(value, Money::MAX, MoneyError::TooLarge).map(Money)
    }
}

impl From<Money> for Decimal {
    fn from(money: Money) -> Decimal {
        money.0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2}", self.0)
    }
}

/// Money a command moves: strictly positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "Decimal", into = "Decimal")]
pub struct Amount(Money);

impl Amount {
    pub fn parse(input: &str) -> Result<Amount, MoneyError> {
        Amount::try_from(parse_decimal(input)?)
    }

    pub fn value(self) -> Decimal {
        self.0.value()
    }
}

impl TryFrom<Decimal> for Amount {
    type Error = MoneyError;

    fn try_from(value: Decimal) -> Result<Amount, MoneyError> {
        if value <= Decimal::ZERO {
            return Err(MoneyError::NotPositive);
        }
        Money::try_from(value).map(Amount)
    }
}

impl From<Amount> for Decimal {
    fn from(amount: Amount) -> Decimal {
        amount.value()
    }
}

impl From<Amount> for Money {
    fn from(amount: Amount) -> Money {
        amount.0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What an account holds. Deposits and withdrawals go through [`Balance::checked_add`] and
/// [`Balance::checked_sub`], so a balance can neither go negative nor outgrow its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "Decimal", into = "Decimal")]
pub struct Balance(Decimal);

impl Balance {
    pub const ZERO: Balance = Balance(Decimal::ZERO);
    /// The largest value a `NUMERIC(20,2)` column holds: 999,999,999,999,999,999.99.
    pub const MAX: Decimal = dec!(999_999_999_999_999_999.99);

    pub fn value(self) -> Decimal {
        self.0
    }

    pub fn checked_add(self, amount: Amount) -> Option<Balance> {
        let sum = self.0.checked_add(amount.value())?;
        (sum <= Balance::MAX).then_some(Balance(sum))
    }

    /// `None` when the balance does not cover the amount.
    pub fn checked_sub(self, amount: Amount) -> Option<Balance> {
        let rest = self.0 - amount.value();
        (rest >= Decimal::ZERO).then_some(Balance(rest))
    }
}

impl TryFrom<Decimal> for Balance {
    type Error = MoneyError;

    fn try_from(value: Decimal) -> Result<Balance, MoneyError> {
        checked(value, Balance::MAX, MoneyError::BalanceTooLarge).map(Balance)
    }
}

impl From<Balance> for Decimal {
    fn from(balance: Balance) -> Decimal {
        balance.0
    }
}

impl From<Money> for Balance {
    fn from(money: Money) -> Balance {
        Balance(money.value())
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2}", self.0)
    }
}

/// Reads a decimal written plainly (`"100.5"`) or in scientific notation (`"1.5e2"`), exactly.
///
/// A number is never rounded to fit: one with more decimal places than a `Decimal` can hold is
/// refused as [`MoneyError::TooPrecise`] (money has 2), one with more digits than it can hold as
/// [`MoneyError::NotANumber`]. Everything a `Decimal` holds comes back exactly (trailing zeros
/// aside), so that the money rules, not the parser, decide what is too precise or too large.
pub fn parse_decimal(input: &str) -> Result<Decimal, MoneyError> {
    let not_a_number = || MoneyError::NotANumber(input.to_owned());
    let text = input.trim();
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, parse_exponent(exponent).ok_or_else(not_a_number)?),
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let is_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !is_digits(whole) || !is_digits(fraction) {
        return Err(not_a_number());
    }

    // The value is `digits × 10^-scale`. Zeros at either end of the digits say nothing: leading
    // ones go, trailing ones lower the scale ("100.500" is 1005 at scale 1), so that only places
    // that hold a value count as precision.
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    let significant = digits.trim_end_matches('0');
    if significant.is_empty() {
        return Ok(Decimal::ZERO);
    }
    let trailing_zeros = (digits.len() - significant.len()) as i64;
    let scale = fraction.len() as i64 - exponent - trailing_zeros;
    let unrepresentable =
        || if scale > i64::from(Money::DECIMAL_PLACES) { MoneyError::TooPrecise } else { not_a_number() };
    // A whole number (scale below 0) gets its zeros back, as a `Decimal` has no negative scale.
    let zeros_appended = (-scale).max(0);
    if scale > i64::from(Decimal::MAX_SCALE) || significant.len() as i64 + zeros_appended > MAX_MANTISSA_DIGITS {
        return Err(unrepresentable());
    }
    let mut value: i128 = significant.parse().map_err(|_| not_a_number())?;
    value *= 10_i128.pow(zeros_appended as u32);
    if negative {
        value = -value;
    }
    Decimal::try_from_i128_with_scale(value, scale.max(0) as u32).map_err(|_| unrepresentable())
}

/// The most digits a `Decimal`'s 96-bit mantissa may have (its largest is 79,228,…, 29 digits);
/// longer is out of range, and an `i128` holds any number this long.
const MAX_MANTISSA_DIGITS: i64 = 29;

/// The exponent of `1.5e2`: an optionally signed integer. A huge exponent is clamped to one that
/// is out of every `Decimal`'s range all the same, so that the arithmetic on it cannot overflow.
fn parse_exponent(text: &str) -> Option<i64> {
    const OUT_OF_RANGE: i64 = 1_000_000;
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let magnitude = digits.parse::<i64>().map_or(OUT_OF_RANGE, |exponent| exponent.min(OUT_OF_RANGE));
    Some(if negative { -magnitude } else { magnitude })
}

/// The rules every sum of money follows: not negative, at most two decimal places, at most
/// `max` (else `too_large`). Returned with exactly two places.
fn checked(value: Decimal, max: Decimal, too_large: MoneyError) -> Result<Decimal, MoneyError> {
    if value.is_sign_negative() && !value.is_zero() {
        return Err(MoneyError::Negative);
    }
    // `normalize` drops trailing zeros: 100.500 is 100.5, not over-precise.
    if value.normalize().scale() > Money::DECIMAL_PLACES {
        return Err(MoneyError::TooPrecise);
    }
    if value > max {
        return Err(too_large);
    }
    Ok(with_two_places(value))
}

/// Stores every sum with exactly two places so that equal sums compare and print alike.
fn with_two_places(value: Decimal) -> Decimal {
    let mut value = value.normalize();
    value.rescale(Money::DECIMAL_PLACES);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_whole_and_two_place_sums() {
        assert_eq!(Money::parse("100").unwrap().value(), dec!(100.00));
        assert_eq!(Money::parse(" 100.5 ").unwrap().to_string(), "100.50");
        assert_eq!(Money::parse("0.01").unwrap().value(), dec!(0.01));
        assert_eq!(Money::parse("1e2").unwrap().value(), dec!(100));
    }

    #[test]
    fn trailing_zeros_are_not_extra_precision() {
        assert_eq!(Money::parse("100.500").unwrap().value(), dec!(100.50));
    }

    #[test]
    fn refuses_more_than_two_decimal_places() {
        assert_eq!(Money::parse("0.001"), Err(MoneyError::TooPrecise));
        assert_eq!(Amount::parse("10.555"), Err(MoneyError::TooPrecise));
    }

    #[test]
    fn an_over_precise_sum_is_refused_never_rounded() {
        // More places than a `Decimal` holds: once read as 1.00.
        let over_precise = "1.00000000000000000000000000001";
        assert_eq!(Money::parse(over_precise), Err(MoneyError::TooPrecise));
        assert_eq!(Amount::parse(over_precise), Err(MoneyError::TooPrecise));
        for input in
            ["0.000000000000000000000000000001", "1e-30", "1e-400", "-1e-30", "100.0000000000000000000000000000001"]
        {
            assert_eq!(parse_decimal(input), Err(MoneyError::TooPrecise), "{input}");
        }
        // Over-precise and too long at once: precision is what the money rules look at first.
        assert_eq!(Money::parse(&format!("1{}.555", "0".repeat(60))), Err(MoneyError::TooPrecise));
    }

    #[test]
    fn zeros_beyond_what_a_decimal_holds_are_still_only_zeros() {
        assert_eq!(Money::parse("1.000000000000000000000000000000000").unwrap().value(), dec!(1.00));
        assert_eq!(Money::parse("0.000000000000000000000000000000").unwrap(), Money::ZERO);
        assert_eq!(Money::parse("0e999").unwrap(), Money::ZERO);
        assert_eq!(Money::parse("000012.50").unwrap().value(), dec!(12.50));
        assert_eq!(Money::parse("-0").unwrap(), Money::ZERO);
    }

    #[test]
    fn reads_scientific_notation_exactly() {
        for (input, expected) in
            [("1e3", dec!(1000)), ("1.5E2", dec!(150)), ("15e-1", dec!(1.5)), ("1E+2", dec!(100)), ("2.5e0", dec!(2.5))]
        {
            assert_eq!(parse_decimal(input), Ok(expected), "{input}");
        }
        assert_eq!(parse_decimal("1.2345e2"), Ok(dec!(123.45)));
        assert_eq!(Amount::parse("1.2345e1"), Err(MoneyError::TooPrecise));
        for input in ["1e999", "1e99999999999999999999", "1e", "e5", "1e1.5", "1e+-2", "1ee2", "."] {
            assert!(matches!(parse_decimal(input), Err(MoneyError::NotANumber(_))), "{input:?} was accepted");
        }
    }

    #[test]
    fn reads_every_value_a_decimal_holds_and_no_more() {
        assert_eq!(parse_decimal("79228162514264337593543950335"), Ok(Decimal::MAX));
        assert_eq!(parse_decimal("-79228162514264337593543950335"), Ok(Decimal::MIN));
        assert_eq!(parse_decimal("0.0000000000000000000000000001"), Ok(Decimal::new(1, 28)));
        for input in ["79228162514264337593543950336", "100000000000000000000000000000", "1e29"] {
            assert!(matches!(parse_decimal(input), Err(MoneyError::NotANumber(_))), "{input:?} was accepted");
        }
        assert!(matches!(Money::parse(&format!("1{}", "0".repeat(60))), Err(MoneyError::NotANumber(_))));
    }

    #[test]
    fn refuses_text_that_is_not_a_number() {
        for input in ["", "  ", "abc", "10,00", "NaN", "inf", "1.2.3", "--1", "+-1", "1 000", "\u{0}", "1\u{0}"] {
            assert!(matches!(Money::parse(input), Err(MoneyError::NotANumber(_))), "{input:?} was accepted");
        }
    }

    #[test]
    fn money_may_be_zero_but_not_negative() {
        assert_eq!(Money::parse("0").unwrap(), Money::ZERO);
        assert_eq!(Money::parse("-0.01"), Err(MoneyError::Negative));
    }

    #[test]
    fn an_amount_must_be_positive() {
        assert_eq!(Amount::parse("0"), Err(MoneyError::NotPositive));
        assert_eq!(Amount::parse("0.00"), Err(MoneyError::NotPositive));
        assert_eq!(Amount::parse("-5"), Err(MoneyError::NotPositive));
    }

    #[test]
    fn refuses_sums_above_the_limit() {
        assert!(Amount::parse("1000000000.00").is_ok());
        assert_eq!(Amount::parse("1000000000.01"), Err(MoneyError::TooLarge));
        assert_eq!(Amount::parse("1e20"), Err(MoneyError::TooLarge));
        assert!(matches!(Amount::parse("1e400"), Err(MoneyError::NotANumber(_))));
    }

    #[test]
    fn serde_refuses_invalid_sums() {
        assert!(serde_json::from_str::<Amount>("\"0\"").is_err());
        assert_eq!(serde_json::from_str::<Amount>("\"12.30\"").unwrap().value(), dec!(12.30));
    }

    #[test]
    fn a_balance_cannot_go_negative() {
        let balance = Balance::from(Money::parse("40").unwrap());
        assert_eq!(balance.checked_sub(Amount::parse("50").unwrap()), None);
        assert_eq!(balance.checked_sub(Amount::parse("40").unwrap()), Some(Balance::ZERO));
    }

    #[test]
    fn a_balance_cannot_outgrow_its_column() {
        assert_eq!(Balance::MAX, dec!(999999999999999999.99));
        let almost_full = Balance(Balance::MAX - dec!(0.50));
        assert_eq!(almost_full.checked_add(Amount::parse("1").unwrap()), None);
        assert!(almost_full.checked_add(Amount::parse("0.50").unwrap()).is_some());
    }
}
