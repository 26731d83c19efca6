"""The custom payload encryption of the differential's Ruby app, in Python.

AES-256-GCM under SHA-256("differential custom encryption"), the 12-byte IV before the
ciphertext and its tag: the blocks ``custom_encryption_boot.rb`` gives the gem's
``config.encryption`` / ``config.decryption``. Pure functions, so tests can use them without
registering anything.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY = hashlib.sha256(b"differential custom encryption").digest()


def encrypt(data: bytes) -> bytes:
    iv = os.urandom(12)
    return iv + AESGCM(KEY).encrypt(iv, data, None)


def decrypt(data: bytes) -> bytes:
    return AESGCM(KEY).decrypt(data[:12], data[12:], None)
