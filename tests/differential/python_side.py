"""What the Python side registers in code for the differential's secrets, preprocessors and
custom-encryption groups (``patient-sidekiq run -r tests.differential.python_side``).

Each is the Python twin of what the Ruby side registers: the oracle's example preprocessors
``hmac_sign`` and ``add_param`` (``oracle_boot.rb``), a lazily resolved secret, and the
custom encryption callables of ``custom_encryption_boot.rb``.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import patient_sidekiq
from patient_sidekiq.http_client import OutgoingRequest

HMAC_KEY = os.environ.get("ORACLE_HMAC_KEY") or "oracle-hmac-key"
# The same key the Ruby boot file derives: SHA-256 of a phrase both sides know.
CUSTOM_KEY = hashlib.sha256(b"differential custom encryption").digest()


@patient_sidekiq.register_preprocessor("hmac_sign")
def hmac_sign(request: OutgoingRequest) -> None:
    data = b" ".join([request.method.upper().encode(), request.url.encode(), request.body or b""])
    request.headers["x-signature"] = hmac.new(HMAC_KEY.encode(), data, hashlib.sha256).hexdigest()


@patient_sidekiq.register_preprocessor("add_param")
async def add_param(request: OutgoingRequest) -> None:  # async on purpose: both kinds work
    request.add_query_param("signed", "1")


@patient_sidekiq.register_secret("lazy")
def lazy(name: str) -> str:
    return "lazy-v"


if os.environ.get("DIFFERENTIAL_CUSTOM_ENCRYPTION"):

    @patient_sidekiq.register_encryption
    def encrypt(data: bytes) -> bytes:
        iv = os.urandom(12)
        return iv + AESGCM(CUSTOM_KEY).encrypt(iv, data, None)

    @patient_sidekiq.register_decryption
    def decrypt(data: bytes) -> bytes:
        return AESGCM(CUSTOM_KEY).decrypt(data[:12], data[12:], None)
