"""A stand-in worker for the supervisor tests: ``python -m tests.support.supervised_child DIR``.

Appends what happens to it to ``DIR/<index>.<pid>`` (index from PATIENT_SIDEKIQ_CHILD_INDEX):
``start``, ``ready`` once its handlers are installed, then the name of each signal it
receives. It exits 0 on TERM or INT unless told to ignore TERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGTSTP, signal.SIGTTIN, signal.SIGHUP)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", type=Path)
    parser.add_argument("--exit", type=int, default=None, help="exit with this status ...")
    parser.add_argument("--exit-index", type=int, default=None, help="... only child N does")
    parser.add_argument("--exit-when", type=Path, default=None, help="... once this file exists")
    parser.add_argument("--exit-after", type=float, default=0.0, help="... after this long")
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--ready-after", type=float, default=0.0, help="install handlers late")
    options = parser.parse_args()

    index = int(os.environ["PATIENT_SIDEKIQ_CHILD_INDEX"])
    log = (options.directory / f"{index}.{os.getpid()}").open("a", buffering=1)
    log.write("start\n")
    started = time.monotonic()
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        log.write(f"{signal.Signals(signum).name[3:]}\n")
        if signum == signal.SIGINT or (signum == signal.SIGTERM and not options.ignore_term):
            stopping = True

    # Simulates a worker that connects to Redis before it installs its handlers.
    time.sleep(options.ready_after)
    for signum in HANDLED:
        signal.signal(signum, on_signal)
    log.write("ready\n")

    exits = options.exit is not None and options.exit_index in (None, index)
    while not stopping:
        if (
            exits
            and time.monotonic() - started >= options.exit_after
            and (options.exit_when is None or options.exit_when.exists())
        ):
            log.write(f"exit {options.exit}\n")
            sys.exit(options.exit)
        time.sleep(0.01)
    log.write("stopped\n")


if __name__ == "__main__":
    main()
