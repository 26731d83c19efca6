"""Lua scripts shipped with the package (``*.lua`` beside the module that runs them), run
through the bridge.

Each script runs by EVALSHA; on ``NOSCRIPT`` (a fresh or flushed Redis) it is loaded and run
once more. The script had not run at all in that case, so nothing happens twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

from patient_sidekiq.errors import RedisCommandError
from patient_sidekiq.redis_io.redis_bridge import Arg, RedisBridge

__all__ = ["LuaScript"]


class LuaScript:
    """One Lua file of a package of ours, identified by the SHA1 Redis gives it."""

    def __init__(self, filename: str, package: str) -> None:
        """``package``: where the file lies, the ``__package__`` of the module running it."""
        self.source = resources.files(package).joinpath(filename).read_text("utf-8")
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()  # what SCRIPT LOAD answers

    async def run(
        self,
        bridge: RedisBridge,
        script_keys: Sequence[Arg],
        args: Sequence[Arg],
        *,
        shielded: bool = False,
    ) -> Any:
        """Run the script with ``script_keys`` and ``args``; return its raw reply.

        ``shielded``: no cancellation interrupts the waits for replies (see
        :meth:`RedisBridge.execute`).
        """
        try:
            return await bridge.evalsha(self.sha, script_keys, args, shielded=shielded)
        except RedisCommandError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await bridge.execute("SCRIPT", "LOAD", self.source, shielded=shielded)
        return await bridge.evalsha(self.sha, script_keys, args, shielded=shielded)
