use clap::Parser;
use confab::{Application, Config, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Config::parse().validate()?;
    telemetry::init(settings.log_format);
    let app = Application::build(settings).await?;
    confab::announce(&app);
    app.run_until_stopped(confab::shutdown_signal()).await
}
