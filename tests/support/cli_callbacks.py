"""Python callbacks the CLI tests load: ``patient-sidekiq run -r tests.support.cli_callbacks``.

Each result is appended as one JSON line to the file named by ``$CLI_TEST_RECORD``; hooks
add their own lines, so a test sees the order in which hooks and callbacks ran.
"""

from __future__ import annotations

import json
import os
from typing import Any

from patient_sidekiq.registry.callbacks import callback
from patient_sidekiq.registry.hooks import after_completion, after_error


def record(entry: dict[str, Any]) -> None:
    with open(os.environ["CLI_TEST_RECORD"], "a", encoding="utf-8") as file:
        file.write(json.dumps(entry) + "\n")


@after_completion
def note_completion(response: Any) -> None:
    record({"hook": "after_completion", "request_id": response.request_id})


@after_error
def note_error(error: Any) -> None:
    record({"hook": "after_error", "request_id": error.request_id})


@callback("CliTest::Recorder")
class Recorder:
    def on_complete(self, response: Any) -> None:
        record(
            {
                "callback": "on_complete",
                "status": response.status,
                "json": response.json(),
                "request_id": response.request_id,
                "callback_args": dict(response.callback_args),
            }
        )

    async def on_error(self, error: Any) -> None:
        record(
            {
                "callback": "on_error",
                "error_type": error.error_type,
                "message": error.message,
                "request_id": error.request_id,
            }
        )
