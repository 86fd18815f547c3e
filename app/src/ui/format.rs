//! How the pages write money and times.
//!
//! The server renders one spelling for everyone: money as en-US writes the bank's currency
//! (`$1,234.50`), times in UTC. Once the page is hydrated, the browser rewrites them as its viewer
//! reads them: money by `Intl.NumberFormat` in their locale, times by `Intl.DateTimeFormat` in
//! their locale and time zone, with the UTC time on hover. The first render must be the
//! server's, or hydration would not match; an en-US viewer sees no change to the money.

use bank::domain::CURRENCY;
use leptos::prelude::*;
use rust_decimal::Decimal;
use time::OffsetDateTime;
use time::macros::format_description;

/// The currency's symbol as en-US writes it, for the server's spelling.
const SYMBOL: &str = match CURRENCY.as_bytes() {
    b"USD" => "$",
    _ => CURRENCY,
};

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

/// `1234567.5` → `"$1,234,567.50"`: the server's spelling, which en-US's `Intl` also gives.
pub fn money(value: Decimal) -> String {
    let fixed = format!("{:.2}", value.abs());
    let (whole, cents) = fixed.split_once('.').unwrap_or((&fixed, "00"));
    let sign = if value.is_sign_negative() && !value.is_zero() { "-" } else { "" };
    format!("{sign}{SYMBOL}{}.{cents}", group_thousands(whole))
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

/// `"2026-12-05 14:03:09 UTC"`: the server's spelling, and what hovering a time shows.
pub fn time(value: OffsetDateTime) -> String {
    value
        .to_offset(time::UtcOffset::UTC)
        .format(format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC"))
        .unwrap_or_else(|_| value.to_string())
}

/// Whether to write for the viewer: only once hydrated. Read inside a closure, it re-runs it then.
fn for_viewer() -> bool {
    use_context::<super::Hydrated>().is_some_and(|super::Hydrated(hydrated)| hydrated.get())
}

/// Money as the viewer reads it once the page is hydrated, as the server writes it until then.
/// For text built inside a reactive closure; [`Money`] is the view.
pub fn viewer_money(value: Decimal) -> String {
    if for_viewer() { browser::money(value).unwrap_or_else(|| money(value)) } else { money(value) }
}

/// A time as the viewer reads it once the page is hydrated, in UTC until then.
pub fn viewer_time(value: OffsetDateTime) -> String {
    if for_viewer() { browser::time(value).unwrap_or_else(|| time(value)) } else { time(value) }
}

/// A sum of money, in the viewer's locale once the page is hydrated.
#[component]
pub fn Money(value: Decimal) -> impl IntoView {
    move || viewer_money(value)
}

/// A moment, in the viewer's locale and time zone once the page is hydrated, UTC on hover.
#[component]
pub fn Time(at: OffsetDateTime) -> impl IntoView {
    let utc = time(at);
    let machine = at.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| utc.clone());
    view! { <time datetime=machine title=utc>{move || viewer_time(at)}</time> }
}

/// The browser's `Intl` formatters, made once per page (making one costs more than using it).
#[cfg(feature = "hydrate")]
mod browser {
    use std::cell::OnceCell;

    use js_sys::{Array, Date, Function, Intl, JsString};
    use rust_decimal::Decimal;
    use time::OffsetDateTime;
    use wasm_bindgen::JsValue;

    thread_local! {
        static MONEY: OnceCell<Function> = const { OnceCell::new() };
        static TIME: OnceCell<Function> = const { OnceCell::new() };
    }

    use wasm_bindgen::JsCast;

    fn call(formatter: &Function, value: &JsValue) -> Option<String> {
        formatter.call1(&JsValue::NULL, value).ok()?.dyn_into::<JsString>().ok().map(String::from)
    }

    /// The sum's exact digits go in as a string (`Intl.NumberFormat` v3): no float on the way.
    pub fn money(value: Decimal) -> Option<String> {
        MONEY.with(|cell| {
            let format = cell.get_or_init(|| {
                let options = Intl::NumberFormatOptions::new();
                options.set_style(Intl::NumberFormatStyle::Currency);
                options.set_currency(super::CURRENCY);
                Intl::NumberFormat::new(&Array::new(), &options).format()
            });
            call(format, &JsValue::from_str(&value.to_string()))
        })
    }

    pub fn time(value: OffsetDateTime) -> Option<String> {
        TIME.with(|cell| {
            let format = cell.get_or_init(|| {
                let options = Intl::DateTimeFormatOptions::new();
                options.set_date_style(Intl::DateTimeStyle::Medium);
                options.set_time_style(Intl::DateTimeStyle::Long);
                Intl::DateTimeFormat::new(&Array::new(), &options).format()
            });
            let millis = (value.unix_timestamp_nanos() / 1_000_000) as f64;
            call(format, &Date::new(&JsValue::from_f64(millis)))
        })
    }
}

/// On the server there is no viewer: the server's spelling stands.
#[cfg(not(feature = "hydrate"))]
mod browser {
    use rust_decimal::Decimal;
    use time::OffsetDateTime;

    pub fn money(_: Decimal) -> Option<String> {
        None
    }

    pub fn time(_: OffsetDateTime) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal::dec;
    use time::macros::datetime;

    #[test]
    fn money_is_written_as_en_us_writes_the_banks_currency() {
        assert_eq!(super::money(dec!(0)), "$0.00");
        assert_eq!(super::money(dec!(999.5)), "$999.50");
        assert_eq!(super::money(dec!(1234567.5)), "$1,234,567.50");
        assert_eq!(super::money(dec!(-1000)), "-$1,000.00");
    }

    #[test]
    fn counts_group_thousands() {
        assert_eq!(super::count(0), "0");
        assert_eq!(super::count(1000), "1,000");
        assert_eq!(super::count(-1234567), "-1,234,567");
    }

    #[test]
    fn times_are_written_in_utc_until_the_viewer_rewrites_them() {
        assert_eq!(super::time(datetime!(2026-12-05 14:03:09.5 +01:00)), "2026-12-05 13:03:09 UTC");
        assert_eq!(super::viewer_time(datetime!(2026-12-05 13:03:09 UTC)), "2026-12-05 13:03:09 UTC");
    }
}
