use clap::Parser;
use confab::{Application, Config, telemetry};

mod healthcheck;

fn main() -> anyhow::Result<()> {
    // `confab healthcheck` is the container health check: dispatched before the server's flags
    // are parsed, so it needs none of them and starts no runtime.
    if healthcheck::requested(std::env::args_os()) {
        std::process::exit(healthcheck::run());
    }
    confab::memory::tune_allocator();
    serve()
}

#[tokio::main]
async fn serve() -> anyhow::Result<()> {
    let settings = Config::parse().validate()?;
    let telemetry = telemetry::init(settings.log_format, &settings.node_id);
    let app = Application::build(settings).await?;
    confab::announce(&app, telemetry.tracing_enabled());
    let outcome = app.run_until_stopped(confab::shutdown_signal()).await;
    telemetry.shutdown();
    outcome
}
