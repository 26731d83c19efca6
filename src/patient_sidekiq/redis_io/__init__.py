"""Talking to Redis: the bridge (one connection driven from trio, pipelined batches),
targets (URL or Sentinel) and the Lua scripts shipped beside the code that runs them."""
