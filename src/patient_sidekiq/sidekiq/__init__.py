"""Sidekiq's protocol, one module per role: job, push, reliable fetch, retry, poison jobs,
scheduled poller, heartbeat, metrics, processor and launcher.

"protocol spec §N" in this package is section N of ``docs/sidekiq-protocol.md``.
"""
