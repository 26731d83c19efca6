"""The worker process: the RequestWorker (HTTP processor), in-flight tracking, the gem's
stats, the Python callback worker and directory, the runner and the supervisor."""
