//! Signing up, in and out, who is signed in, and the API tokens page.

use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_query_map;
use uuid::Uuid;

use super::confirm::ConfirmButton;
use super::format::Time;
use crate::api::ApiError;
use crate::api::identity::{create_token, list_tokens, me, revoke_token, sign_in, sign_out, sign_up};
use bank::contract::{ApiTokenInfo, NewApiToken, Role, SignedIn, TokenScope};

/// Who is signed in, read once per page load (on the server for the first render).
#[derive(Clone, Copy)]
pub struct Me(pub Resource<Result<Option<SignedIn>, ApiError>>);

pub fn provide_me() {
    provide_context(Me(Resource::new(|| (), |_| me())));
}

fn use_me() -> Me {
    expect_context::<Me>()
}

/// The signed-in user, once known.
pub fn signed_in() -> Option<SignedIn> {
    use_me().0.get().and_then(Result::ok).flatten()
}

/// Where to go after signing in: the `next` the sign-in redirect carried, if it is a path on
/// this site (never `//elsewhere` or a full URL: no open redirect), else the overview. Browsers
/// drop tabs and newlines from URLs and read `\\` as `/`, so a path holding either (or any
/// whitespace) could turn into `//elsewhere` on the way: refused.
fn next_path(next: Option<String>) -> String {
    next.filter(|next| {
        next.starts_with('/')
            && !next.starts_with("//")
            && !next.contains('\\')
            && !next.chars().any(|c| c.is_control() || c.is_whitespace())
    })
    .unwrap_or_else(|| "/".to_owned())
}

/// A full page load, so that the server renders the next page with the new session (and the
/// live stream opens with it).
pub(super) fn load_page(path: &str) {
    #[cfg(feature = "hydrate")]
    let _ = window().location().set_href(path);
    #[cfg(not(feature = "hydrate"))]
    let _ = path;
}

/// The header's right side: who is signed in, their tokens, sign-out.
#[component]
pub fn SignedInAs() -> impl IntoView {
    let out = Action::new(|_: &()| async move {
        let done = sign_out().await;
        load_page("/sign-in");
        done
    });
    view! {
        <Transition fallback=|| ()>
            {move || signed_in().map(|user| view! {
                <span class="signed-in" data-testid="signed-in-as">
                    <span class="who">{user.username.clone()}</span>
                    {(user.role == Role::Operator).then(|| view! { <span class="role">"operator"</span> })}
                    <A href="/security">"Security"</A>
                    <A href="/tokens">"API tokens"</A>
                    <button class="link" on:click=move |_| { out.dispatch(()); }>"Sign out"</button>
                </span>
            })}
        </Transition>
    }
}

