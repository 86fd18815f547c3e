//! The whole server (migrations, projections, routes) started in this process on a free port
//! against the benchmark database, as the API tests start it, with its default settings.

use std::time::Duration;

use backend::write_side::{CommandEnvelope, CommandHandler};
use bank::domain::{AccountCommand, CommandBy, Money, OwnerId, Sender};
use leptos::config::LeptosOptions;
use server::configuration::Settings;
use server::startup::Application;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::database;
use crate::load;

pub struct Server {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    /// The size of the server's connection pool (its default setting).
    pub max_connections: u32,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

/// The settings the server runs with: its defaults, on a free port, against the bench database,
/// except the per-user command limit: every request here is one user's, and the benchmarks
/// measure what the server sustains, not what one user is allowed.
pub fn settings() -> Result<Settings, Box<dyn std::error::Error>> {
    let leptos_options = LeptosOptions::builder().output_name("cqrs-bank").site_root("target/site").build();
    let mut settings = Settings::new("127.0.0.1:0".parse()?, database::options()?, leptos_options);
    settings.max_connections = database::connections(settings.max_connections);
    settings.rate_limits.commands = server::routes::rate_limits::Rate::per_second(10_000_000);
    Ok(settings)
}

/// The benchmark's user, "bench": the owner of the accounts it opens (so that its commands are
/// the owner's) and an operator (so that its overview streams hear every account, as an
/// operator's do). Made afresh with a new API token, which every HTTP client here sends.
async fn sign_in_the_bench_user() -> Result<(), Box<dyn std::error::Error>> {
    use backend::identity::{AdminError, Password, Passwords, Username, sessions, tokens, users};
    let pool = sqlx::PgPool::connect_with(database::options()?).await?;
    let (passwords, username) = (Passwords::new(), Username::parse(BENCH_OWNER)?);
    let password = Password::parse("the bench's own password")?;
    let user = match users::create_operator(&pool, &passwords, &username, &password, false).await {
        Err(AdminError::AlreadyOperator(_)) => users::reset_password(&pool, &passwords, &username, &password).await?,
        made => made?,
    };
    let session = sessions::start(&pool, &user, "the bench").await?.ok_or("the bench user changed while signing in")?;
    let caller = sessions::find(&pool, &session).await?.ok_or("the bench user's session names nobody")?;
    let token = tokens::create(&pool, &caller, &session, &tokens::TokenRequest::full("bench")).await?;
    crate::http::set_bearer_token(token.token);
    pool.close().await;
    Ok(())
}

/// Who owns the accounts the benchmarks open.
pub const BENCH_OWNER: &str = "bench";

impl Server {
    pub async fn start() -> Result<Server, Box<dyn std::error::Error>> {
        Server::start_with(|_| {}).await
    }

    /// [`Server::start`] with settings of the scenario's choosing.
    pub async fn start_with(configure: impl FnOnce(&mut Settings)) -> Result<Server, Box<dyn std::error::Error>> {
        let mut settings = settings()?;
        configure(&mut settings);
        let max_connections = settings.max_connections;
        let application = Application::build(settings).await?;
        sign_in_the_bench_user().await?;
        let base = format!("http://{}", application.address());
        let shutdown = application.shutdown_token();
        let task = tokio::spawn(application.run_until_stopped());
        Ok(Server { base, max_connections, shutdown, task })
    }

    /// Stops serving and waits for the projections' batches in flight.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// Opens `count` accounts with 1,000.00 each through the command handler, 16 at a time.
pub async fn create_accounts(handler: &CommandHandler, count: usize) -> Result<Vec<Uuid>, String> {
    load::in_parallel(count, 16, |_| async {
        let account_id = Uuid::new_v4();
        let command = AccountCommand::CreateAccount {
            owner_id: OwnerId::parse(BENCH_OWNER).expect("a valid owner"),
            initial_balance: Money::try_from(rust_decimal::Decimal::from(1000)).expect("a valid balance"),
        };
        handler.handle(envelope(account_id, command)).await.map_err(|e| e.to_string())?;
        Ok(account_id)
    })
    .await
}

pub fn envelope(account_id: Uuid, command: AccountCommand) -> CommandEnvelope {
    envelope_with(account_id, command, Default::default())
}

/// [`envelope`] with the metadata the application adds to its events (who asked: see
/// `crate::sealing`).
pub fn envelope_with(
    account_id: Uuid,
    command: AccountCommand,
    metadata: serde_json::Map<String, serde_json::Value>,
) -> CommandEnvelope {
    let command_id = Uuid::new_v4();
    CommandEnvelope {
        command_id,
        correlation_id: command_id,
        stream_id: account_id,
        command: CommandBy { by: Sender::Customer(OwnerId::parse(BENCH_OWNER).expect("a valid owner")), command },
        causation_id: None,
        metadata,
    }
}
