//! The security page: change one's password, see one's sessions and end one, sign out
//! everywhere — what a user does when they think someone else has their password or a browser
//! of theirs; and ask to be forgotten.

use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use uuid::Uuid;

use super::confirm::ConfirmButton;
use super::format::Time;
use super::identity_pages::load_page;
use crate::api::ApiError;
use crate::api::privacy::forget_me;
use crate::api::security::{change_password, end_session, list_sessions, sign_out_everywhere};
use bank::contract::SessionInfo;

#[component]
pub fn SecurityPage() -> impl IntoView {
    let sessions = Resource::new(|| (), |_| list_sessions());
    view! {
        <section class="card">
            <h1>"Security"</h1>
            <ChangePassword sessions />
        </section>
        <section class="card">
            <h2>"Where you are signed in"</h2>
            <Sessions sessions />
        </section>
        <section class="card">
            <ForgetMe />
        </section>
    }
}

/// The form: current password, new one, and whether the API tokens end too.
#[component]
fn ChangePassword(sessions: Resource<Result<Vec<SessionInfo>, ApiError>>) -> impl IntoView {
    let current = RwSignal::new(String::new());
    let new = RwSignal::new(String::new());
    let end_tokens = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let done = RwSignal::new(false);
    let change = Action::new(|(current, new, end_tokens): &(String, String, bool)| {
        change_password(current.clone(), new.clone(), *end_tokens)
    });
    let pending = change.pending();
    Effect::new(move |_| match change.value().get() {
        Some(Ok(_)) => {
            done.set(true);
            current.set(String::new());
            new.set(String::new());
            sessions.refetch();
        }
        Some(Err(ApiError { message, .. })) => error.set(Some(message)),
        None => {}
    });
    let submit = move |event: SubmitEvent| {
        event.prevent_default();
        if !pending.get_untracked() {
            error.set(None);
            done.set(false);
            change.dispatch((current.get_untracked(), new.get_untracked(), end_tokens.get_untracked()));
        }
    };
    view! {
        <form data-testid="change-password-form" on:submit=submit>
            <h2>"Change your password"</h2>
            <label for="current-password">"Current password"</label>
            <input id="current-password" type="password" autocomplete="current-password" required bind:value=current />
            <label for="new-password">"New password (at least 8 characters)"</label>
            <input id="new-password" type="password" autocomplete="new-password" required bind:value=new />
            <label class="checkbox">
                <input type="checkbox" data-testid="end-tokens" bind:checked=end_tokens />
                " Revoke my API tokens too"
            </label>
            <button type="submit" disabled={
                let ready = super::hydrated();
                move || !ready.get() || pending.get()
            }>"Change password"</button>
            <p class="form-error" role="alert">{move || error.get()}</p>
            {move || done.get().then(|| view! {
                <p class="notice" data-testid="password-changed">
                    "Your password is changed. Every other browser is signed out."
                </p>
            })}
        </form>
    }
}

/// The user's sessions, this one marked, each other one with a button to end it; and "sign out
/// everywhere".
#[component]
fn Sessions(sessions: Resource<Result<Vec<SessionInfo>, ApiError>>) -> impl IntoView {
    let end = Action::new(move |session_id: &Uuid| {
        let session_id = *session_id;
        async move {
            let result = end_session(session_id).await;
            sessions.refetch();
            result
        }
    });
    let everywhere = Action::new(|_: &()| async move {
        let result = sign_out_everywhere().await;
        load_page("/sign-in");
        result
    });
    view! {
        <Transition fallback=|| view! { <p class="loading">"Loading sessions…"</p> }>
            {move || sessions.get().map(|result| match result {
                Ok(list) => view! {
                    <table class="accounts" data-testid="sessions-table">
                        <thead><tr>
                            <th scope="col">"Browser"</th>
                            <th scope="col">"Signed in"</th>
                            <th scope="col">"Last seen"</th>
                            <th scope="col"></th>
                        </tr></thead>
                        <tbody>
                            {list.into_iter().map(|session| {
                                let session_id = session.session_id;
                                view! {
                                    <tr data-testid="session-row">
                                        <td>{session.user_agent}</td>
                                        <td><Time at={session.created_at} /></td>
                                        <td><Time at={session.last_seen_at} /></td>
                                        <td>{if session.current {
                                            view! { <span data-testid="this-session">"this browser"</span> }.into_any()
                                        } else {
                                            view! {
                                                <button class="link" on:click=move |_| { end.dispatch(session_id); }>
                                                    "End"
                                                </button>
                                            }.into_any()
                                        }}</td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any(),
                Err(error) => view! { <p class="form-error" role="alert">{error.message}</p> }.into_any(),
            })}
        </Transition>
        <button data-testid="sign-out-everywhere" on:click=move |_| { everywhere.dispatch(()); }>
            "Sign out everywhere"
        </button>
    }
}

/// Being forgotten, asked for with one's password (and confirmed): once every account of theirs
/// is closed, the user's name and words are erased and they are signed out, as "sign out
/// everywhere" does.
#[component]
fn ForgetMe() -> impl IntoView {
    let password = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let forget = Action::new(|password: &String| {
        let password = password.clone();
        async move {
            let result = forget_me(password).await;
            // Signed out: the server ended every session and cleared this browser's cookie.
            if result.is_ok() {
                load_page("/sign-in");
            }
            result
        }
    });
    let pending = forget.pending();
    Effect::new(move |_| {
        if let Some(Err(ApiError { message, .. })) = forget.value().get() {
            error.set(Some(message));
        }
    });
    let ready = super::hydrated();
    let ask = move || {
        if pending.get_untracked() {
            return;
        }
        let typed = password.get_untracked();
        if typed.is_empty() {
            error.set(Some("Type your password first.".to_owned()));
        } else {
            error.set(None);
            forget.dispatch(typed);
        }
    };
    view! {
        // The confirmation's buttons are the only ones: Enter in the field does nothing.
        <form data-testid="forget-me-form" on:submit=|event: SubmitEvent| event.prevent_default()>
            <h2>"Forget me"</h2>
            <p class="hint">
                "Close your accounts first. Your name and your words (reasons, notes) are then erased from the "
                "bank's records; your accounts' money history stays, their owner shown as (forgotten). "
                "You are signed out everywhere, and nobody can take your username for a while."
            </p>
            <label for="forget-password">"Your password, to confirm it is you"</label>
            <input id="forget-password" type="password" autocomplete="current-password" required bind:value=password />
            <ConfirmButton
                label="Forget me"
                question="Forget you for good? This cannot be undone.".to_owned()
                confirm="Yes, forget me"
                class="danger"
                disabled=Signal::derive(move || !ready.get() || pending.get())
                on_confirm=Callback::new(move |()| ask())
            />
            <p class="form-error" role="alert">{move || error.get()}</p>
        </form>
    }
}