/// Shown only to operators.
#[component]
pub fn OperatorsOnly(children: ChildrenFn) -> impl IntoView {
    view! {
        <Transition fallback=|| ()>
            {move || signed_in().filter(|user| user.role == Role::Operator).map(|_| children())}
        </Transition>
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Door {
    SignIn,
    SignUp,
}

#[component]
pub fn SignInPage() -> impl IntoView {
    view! { <Credentials door=Door::SignIn /> }
}

#[component]
pub fn SignUpPage() -> impl IntoView {
    view! { <Credentials door=Door::SignUp /> }
}

/// The sign-in and sign-up form: a username and a password, sent as JSON.
#[component]
fn Credentials(door: Door) -> impl IntoView {
    let query = use_query_map();
    let next = move || next_path(query.with_untracked(|q| q.get("next")));
    let username = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let send = Action::new(move |(username, password): &(String, String)| {
        let (username, password) = (username.clone(), password.clone());
        async move {
            match door {
                Door::SignIn => sign_in(username, password).await,
                Door::SignUp => sign_up(username, password).await,
            }
        }
    });
    let pending = send.pending();
    Effect::new(move |_| match send.value().get() {
        Some(Ok(_)) => load_page(&next()),
        Some(Err(ApiError { message, .. })) => error.set(Some(message)),
        None => {}
    });
    let submit = move |event: SubmitEvent| {
        event.prevent_default();
        if !pending.get_untracked() {
            error.set(None);
            send.dispatch((username.get_untracked(), password.get_untracked()));
        }
    };
    let (title, button, other) = match door {
        Door::SignIn => ("Sign in", "Sign in", view! { <p>"New here? " <A href="/sign-up">"Create a user"</A></p> }),
        Door::SignUp => ("Create a user", "Sign up", view! { <p>"Have one? " <A href="/sign-in">"Sign in"</A></p> }),
    };
    view! {
        <section class="card credentials">
            <h1>{title}</h1>
            <form data-testid="credentials-form" on:submit=submit>
                <label for="username">"Username"</label>
                <input id="username" name="username" type="text" autocomplete="username" required bind:value=username />
                <label for="password">"Password"</label>
                <input id="password" name="password" type="password" required
                    autocomplete=if door == Door::SignUp { "new-password" } else { "current-password" }
                    bind:value=password />
                {(door == Door::SignUp).then(|| view! {
                    <p class="hint">"3–32 letters, digits, '.', '_' or '-'; a password of at least 8 characters."</p>
                })}
                <button type="submit" disabled={
                    let ready = super::hydrated();
                    move || !ready.get() || pending.get()
                }>
                    {move || if pending.get() { "Checking…" } else { button }}
                </button>
                <p class="form-error" role="alert" data-testid="credentials-error">{move || error.get()}</p>
            </form>
            {other}
        </section>
    }
}

/// The caller's API tokens: make one (shown once), see when each was last used, revoke.
#[component]
pub fn TokensPage() -> impl IntoView {
    let tokens = Resource::new(|| (), |_| list_tokens());
    let name = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let scope = RwSignal::new(TokenScope::Full);
    let days = RwSignal::new(String::new());
    let made = RwSignal::new(None::<NewApiToken>);
    let error = RwSignal::new(None::<String>);
    let create = Action::new(move |(name, password, scope, days): &(String, String, TokenScope, Option<u32>)| {
        let (name, password, scope, days) = (name.clone(), password.clone(), *scope, *days);
        async move {
            let result = create_token(name, password, scope, days).await;
            tokens.refetch();
            result
        }
    });
    Effect::new(move |_| match create.value().get() {
        Some(Ok(token)) => {
            made.set(Some(token));
            name.set(String::new());
            password.set(String::new());
        }
        Some(Err(ApiError { message, .. })) => error.set(Some(message)),
        None => {}
    });
    let revoke = Action::new(move |token_id: &Uuid| {
        let token_id = *token_id;
        async move {
            let result = revoke_token(token_id).await;
            tokens.refetch();
            result
        }
    });
    let submit = move |event: SubmitEvent| {
        event.prevent_default();
        error.set(None);
        made.set(None);
        let days = days.get_untracked();
        let days = match days.trim() {
            "" => None,
            days => match days.parse::<u32>() {
                Ok(days) => Some(days),
                Err(_) => {
                    error.set(Some("Expires after: a whole number of days, or empty for never".to_owned()));
                    return;
                }
            },
        };
        create.dispatch((name.get_untracked(), password.get_untracked(), scope.get_untracked(), days));
    };
    view! {
        <section class="card">
            <h1>"API tokens"</h1>
            <p class="hint">
                "A program sends a token as " <code>"Authorization: Bearer <token>"</code>
                " and may then use the API as you, on the same routes. Revoke a token you no longer use."
            </p>
            <form class="create-token" data-testid="create-token-form" on:submit=submit>
                <label for="token-name">"Name"</label>
                <input id="token-name" name="name" type="text" autocomplete="off" bind:value=name />
                <label for="token-scope">"May"</label>
                <select id="token-scope" data-testid="token-scope" on:change=move |event| {
                    let chosen = event_target_value(&event);
                    scope.set(TokenScope::parse(&chosen).unwrap_or_default());
                }>
                    <option value="full" selected>"do everything you may"</option>
                    <option value="read">"read only (queries and the live stream)"</option>
                    <option value="metrics">"scrape /metrics only"</option>
                </select>
                <label for="token-days">"Expires after (days; empty: when revoked)"</label>
                <input id="token-days" name="days" type="text" inputmode="numeric" autocomplete="off" bind:value=days />
                <label for="token-password">"Your password (asked again: a token outlasts this session)"</label>
                <div class="money-form-row">
                    <input id="token-password" name="password" type="password" autocomplete="current-password"
                        required bind:value=password />
                    <button type="submit" disabled={
                        let ready = super::hydrated();
                        move || !ready.get()
                    }>"Create token"</button>
                </div>
                <p class="form-error" role="alert">{move || error.get()}</p>
            </form>
            {move || made.get().map(|token| view! {
                <div class="new-token" data-testid="new-token">
                    <p>"Your new token " <strong>{token.name}</strong> ". Copy it now: it is not shown again."</p>
                    <code class="secret">{token.token}</code>
                </div>
            })}
            <Transition fallback=|| view! { <p class="loading">"Loading tokens…"</p> }>
                {move || tokens.get().map(|result| match result {
                    Ok(list) if list.is_empty() => view! { <p class="empty">"No tokens yet."</p> }.into_any(),
                    Ok(list) => view! { <TokensTable list revoke /> }.into_any(),
                    Err(error) => view! { <p class="form-error" role="alert">{error.message}</p> }.into_any(),
                })}
            </Transition>
        </section>
    }
}

/// The caller's tokens, each with when it was made and last used, and a button to revoke it.
#[component]
fn TokensTable(list: Vec<ApiTokenInfo>, revoke: Action<Uuid, Result<(), ApiError>>) -> impl IntoView {
    view! {
        <table class="accounts" data-testid="tokens-table">
            <thead><tr>
                <th scope="col">"Name"</th>
                <th scope="col">"May"</th>
                <th scope="col">"Expires"</th>
                <th scope="col">"Created"</th>
                <th scope="col">"Last used"</th>
                <th scope="col"></th>
            </tr></thead>
            <tbody>
                {list.into_iter().map(|token| {
                    let token_id = token.token_id;
                    view! {
                        <tr>
                            <td>{token.name.clone()}</td>
                            <td>{token.scope.as_str()}</td>
                            <td>{token.expires_at.map_or_else(|| "no expiry".into_any(), |at| view! { <Time at /> }.into_any())}</td>
                            <td><Time at={token.created_at} /></td>
                            <td>{token.last_used_at.map_or_else(|| "never".into_any(), |at| view! { <Time at /> }.into_any())}</td>
                            <td>{match token.revoked_at {
                                Some(at) => view! { "revoked " <Time at /> }.into_any(),
                                None => view! {
                                    <ConfirmButton
                                        label="Revoke"
                                        question=format!("Revoke {}? Programs using it are refused at once.", token.name)
                                        confirm="Yes, revoke it"
                                        class="link"
                                        on_confirm=Callback::new(move |()| {
                                            revoke.dispatch(token_id);
                                        })
                                    />
                                }.into_any(),
                            }}</td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
    }
}

#[cfg(test)]
mod tests {
    use super::next_path;

    #[test]
    fn only_paths_on_this_site_are_followed_after_sign_in() {
        assert_eq!(next_path(Some("/accounts/1?at=2".into())), "/accounts/1?at=2");
        for elsewhere in [
            "//evil.example",
            "https://evil.example",
            "/\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /evil.example",
            "evil",
            "javascript:alert(1)",
        ] {
            assert_eq!(next_path(Some(elsewhere.into())), "/", "{elsewhere}");
        }
        assert_eq!(next_path(None), "/");
    }
}
