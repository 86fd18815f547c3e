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
use std::str::FromStr;

use rust_decimal::{Decimal, dec};
use serde::{Deserialize, Serialize};

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

/// Reads a decimal written plainly (`"100.5"`) or in scientific notation (`"1e2"`), exactly.
pub fn parse_decimal(input: &str) -> Result<Decimal, MoneyError> {
    let trimmed = input.trim();
    let not_a_number = || MoneyError::NotANumber(input.to_owned());
    if trimmed.is_empty() {
        return Err(not_a_number());
    }
    // `from_str_exact` refuses to round: "0.001" must be refused as too precise, not read as 0.
    Decimal::from_str_exact(trimmed)
        .or_else(|_| {
            if trimmed.contains(['e', 'E']) {
                Decimal::from_scientific(trimmed)
            } else {
                Decimal::from_str(trimmed)
            }
        })
        .map_err(|_| not_a_number())
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
    fn refuses_text_that_is_not_a_number() {
        for input in ["", "  ", "abc", "10,00", "NaN", "inf", "1.2.3", "--1"] {
            assert!(
                matches!(Money::parse(input), Err(MoneyError::NotANumber(_))),
                "{input:?} was accepted"
            );
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
        assert!(matches!(
            Amount::parse("1e400"),
            Err(MoneyError::NotANumber(_))
        ));
    }

    #[test]
    fn serde_refuses_invalid_sums() {
        assert!(serde_json::from_str::<Amount>("\"0\"").is_err());
        assert_eq!(
            serde_json::from_str::<Amount>("\"12.30\"").unwrap().value(),
            dec!(12.30)
        );
    }

    #[test]
    fn a_balance_cannot_go_negative() {
        let balance = Balance::from(Money::parse("40").unwrap());
        assert_eq!(balance.checked_sub(Amount::parse("50").unwrap()), None);
        assert_eq!(
            balance.checked_sub(Amount::parse("40").unwrap()),
            Some(Balance::ZERO)
        );
    }

    #[test]
    fn a_balance_cannot_outgrow_its_column() {
        assert_eq!(Balance::MAX, dec!(999999999999999999.99));
        let almost_full = Balance(Balance::MAX - dec!(0.50));
        assert_eq!(almost_full.checked_add(Amount::parse("1").unwrap()), None);
        assert!(almost_full.checked_add(Amount::parse("0.50").unwrap()).is_some());
    }
}
