"""What the Python side registers in code for the differential's secrets, preprocessors and
custom-encryption groups (``patient-sidekiq run -r tests.differential.python_side``).

Each is the Python twin of what the Ruby side registers: the oracle's example preprocessors
``hmac_sign`` and ``add_param`` (``oracle_boot.rb``), a lazily resolved secret, and (with
``DIFFERENTIAL_CUSTOM_ENCRYPTION`` set) the custom encryption of ``custom_encryption_boot.rb``,
from ``custom_cipher.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import patient_sidekiq
from patient_sidekiq.http.settings import OutgoingRequest
from tests.differential import custom_cipher

HMAC_KEY = os.environ.get("ORACLE_HMAC_KEY") or "oracle-hmac-key"


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
    patient_sidekiq.register_encryption(custom_cipher.encrypt)
    patient_sidekiq.register_decryption(custom_cipher.decrypt)
