"""Sidekiq's protocol, one module per role: job, push, reliable fetch, retry, poison jobs,
scheduled poller, heartbeat, metrics, processor and launcher."""
