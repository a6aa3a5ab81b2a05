//! The `scenario-hub` command: parses the command line and calls the library.

use clap::Parser;
use scenario_hub::config::{
    Cli, Command, DatabaseConfig, ExportCommand, ImportCommand, KeyRole, KeysAction, KeysCommand,
    Limits, LogFormat,
};
use scenario_hub::db::Db;
use scenario_hub::seed::demo;
use scenario_hub::service::Ctx;
use scenario_hub::service::auth::{self, Principal, Role};
use scenario_hub::service::{export, import};
use scenario_hub::{graphql, server, telemetry};

/// mimalloc: the server allocates and frees many small objects per request
/// (GraphQL values, JSON), where it beats the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        Command::Keys(command) => {
            telemetry::init(LogFormat::Text);
            keys(command).await
        }
        Command::Demo(config) => {
            telemetry::init(LogFormat::Text);
            demo(config).await
        }
        Command::Export(command) => {
            telemetry::init(LogFormat::Text);
            export(command).await
        }
        Command::Import(command) => {
            telemetry::init(LogFormat::Text);
            import(command).await
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

async fn demo(config: DatabaseConfig) -> Result<(), server::BoxError> {
    let ctx = tool_ctx(&config).await?;
    let loaded = demo::load(&ctx).await?;
    println!(
        "demo loaded: scenario template {:?} ({}), run {:?} ({}) RUNNING with {} events, {} engines",
        demo::TEMPLATE_NAME,
        loaded.template_id,
        demo::RUN_NAME,
        loaded.run_id,
        loaded.events,
        loaded.engine_ids.len()
    );
    println!(
        "explore it at /graphiql: {{ scenarioRuns {{ nodes {{ name status lastSequence }} }} }}"
    );
    Ok(())
}

async fn keys(command: KeysCommand) -> Result<(), server::BoxError> {
    let ctx = tool_ctx(&command.database).await?;
    match command.action {
        KeysAction::Create { role, name } => {
            let role = match role {
                KeyRole::Admin => Role::Admin,
                KeyRole::Engine => Role::Engine,
                KeyRole::Viewer => Role::Viewer,
            };
            let (key, token) = auth::create(&ctx, &name, role).await?;
            println!("created {} key {:?} ({})", role.as_str(), key.name, key.id);
            println!("the token is shown once; send it as Authorization: Bearer <token>");
            println!("{token}");
        }
        KeysAction::List => {
            println!(
                "{:<36}  {:<20}  {:<6}  {:<25}  revoked",
                "id", "name", "role", "created"
            );
            for key in auth::list(&ctx).await? {
                let revoked = key.revoked_at.map_or("-".to_owned(), |at| at.to_rfc3339());
                println!(
                    "{:<36}  {:<20}  {:<6}  {:<25}  {revoked}",
                    key.id,
                    key.name,
                    key.role,
                    key.created_at.to_rfc3339()
                );
            }
        }
        KeysAction::Revoke { name_or_id } => {
            let key = auth::revoke(&ctx, &name_or_id).await?;
            println!("revoked key {:?} ({})", key.name, key.id);
        }
    }
    Ok(())
}

/// A context over the migrated database of `config`, for one command.
async fn tool_ctx(config: &DatabaseConfig) -> Result<Ctx, server::BoxError> {
    let db = Db::connect(config).await?;
    db.migrate().await?;
    Ok(Ctx::new(db, Limits::default()))
}

async fn export(command: ExportCommand) -> Result<(), server::BoxError> {
    let ctx = tool_ctx(&command.database).await?;
    let counts = match &command.output {
        Some(path) => {
            let file = tokio::fs::File::create(path).await?;
            export::export(&ctx, command.run_id, file).await?
        }
        None => export::export(&ctx, command.run_id, tokio::io::stdout()).await?,
    };
    eprintln!(
        "exported run {}: {} events, {} processing records, {} engines, {} state versions, {} relationships",
        command.run_id,
        counts.events,
        counts.processings,
        counts.engines,
        counts.engine_state_versions,
        counts.relationships
    );
    Ok(())
}

async fn import(command: ImportCommand) -> Result<(), server::BoxError> {
    let ctx = tool_ctx(&command.database).await?;
    // The command line is the machine's operator: an admin.
    let imported = if command.file.as_os_str() == "-" {
        let input = tokio::io::BufReader::new(tokio::io::stdin());
        import::import(&ctx, &Principal::OPEN, input).await?
    } else {
        let file = tokio::fs::File::open(&command.file).await?;
        let input = tokio::io::BufReader::with_capacity(256 * 1024, file);
        import::import(&ctx, &Principal::OPEN, input).await?
    };
    println!(
        "imported run {:?} ({}): {} events, {} processing records, {} engines, {} state versions, {} relationships",
        imported.run.name,
        imported.run.id,
        imported.counts.events,
        imported.counts.processings,
        imported.counts.engines,
        imported.counts.engine_state_versions,
        imported.counts.relationships
    );
    Ok(())
}

async fn migrate(config: scenario_hub::config::DatabaseConfig) -> Result<(), server::BoxError> {
    let db = Db::connect(&config).await?;
    db.migrate().await?;
    println!("migrations applied");
    Ok(())
}
