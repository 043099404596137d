use clap::Parser;
use confab::{Application, Config, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Config::parse().validate()?;
    let telemetry = telemetry::init(settings.log_format, &settings.node_id);
    let app = Application::build(settings).await?;
    confab::announce(&app, telemetry.tracing_enabled());
    let outcome = app.run_until_stopped(confab::shutdown_signal()).await;
    telemetry.shutdown();
    outcome
}
