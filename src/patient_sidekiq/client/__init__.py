"""Enqueueing from Python: the job builder, Client/AsyncClient, the module-level API and
request templates. Never imports the worker."""
