use std::io::BufRead;

use server::configuration::{Settings, database_from_env, owner_database_from_env};
use server::startup::{Application, create_operator};
use server::telemetry;

const USAGE: &str = "usage: server                       serve the bank (settings from the environment)
       server create-operator NAME  make NAME an operator; the password is read from stdin";

/// The stack of each runtime thread. Rendering a page on the server walks its whole view tree,
/// and a debug build's frames are large: the account page needs about 1.5 MiB there, close to
/// the 2 MiB default. Memory is reserved, not used, until a thread needs it.
const THREAD_STACK: usize = 8 * 1024 * 1024;

fn main() -> std::process::ExitCode {
    match tokio::runtime::Builder::new_multi_thread().enable_all().thread_stack_size(THREAD_STACK).build() {
        Ok(runtime) => runtime.block_on(run()),
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> std::process::ExitCode {
    telemetry::init();
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    match arguments.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => match Settings::from_env() {
            Ok(settings) => serve(settings).await,
            Err(error) => {
                tracing::error!("configuration: {error}");
                std::process::ExitCode::FAILURE
            }
        },
        ["create-operator", name] => {
            let databases = database_from_env().and_then(|database| Ok((database, owner_database_from_env()?)));
            let (database, owner) = match databases {
                Ok(databases) => databases,
                Err(error) => {
                    eprintln!("create-operator: {error}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            // One line from stdin (a terminal, a pipe or a file), so the password never appears
            // in the process list or the shell's history.
            let mut password = String::new();
            if std::io::stdin().lock().read_line(&mut password).is_err() {
                eprintln!("could not read the password from stdin");
                return std::process::ExitCode::FAILURE;
            }
            let password = password.trim_end_matches(['\r', '\n']);
            match create_operator(&database, owner.as_ref(), name, password).await {
                Ok(()) => {
                    println!("{name} is an operator; sign in at /sign-in");
                    std::process::ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("create-operator: {error}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn serve(settings: Settings) -> std::process::ExitCode {
    let application = match Application::build(settings).await {
        Ok(application) => application,
        Err(error) => {
            tracing::error!("start-up failed: {error:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!("serving http://{}", application.address());
    match application.run_until_stopped().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("server failed: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
