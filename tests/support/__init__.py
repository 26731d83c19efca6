"""What the tests and the benchmarks share: servers, waiting helpers, oracle, strategies.

* :mod:`tests.support.programs`: free loopback ports, programs scripts/setup installs;
* :mod:`tests.support.redis`: a private redis-server (the tests' fixtures and the benchmarks);
* :mod:`tests.support.http`: the hypercorn test app and TLS certificates;
* :mod:`tests.support.s3`, :mod:`tests.support.postgres`: moto and PostgreSQL servers with
  their fixtures (``pytest_plugins = ["tests.support.s3"]`` in the modules that use them);
* :mod:`tests.support.waiting`: ``eventually`` (trio) and ``wait_for`` (blocking) polls;
* :mod:`tests.support.golden`: the byte-exact vectors of the real Ruby classes;
* :mod:`tests.support.oracle`: where the real gem is;
* :mod:`tests.support.strategies`: Hypothesis strategies;
* processes the tests start: ``launcher_main``, ``request_worker_main``, ``supervised_child``
  (``python -m tests.support.…``) and ``cli_callbacks`` (``-r tests.support.cli_callbacks``).

Fixtures live in the ``conftest.py`` files; nothing here is collected as a test.
"""
