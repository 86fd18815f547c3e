//! A button for what cannot be undone: it asks first.

use leptos::prelude::*;

/// The first click asks `question`, with a button that does it (`confirm`) and one that does
/// not; only the second does it. The question takes the keyboard's focus's place, so a key
/// held down cannot confirm by accident (the new button needs its own press).
#[component]
pub fn ConfirmButton(
    /// What the button says.
    label: &'static str,
    /// What is asked, once clicked.
    question: String,
    /// What the button that does it says ("Yes, close it").
    confirm: &'static str,
    /// `danger` for a red button.
    #[prop(optional)]
    class: &'static str,
    #[prop(into, optional)] disabled: Signal<bool>,
    on_confirm: Callback<()>,
) -> impl IntoView {
    let asking = RwSignal::new(false);
    view! {
        <Show
            when=move || asking.get()
            fallback=move || view! {
                <button type="button" class=class disabled=move || disabled.get() on:click=move |_| asking.set(true)>
                    {label}
                </button>
            }
        >
            <span class="confirm" role="group" aria-label=label>
                <span class="question">{question.clone()}</span>
                " "
                <button type="button" class=class disabled=move || disabled.get() on:click=move |_| {
                    asking.set(false);
                    on_confirm.run(());
                }>{confirm}</button>
                " "
                <button type="button" class="link" on:click=move |_| asking.set(false)>"Cancel"</button>
            </span>
        </Show>
    }
}
