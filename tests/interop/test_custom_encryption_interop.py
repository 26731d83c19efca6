"""Custom encryption hooks against a Ruby app using the same callables in the real gem.

``custom_encryption_peer.rb`` loads the gem with ``config.encryption``/``config.decryption``
blocks (AES-256-GCM, ``tests/differential/custom_encryption_boot.rb``); ours registers the
same algorithm (``tests/differential/custom_cipher.py``) as hooks. Envelopes made on either
side open on the other.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from patient_sidekiq.registry.encryption_hooks import CustomEncryptor, EncryptionHooks
from tests.differential import custom_cipher
from tests.support.oracle import oracle_env, require_oracle
from tests.support.programs import require_binary

pytestmark = pytest.mark.interop

PEER = Path(__file__).resolve().parent / "custom_encryption_peer.rb"
PAYLOADS: list[dict[str, Any]] = [
    {"status": 200, "body": "ok", "headers": {"b": "1"}},
    {"text": "é ✓ 日本語 😀 \u2028 </script>", "float": 1e20, "nested": [None, True, 1.5]},
]


def ruby(commands: list[dict[str, Any]], redis_url: str) -> list[Any]:
    root = require_oracle()
    env = oracle_env(root, {"ORACLE_REDIS_URL": redis_url, "REDIS_URL": redis_url})
    result = subprocess.run(
        [require_binary("ruby"), str(PEER)],
        input="".join(json.dumps(command) + "\n" for command in commands),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # split on newlines only: a raw U+2028 inside a JSON string is no line break
    return [json.loads(line) for line in result.stdout.split("\n") if line]


ENCRYPTOR = CustomEncryptor(
    EncryptionHooks(encrypt=custom_cipher.encrypt, decrypt=custom_cipher.decrypt)
)


def test_ruby_envelopes_open_in_python(redis_url: str) -> None:
    envelopes = ruby([{"encrypt": payload} for payload in PAYLOADS], redis_url)
    for payload, envelope in zip(PAYLOADS, envelopes, strict=True):
        assert list(envelope) == ["__encrypted__", "value"]
        assert json.loads(ENCRYPTOR.decrypt_text(envelope).text) == payload


def test_python_envelopes_open_in_ruby(redis_url: str) -> None:
    envelopes = [ENCRYPTOR.encrypt(payload) for payload in PAYLOADS]
    assert ruby([{"decrypt": envelope} for envelope in envelopes], redis_url) == PAYLOADS


def test_a_tampered_python_envelope_fails_in_ruby(redis_url: str) -> None:
    envelope = ENCRYPTOR.encrypt(PAYLOADS[0])
    value = envelope["value"]
    tampered = {**envelope, "value": value[:-6] + ("A" if value[-6] != "A" else "B") + value[-5:]}
    root = require_oracle()
    result = subprocess.run(
        [require_binary("ruby"), str(PEER)],
        input=json.dumps({"decrypt": tampered}) + "\n",
        capture_output=True,
        text=True,
        env=oracle_env(root, {"ORACLE_REDIS_URL": redis_url, "REDIS_URL": redis_url}),
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "CipherError" in result.stderr
