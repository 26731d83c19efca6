"""Every Ruby class name we can write onto the wire resolves in a Ruby app with the gem loaded.

A Ruby callback reads ``error.error_class`` (``const_get`` of the ``class_name`` we wrote) and
Sidekiq's Web UI shows ``error_class``: a name that does not resolve raises ``NameError`` in
the Ruby app. This loads the real gems (``oracle_boot.rb``) and resolves each name the way
the gem's ``ClassHelper`` does.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess

import pytest

import patient_sidekiq
from patient_sidekiq.errors import PatientSidekiqError
from patient_sidekiq.http.ruby_errors import RUBY_CLASS_NAMES
from tests.support.oracle import oracle_env, require_oracle
from tests.support.programs import require_binary

pytestmark = pytest.mark.interop

RESOLVE = """
require "json"
names = JSON.parse($stdin.read)
out = names.to_h do |name|
  klass = name.split("::").reduce(Object) { |mod, part| mod.const_get(part) }
  [name, klass.is_a?(Class) && klass <= Exception ? "ok" : "not an exception class"]
rescue NameError => e
  [name, e.message.lines.first.strip]
end
puts JSON.generate(out)
"""


def _our_ruby_names() -> set[str]:
    """``ruby_class_name`` of every exception class in the package, plus ruby_errors'."""
    for module in pkgutil.walk_packages(patient_sidekiq.__path__, "patient_sidekiq."):
        if module.name.endswith("__main__"):
            continue
        importlib.import_module(module.name)
    names = set(RUBY_CLASS_NAMES)
    pending = [PatientSidekiqError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.ruby_class_name:
            names.add(cls.ruby_class_name)
    return names


def test_every_class_name_we_write_is_a_ruby_exception_class() -> None:
    """Resolve each name in real Ruby with patient_http and patient_http-sidekiq loaded."""
    root = require_oracle()
    names = sorted(_our_ruby_names())
    assert "Async::TimeoutError" in names
    result = subprocess.run(
        [require_binary("ruby"), "-r", str(root / "lib" / "oracle_boot.rb"), "-e", RESOLVE],
        input=json.dumps(names),
        capture_output=True,
        text=True,
        env={**oracle_env(root), "ORACLE_PROCESSOR": "0"},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout.strip().splitlines()[-1])
    unresolved = {name: why for name, why in resolved.items() if why != "ok"}
    assert not unresolved, unresolved
