//! The `scenario-hub` command: parses the command line and calls the library.

use clap::Parser;
use scenario_hub::config::{Cli, Command, LogFormat};
use scenario_hub::db::Db;
use scenario_hub::{graphql, server, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(config) => {
            telemetry::init(config.log_format);
            server::run(config).await
        }
        Command::Migrate(config) => {
            telemetry::init(LogFormat::Text);
            migrate(config).await
        }
        Command::Schema => {
            print!("{}", graphql::sdl());
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("scenario-hub: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn migrate(config: scenario_hub::config::DatabaseConfig) -> Result<(), server::BoxError> {
    let db = Db::connect(&config).await?;
    db.migrate().await?;
    println!("migrations applied");
    Ok(())
}
