"""The gem's two job classes and the queues it puts them on by default.

A RequestWorker job carries one HTTP request to run; a CallbackWorker job carries its
result to the app's callback (wire spec §1). Both the enqueueing client and the worker use
these names, so they live here, below both.

Touches no Redis keys.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CALLBACK_WORKER",
    "DEFAULT_CALLBACK_QUEUE",
    "DEFAULT_PYTHON_CALLBACK_QUEUE",
    "DEFAULT_REQUEST_QUEUE",
    "REQUEST_WORKER",
]

REQUEST_WORKER: Final = "PatientHttp::Sidekiq::RequestWorker"
CALLBACK_WORKER: Final = "PatientHttp::Sidekiq::CallbackWorker"

DEFAULT_REQUEST_QUEUE: Final = "patient_http"
"""Where RequestWorker jobs go and are polled; never Sidekiq's ``default``, so a Python worker
never takes a Ruby app's other jobs."""
DEFAULT_CALLBACK_QUEUE: Final = "default"
"""Where CallbackWorker jobs for Ruby callbacks go: the Ruby app's Sidekiq runs them."""
DEFAULT_PYTHON_CALLBACK_QUEUE: Final = "patient_http_callbacks"
"""Where CallbackWorker jobs for Python callbacks go."""
