"""The public API: application names at the top, machinery one level down, all importable."""

import re
from pathlib import Path

import patient_sidekiq
from patient_sidekiq import errors, wire, worker

README = Path(__file__).resolve().parents[1] / "README.md"

PINNED = {
    # enqueueing
    "Client", "AsyncClient", "configure", "get", "post", "put", "patch", "delete", "execute",
    "Request", "RequestTemplate", "SecretRef", "RedisStore", "FileStore", "S3Store", "SqlStore",
    # callbacks and what they receive
    "callback", "after_completion", "after_error", "on_retries_exhausted", "default_hooks",
    "Response", "CallbackArgs", "RequestError", "HttpError", "ClientError", "ServerError",
    "RedirectError", "TooManyRedirectsError", "RecursiveRedirectError",
    # the gem's registries
    "register_secret", "register_preprocessor", "register_encryption", "register_decryption",
    "OutgoingRequest",
    # configuration, errors, version
    "Config", "load_config", "PatientSidekiqError", "ConfigurationError", "__version__",
}  # fmt: skip


def test_exported_names_are_pinned_and_documented() -> None:
    assert set(patient_sidekiq.__all__) == PINNED
    readme = README.read_text(encoding="utf-8")
    for name in PINNED:
        assert hasattr(patient_sidekiq, name), name
        assert re.search(rf"`{re.escape(name)}`", readme), f"{name} is not in the README"


def test_the_machinery_is_one_level_down() -> None:
    for module in (worker, wire):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
    assert worker.Runner.__module__ == "patient_sidekiq.worker.runner"
    assert not set(worker.__all__) & {"Client", "get", "post"}  # the app's names stay on top


def test_importing_the_package_loads_only_what_is_asked_for() -> None:
    import subprocess
    import sys

    code = (
        "import sys, patient_sidekiq; "
        "print(sorted(m for m in sys.modules if m.startswith('patient_sidekiq')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "['patient_sidekiq', 'patient_sidekiq._version']"


def test_every_exception_descends_from_the_package_root() -> None:
    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, errors.PatientSidekiqError), value
    for name in PINNED:
        value = getattr(patient_sidekiq, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, errors.PatientSidekiqError), name


def test_the_python_api_reads_like_the_gems() -> None:
    # What a Python app writes: module-level verbs, a callback decorator, hooks.
    for verb in ("get", "post", "put", "patch", "delete", "execute", "configure"):
        assert callable(getattr(patient_sidekiq, verb)), verb
    assert patient_sidekiq.after_completion.__self__ is patient_sidekiq.default_hooks
