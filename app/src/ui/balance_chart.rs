//! The balance over the account's latest movements, drawn as SVG by Leptos itself.

use leptos::prelude::*;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use super::format;
use crate::api::{Ledger, LedgerEntry};

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 28.0;

/// A point of the chart: where it is drawn and what it stands for.
struct Point {
    x: f64,
    y: f64,
    entry: LedgerEntry,
}

/// Screen positions for the entries: along a time axis (evenly spaced in order if they all share
/// one instant), scaled between the lowest and highest balance (a flat line sits in the middle).
fn layout(entries: &[LedgerEntry]) -> (Vec<Point>, Decimal, Decimal) {
    let min = entries.iter().map(|e| e.balance_after).min().unwrap_or_default();
    let max = entries.iter().map(|e| e.balance_after).max().unwrap_or_default();
    let span = (max - min).to_f64().unwrap_or(0.0);
    let width = WIDTH - LEFT - RIGHT;
    let (first, last) = match (entries.first(), entries.last()) {
        (Some(first), Some(last)) => (first.recorded_at, last.recorded_at),
        _ => return (Vec::new(), min, max),
    };
    let duration = (last - first).as_seconds_f64();
    let step = if entries.len() > 1 { width / (entries.len() - 1) as f64 } else { 0.0 };
    let points = entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let share = if span > 0.0 { (entry.balance_after - min).to_f64().unwrap_or(0.0) / span } else { 0.5 };
            let x = match entries.len() {
                1 => LEFT + width / 2.0,
                _ if duration > 0.0 => LEFT + (entry.recorded_at - first).as_seconds_f64() / duration * width,
                _ => LEFT + step * i as f64,
            };
            Point { x, y: TOP + (1.0 - share) * (HEIGHT - TOP - BOTTOM), entry: entry.clone() }
        })
        .collect();
    (points, min, max)
}

/// What one point stands for, in words: its tooltip, and what the keyboard's focus reads.
fn describe(entry: &LedgerEntry) -> String {
    format!(
        "{}: {} {} → balance {} (version {})",
        format::viewer_time(entry.recorded_at),
        entry.kind.in_words(),
        format::viewer_money(entry.amount),
        format::viewer_money(entry.balance_after),
        entry.version
    )
}

#[component]
pub fn BalanceChart(ledger: Signal<Option<Ledger>>) -> impl IntoView {
    // The point the keyboard (or a pointer) is on, described below the chart.
    let focused = RwSignal::new(None::<String>);
    view! {
        <section class="card chart" data-testid="balance-chart">
            <h2>"Balance over time"</h2>
            {move || ledger.get().map(|ledger| {
                if ledger.entries.is_empty() {
                    return view! { <p class="empty">"No movements in the ledger yet."</p> }.into_any();
                }
                let (points, min, max) = layout(&ledger.entries);
                let line = points.iter().map(|p| format!("{:.1},{:.1}", p.x, p.y)).collect::<Vec<_>>().join(" ");
                let count = points.len();
                let (first, last) = (ledger.entries[0].recorded_at, ledger.entries[count - 1].recorded_at);
                view! {
                    <svg
                        viewBox=format!("0 0 {WIDTH} {HEIGHT}")
                        role="group"
                        aria-label=format!(
                            "Balance over the last {count} movements, from {} to {}; each point can be focused",
                            format::viewer_money(min),
                            format::viewer_money(max),
                        )
                    >
                        <line class="axis" x1=LEFT y1=TOP x2=LEFT y2=HEIGHT - BOTTOM />
                        <line class="axis" x1=LEFT y1=HEIGHT - BOTTOM x2=WIDTH - RIGHT y2=HEIGHT - BOTTOM />
                        <text class="tick" x=LEFT - 6.0 y=TOP + 4.0 text-anchor="end">{format::viewer_money(max)}</text>
                        <text class="tick" x=LEFT - 6.0 y=HEIGHT - BOTTOM text-anchor="end">{format::viewer_money(min)}</text>
                        // The time axis: when the first and the last movement shown were recorded.
                        <text class="tick" x=LEFT y=HEIGHT - 8.0 text-anchor="start" data-testid="time-axis-start">
                            {format::viewer_time(first)}
                        </text>
                        <text class="tick" x=WIDTH - RIGHT y=HEIGHT - 8.0 text-anchor="end" data-testid="time-axis-end">
                            {format::viewer_time(last)}
                        </text>
                        <polyline class="balance-line" points=line />
                        {points.into_iter().map(|p| {
                            let label = describe(&p.entry);
                            let (on_focus, on_hover, title) = (label.clone(), label.clone(), label.clone());
                            view! {
                                <circle
                                    class=format!("mark {}", p.entry.kind)
                                    cx=format!("{:.1}", p.x)
                                    cy=format!("{:.1}", p.y)
                                    r="5"
                                    tabindex="0"
                                    role="img"
                                    aria-label=label
                                    on:focus=move |_| focused.set(Some(on_focus.clone()))
                                    on:mouseenter=move |_| focused.set(Some(on_hover.clone()))
                                >
                                    <title>{title}</title>
                                </circle>
                            }
                        }).collect_view()}
                    </svg>
                    <p class="chart-point" aria-live="polite" data-testid="chart-point">
                        {move || focused.get().unwrap_or_else(|| "Point at or tab to a movement to read it.".to_owned())}
                    </p>
                    <p class="legend">
                        <span class="key deposit">"deposit"</span>
                        <span class="key withdrawal">"withdrawal"</span>
                        <span class="key opening">"opening balance"</span>
                    </p>
                }.into_any()
            })}
        </section>
    }
}
