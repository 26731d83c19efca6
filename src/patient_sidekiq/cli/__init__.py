"""The `patient-sidekiq` command: the typer app, status and in-flight reports, the demo,
logging."""
