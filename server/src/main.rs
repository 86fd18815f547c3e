use std::io::BufRead;
use std::process::ExitCode;

use clap::Parser;
use server::configuration::{Cli, Command, Settings, SettingsArgs};
use server::startup::{Application, UserCommandError, create_operator, reset_password};
use server::telemetry;
use sqlx::postgres::PgConnectOptions;

/// The stack of each runtime thread. Rendering a page on the server walks its whole view tree,
/// and a debug build's frames are large: the account page needs about 1.5 MiB there, close to
/// the 2 MiB default. Memory is reserved, not used, until a thread needs it.
const THREAD_STACK: usize = 8 * 1024 * 1024;

fn main() -> ExitCode {
    // Before the runtime: `--help`, `--version` and a setting that does not parse end here.
    let cli = Cli::parse();
    match tokio::runtime::Builder::new_multi_thread().enable_all().thread_stack_size(THREAD_STACK).build() {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    telemetry::init();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => match Settings::from_args(cli.settings) {
            Ok(settings) => serve(settings).await,
            Err(error) => {
                tracing::error!("configuration: {error}");
                ExitCode::FAILURE
            }
        },
        Command::CreateOperator { name, promote } => {
            let done = format!("{name} is an operator; sign in at /sign-in");
            on_user("create-operator", &cli.settings, done, |database, owner, password| async move {
                create_operator(&database, owner.as_ref(), &name, &password, promote).await
            })
            .await
        }
        Command::ResetPassword { name } => {
            let done = format!("{name}'s password is set; every session and token they had has ended");
            on_user("reset-password", &cli.settings, done, |database, owner, password| async move {
                reset_password(&database, owner.as_ref(), &name, &password).await
            })
            .await
        }
    }
}

/// Runs a command on a user with the password from one line of stdin (a terminal, a pipe or a
/// file), printing `done` or why not.
async fn on_user<F, Fut>(command: &str, settings: &SettingsArgs, done: String, run: F) -> ExitCode
where
    F: FnOnce(PgConnectOptions, Option<PgConnectOptions>, String) -> Fut,
    Fut: Future<Output = Result<(), UserCommandError>>,
{
    let ran = async {
        let (database, owner) = settings.databases().map_err(|error| error.to_string())?;
        let mut password = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut password)
            .map_err(|error| format!("could not read the password from stdin: {error}"))?;
        let password = password.trim_end_matches(['\r', '\n']).to_owned();
        run(database, owner, password).await.map_err(|error| error.to_string())
    };
    match ran.await {
        Ok(()) => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{command}: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> ExitCode {
    let application = match Application::build(settings).await {
        Ok(application) => application,
        Err(error) => {
            tracing::error!("start-up failed: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!("serving http://{}", application.address());
    match application.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("server failed: {error}");
            ExitCode::FAILURE
        }
    }
}
