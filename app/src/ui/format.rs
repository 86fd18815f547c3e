use rust_decimal::Decimal;
use time::OffsetDateTime;
use time::macros::format_description;

/// `"1234567"` → `"1,234,567"`.
fn group_thousands(digits: &str) -> String {
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// `1234567.5` → `"1,234,567.50"`.
pub fn money(value: Decimal) -> String {
    let fixed = format!("{:.2}", value.abs());
    let (whole, cents) = fixed.split_once('.').unwrap_or((&fixed, "00"));
    let sign = if value.is_sign_negative() && !value.is_zero() { "-" } else { "" };
    format!("{sign}{}.{cents}", group_thousands(whole))
}

/// `1234567` → `"1,234,567"`.
pub fn count(value: i64) -> String {
    let sign = if value < 0 { "-" } else { "" };
    format!("{sign}{}", group_thousands(&value.unsigned_abs().to_string()))
}

/// `1 event`, `2 events`.
pub fn events(count: i64) -> String {
    if count == 1 { "1 event".to_owned() } else { format!("{} events", self::count(count)) }
}

/// A UTC time, identical on the server and in the browser so that hydration matches.
pub fn time(value: OffsetDateTime) -> String {
    value
        .format(format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC"))
        .unwrap_or_else(|_| value.to_string())
}

#[cfg(test)]
mod tests {
    use rust_decimal::dec;

    #[test]
    fn money_groups_thousands_and_shows_cents() {
        assert_eq!(super::money(dec!(0)), "0.00");
        assert_eq!(super::money(dec!(999.5)), "999.50");
        assert_eq!(super::money(dec!(1234567.5)), "1,234,567.50");
        assert_eq!(super::money(dec!(-1000)), "-1,000.00");
    }

    #[test]
    fn counts_group_thousands() {
        assert_eq!(super::count(0), "0");
        assert_eq!(super::count(1000), "1,000");
        assert_eq!(super::count(-1234567), "-1,234,567");
    }
}
