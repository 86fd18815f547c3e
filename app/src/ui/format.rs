use rust_decimal::Decimal;
use time::OffsetDateTime;
use time::macros::format_description;

/// `1234567.5` → `"1,234,567.50"`.
pub fn money(value: Decimal) -> String {
    let fixed = format!("{:.2}", value.abs());
    let (whole, cents) = fixed.split_once('.').unwrap_or((&fixed, "00"));
    let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let sign = if value.is_sign_negative() && !value.is_zero() { "-" } else { "" };
    format!("{sign}{grouped}.{cents}")
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
}
