//! The pages. Rendered on the server, then hydrated in the browser, where the read model's live
//! stream (or, while it is down, polling) keeps them current, so that users watch it catch up
//! with their commands.

mod account_page;
mod account_status;
mod accounts_page;
mod audit_trail;
mod balance_chart;
mod confirm;
mod format;
mod identity_pages;
mod live;
mod money_form;
mod operations_page;
mod polling;
mod security_page;
mod show_loaded;
mod statement;
mod sync_badge;
mod time_travel;
mod transfers;

use leptos::prelude::*;
use leptos_meta::{HashedStylesheet, MetaTags, Title, provide_meta_context};
use leptos_router::components::{A, Route, Router, Routes};
use leptos_router::path;

use account_page::AccountPage;
use accounts_page::AccountsPage;
use identity_pages::{OperatorsOnly, SignInPage, SignUpPage, SignedInAs, TokensPage};
use operations_page::OperationsPage;
use security_page::SecurityPage;

/// The HTML document around the app, rendered on the server only.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    send_content_security_policy();
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <AutoReload options=options.clone() />
                // The bundle's names carry a hash with `hash-files`; this link is written where
                // it stands, by the server, which knows them.
                <HashedStylesheet id="leptos" options=options.clone() />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

/// Whether the WASM has taken over the page.
#[derive(Clone, Copy)]
struct Hydrated(ReadSignal<bool>);

/// Whether the page is interactive yet: false on the server and until hydration. A form whose
/// submission is code disables its button until then; clicked before, it would submit itself
/// as a plain form, reloading the page with what was typed in its address (`?amount=…`).
pub fn hydrated() -> Signal<bool> {
    let hydrated = use_context::<Hydrated>().map(|Hydrated(hydrated)| hydrated);
    Signal::derive(move || hydrated.is_some_and(|hydrated| hydrated.get()))
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    live::provide_live();
    identity_pages::provide_me();
    // Effects run only in the browser, once the WASM has taken over: a signal for the forms
    // (below), for tests and for anyone wondering whether the page is live.
    let (hydrated, set_hydrated) = signal(false);
    let main = NodeRef::<leptos::html::Main>::new();
    provide_context(Hydrated(hydrated));
    Effect::new(move |_| {
        set_hydrated.set(true);
        if let Some(body) = document().body() {
            let _ = body.set_attribute("data-hydrated", "true");
        }
    });
    view! {
        <Title text="CQRS Bank" />
        <Router>
            <live::LiveConnection />
            // For keyboards and screen readers: past the header and its links, to the page.
            <a class="skip-link" href="#main" on:click=move |event| {
                // The router would take the link for a navigation: the focus is moved here.
                event.prevent_default();
                if let Some(main) = main.get() {
                    let _ = main.focus();
                }
            }>"Skip to content"</a>
            <header class="site-header">
                <A href="/" attr:class="brand">"CQRS Bank"</A>
                <nav aria-label="Main">
                    <A href="/" exact=true>"Accounts"</A>
                    <OperatorsOnly>
                        <A href="/operations">"Operations"</A>
                    </OperatorsOnly>
                </nav>
                <span class="tagline">"commands append events · projections build what you read"</span>
                <SignedInAs />
            </header>
            <main id="main" tabindex="-1" node_ref=main>
                <Routes fallback=|| view! { <NotFound /> }>
                    <Route path=path!("") view=AccountsPage />
                    <Route path=path!("/accounts/:id") view=AccountPage />
                    <Route path=path!("/accounts/:id/statement") view=statement::StatementPage />
                    <Route path=path!("/operations") view=OperationsPage />
                    <Route path=path!("/tokens") view=TokensPage />
                    <Route path=path!("/security") view=SecurityPage />
                    <Route path=path!("/sign-in") view=SignInPage />
                    <Route path=path!("/sign-up") view=SignUpPage />
                </Routes>
            </main>
        </Router>
    }
}

/// What the page may run and load: scripts only from this site or inline with this response's
/// nonce (which the hydration scripts carry), WebAssembly compiled from them, styles, fetches and
/// the live stream from this site only; never framed, no plugins, no other base URL, forms posted
/// here only. An injected `<script>` without the nonce does not run.
fn send_content_security_policy() {
    #[cfg(feature = "ssr")]
    if let (Some(nonce), Some(response)) = (leptos::nonce::use_nonce(), use_context::<leptos_axum::ResponseOptions>()) {
        let policy = format!(
            "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; style-src 'self'; \
             img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; \
             form-action 'self'; object-src 'none'"
        );
        if let Ok(policy) = axum::http::HeaderValue::from_str(&policy) {
            response.insert_header(axum::http::header::CONTENT_SECURITY_POLICY, policy);
        }
    }
}

/// Marks the server's answer as 404 (the page itself says why).
fn respond_not_found() {
    #[cfg(feature = "ssr")]
    if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
        response.set_status(axum::http::StatusCode::NOT_FOUND);
    }
}

#[component]
fn NotFound() -> impl IntoView {
    respond_not_found();
    view! {
        <section class="card">
            <h1>"Page not found"</h1>
            <p>"There is nothing at this address. " <A href="/">"Back to the accounts"</A></p>
        </section>
    }
}
