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

/// Screen positions for the entries: evenly spaced in order, scaled between the lowest and
/// highest balance (a flat line sits in the middle).
fn layout(entries: &[LedgerEntry]) -> (Vec<Point>, Decimal, Decimal) {
    let min = entries.iter().map(|e| e.balance_after).min().unwrap_or_default();
    let max = entries.iter().map(|e| e.balance_after).max().unwrap_or_default();
    let span = (max - min).to_f64().unwrap_or(0.0);
    let step = if entries.len() > 1 { (WIDTH - LEFT - RIGHT) / (entries.len() - 1) as f64 } else { 0.0 };
    let points = entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let share = if span > 0.0 { (entry.balance_after - min).to_f64().unwrap_or(0.0) / span } else { 0.5 };
            Point {
                x: LEFT + step * i as f64 + if entries.len() == 1 { (WIDTH - LEFT - RIGHT) / 2.0 } else { 0.0 },
                y: TOP + (1.0 - share) * (HEIGHT - TOP - BOTTOM),
                entry: entry.clone(),
            }
        })
        .collect();
    (points, min, max)
}

#[component]
pub fn BalanceChart(ledger: Signal<Option<Ledger>>) -> impl IntoView {
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
                view! {
                    <svg
                        viewBox=format!("0 0 {WIDTH} {HEIGHT}")
                        role="img"
                        aria-label=format!("Balance over the last {count} movements, from {} to {}", format::money(min), format::money(max))
                    >
                        <line class="axis" x1=LEFT y1=TOP x2=LEFT y2=HEIGHT - BOTTOM />
                        <line class="axis" x1=LEFT y1=HEIGHT - BOTTOM x2=WIDTH - RIGHT y2=HEIGHT - BOTTOM />
                        <text class="tick" x=LEFT - 6.0 y=TOP + 4.0 text-anchor="end">{format::money(max)}</text>
                        <text class="tick" x=LEFT - 6.0 y=HEIGHT - BOTTOM text-anchor="end">{format::money(min)}</text>
                        <text class="tick" x=WIDTH - RIGHT y=HEIGHT - 8.0 text-anchor="end">
                            {format!("last {count} movements, oldest left")}
                        </text>
                        <polyline class="balance-line" points=line />
                        {points.into_iter().map(|p| {
                            let label = format!(
                                "v{} {} {} → balance {}",
                                p.entry.version, p.entry.kind, format::money(p.entry.amount), format::money(p.entry.balance_after)
                            );
                            view! {
                                <circle
                                    class=format!("mark {}", p.entry.kind)
                                    cx=format!("{:.1}", p.x)
                                    cy=format!("{:.1}", p.y)
                                    r="4"
                                    aria-label=label
                                />
                            }
                        }).collect_view()}
                    </svg>
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
