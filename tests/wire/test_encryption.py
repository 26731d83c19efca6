"""Envelopes against vectors produced by Ruby's ActiveSupport::MessageEncryptor (golden.json)."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patient_sidekiq.errors import (
    ConfigurationError,
    EncryptionError,
    MalformedMessageError,
    MessageAuthenticationError,
    PlaintextFormatError,
)
from patient_sidekiq.wire.encryption import (
    Decrypted,
    Digest,
    MessageEncryptor,
    PlaintextForm,
    derive_key,
    is_envelope,
    marshal_dump_string,
)
from tests.support.golden import load_golden

GOLDEN: dict[str, Any] = load_golden()
ENC: dict[str, Any] = GOLDEN["encryption"]
FIXED = ENC["deterministic_vector(fixed IV 000102..0b)"]
JSON_FORM = ENC["json_serialized_plaintext_vector(what AS>=7.1 :json serializer would emit)"]
FIXED_IV = bytes(range(12))
SECRET = "oracle-secret-key"
OLD = "oracle-old-key"

# Key derivation is deliberately slow; these instances cache their keys across tests.
CURRENT = MessageEncryptor(SECRET)
ROTATING = MessageEncryptor([SECRET, OLD])
SHA1_ONLY = MessageEncryptor(SECRET, accepted_digests=(Digest.SHA1,))
COMBINATIONS = {
    (digest, form): MessageEncryptor(SECRET, digest=digest, form=form)
    for digest in Digest
    for form in PlaintextForm
}


def envelope(value: object) -> dict[str, Any]:
    return {"__encrypted__": True, "value": value}


def envelope_of_message(message: str) -> dict[str, Any]:
    return envelope(base64.b64encode(message.encode()).decode())


def message_parts(env: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(part) for part in base64.b64decode(env["value"]).split(b"--")]


def seal(plaintext: bytes, *, tag_bytes: int = 16) -> dict[str, Any]:
    """Encrypt raw plaintext bytes the way Ruby would, bypassing the serializers."""
    sealed = AESGCM(derive_key(SECRET, Digest.SHA1)).encrypt(FIXED_IV, plaintext, None)
    parts = (sealed[:-16], FIXED_IV, sealed[-16:][:tag_bytes])
    return envelope_of_message("--".join(base64.b64encode(part).decode() for part in parts))


# --- key derivation and plaintext -------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "digest", "key_hex"),
    [
        (SECRET, Digest.SHA1, ENC["kdf"]["derived_key_hex"]),
        (
            SECRET,
            Digest.SHA256,
            ENC["kdf"]["for_reference_pbkdf2_sha256_hex(Rails>=7.0 load_defaults only)"],
        ),
        (OLD, Digest.SHA1, ENC["kdf"]["derived_key_hex_for_oracle-old-key"]),
    ],
)
def test_derived_keys_match_activesupport(password: str, digest: Digest, key_hex: str) -> None:
    assert derive_key(password, digest).hex() == key_hex


def test_marshal_plaintext_matches_ruby() -> None:
    assert marshal_dump_string(ENC["sample_json"]).hex() == ENC["marshal_plaintext_hex"]


# --- golden vectors ---------------------------------------------------------------------


def test_fixed_iv_reproduces_ruby_byte_for_byte() -> None:
    env = CURRENT.encrypt_text(ENC["sample_json"], iv=FIXED_IV)
    assert env == FIXED["encrypted_hash"]
    assert base64.b64decode(env["value"]).decode() == FIXED["message"]
    assert message_parts(env) == [
        bytes.fromhex(FIXED["ciphertext_hex"]),
        FIXED_IV,
        bytes.fromhex(FIXED["auth_tag_hex"]),
    ]
    assert CURRENT.encrypt(ENC["sample_data"], iv=FIXED_IV) == env


def test_fixed_iv_vector_decrypts() -> None:
    assert CURRENT.decrypt(FIXED["encrypted_hash"]) == FIXED["ruby_decrypts_to"]
    assert CURRENT.decrypt_text(FIXED["encrypted_hash"]) == Decrypted(
        ENC["sample_json"], key_index=0, digest=Digest.SHA1, form=PlaintextForm.MARSHAL
    )


def test_json_form_vector_decrypts_and_is_reproduced() -> None:
    result = CURRENT.decrypt_text(JSON_FORM["encrypted_hash"])
    assert result == Decrypted(
        ENC["sample_json"], key_index=0, digest=Digest.SHA1, form=PlaintextForm.JSON
    )
    json_form = COMBINATIONS[(Digest.SHA1, PlaintextForm.JSON)]
    assert json_form.encrypt_text(ENC["sample_json"], iv=FIXED_IV) == JSON_FORM["encrypted_hash"]


def test_json_form_plaintext_is_an_activesupport_json_string_literal() -> None:
    env = COMBINATIONS[(Digest.SHA1, PlaintextForm.JSON)].encrypt_text('{"a":"<ü>&\u2028"}')
    key = derive_key(SECRET, Digest.SHA1)
    ciphertext, iv, tag = message_parts(env)
    plaintext = AESGCM(key).decrypt(iv, ciphertext + tag, None)
    assert plaintext == '"{\\"a\\":\\"\\u003cü\\u003e\\u0026\\u2028\\"}"'.encode()
    assert CURRENT.decrypt(env) == {"a": "<ü>&\u2028"}


def test_random_iv_output_decrypts() -> None:
    env = ENC["random_iv_output"]["encrypted_hash"]
    assert base64.b64decode(env["value"]).decode() == ENC["random_iv_output"]["message"]
    assert CURRENT.decrypt(env) == ENC["sample_data"]


def test_rotation_finds_the_old_key() -> None:
    env = ENC["rotation"]["encrypted_hash"]
    assert (
        ROTATING.decrypt(env) == ENC["rotation"]["decrypt_with_[oracle-secret-key,oracle-old-key]"]
    )
    assert ROTATING.decrypt_text(env).key_index == 1
    with pytest.raises(MessageAuthenticationError, match=r"tried 1 keys x 2 digests"):
        CURRENT.decrypt(env)


def test_rotation_encrypts_with_the_first_key() -> None:
    env = ROTATING.encrypt({"k": 1})
    assert CURRENT.decrypt(env) == {"k": 1}


ENCRYPTED_JOBS = {name: job for name, job in GOLDEN["jobs"].items() if "encrypted" in name}


@pytest.mark.parametrize("name", sorted(ENCRYPTED_JOBS))
def test_golden_jobs_decrypt(name: str) -> None:
    job = ENCRYPTED_JOBS[name]
    checked = 0
    arg = job["job"]["args"][0]
    if is_envelope(arg):
        assert ROTATING.decrypt(arg) == job["decrypted"]
        checked += 1
    if "stored_value" in job:
        stored = json.loads(job["stored_value"])
        if is_envelope(stored):
            result = ROTATING.decrypt_text(stored)
            assert (result.key_index, result.digest, result.form) == (
                0,
                Digest.SHA1,
                PlaintextForm.MARSHAL,
            )
            data = ROTATING.decrypt(stored)
            assert data == job.get("fetched_and_decrypted", data)
            checked += 1
    assert checked or "not_encrypted" in name


# --- failures ---------------------------------------------------------------------------


def test_wrong_key_is_an_authentication_error() -> None:
    wrong = MessageEncryptor("not-the-key")
    with pytest.raises(
        MessageAuthenticationError,
        match=r"no configured key verifies this message \(tried 1 keys x 2 digests\): wrong key",
    ):
        wrong.decrypt(FIXED["encrypted_hash"])


@pytest.mark.parametrize("part", [0, 1, 2])
def test_flipped_bit_is_an_authentication_error(part: int) -> None:
    parts = message_parts(FIXED["encrypted_hash"])
    parts[part] = bytes([parts[part][0] ^ 0x01]) + parts[part][1:]
    env = envelope_of_message("--".join(base64.b64encode(p).decode() for p in parts))
    with pytest.raises(MessageAuthenticationError):
        ROTATING.decrypt(env)


def test_every_truncation_of_the_value_is_malformed() -> None:
    value = FIXED["encrypted_hash"]["value"].rstrip("=")
    for length in range(len(value)):
        with pytest.raises(MalformedMessageError):
            CURRENT.decrypt(envelope(value[:length]))


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (FIXED["message"].rsplit("--", 1)[0], r"has 2 '--' parts, expected 3 \(truncated\?\)"),
        (FIXED["message"] + "--AAAA", r"has 4 '--' parts"),
        (FIXED["message"].replace("AAECAwQFBgcICQoL", "AAECAwQ="), "IV is 5 bytes, expected 12"),
        (FIXED["message"][:-12] + "==", r"auth tag is not valid base64"),
        (FIXED["message"][:-12], r"auth tag is 9 bytes, expected 16 \(truncated\?\)"),
        (FIXED["message"].replace("--", "---", 1), "IV is not valid base64"),
        ("!" + FIXED["message"], "ciphertext is not valid base64"),
        (FIXED["message"].replace("AAECAwQFBgcICQoL", "AAECAwR="), "IV is not valid base64"),
    ],
)
def test_malformed_messages_name_the_problem(message: str, problem: str) -> None:
    with pytest.raises(MalformedMessageError, match=problem):
        CURRENT.decrypt(envelope_of_message(message))


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        (envelope("not base64 at all!"), "envelope value is not valid base64"),
        (envelope("wö"), "envelope value is not valid base64"),
        (envelope(None), "value is NoneType, not a string"),
        ({"__encrypted__": True}, "value is NoneType, not a string"),
        (envelope(["a"]), "value is list"),
        ({"value": FIXED["encrypted_hash"]["value"]}, "not an encrypted envelope"),
        (envelope(base64.b64encode(b"\xff--\xfe--\xfd").decode()), "not an ASCII message"),
    ],
)
def test_malformed_envelopes_name_the_problem(env: dict[str, Any], problem: str) -> None:
    with pytest.raises(MalformedMessageError, match=problem):
        CURRENT.decrypt(env)


def test_outer_base64_may_be_wrapped_like_ruby_encode64() -> None:
    value = FIXED["encrypted_hash"]["value"]
    wrapped = "\n".join(value[i : i + 60] for i in range(0, len(value), 60)) + "\n"
    assert CURRENT.decrypt(envelope(wrapped)) == ENC["sample_data"]


@pytest.mark.parametrize(
    ("plaintext", "problem"),
    [
        (b"\x04\x08[\x00", "expected a String"),
        (b"not json", "neither a Marshal string nor JSON"),
        (b"\xff\xfe", "neither a Marshal string nor JSON"),
        (b'{"a":1}', "JSON plaintext is dict, expected a string literal"),
        (b'"\\ud800"', "not valid Unicode"),
    ],
)
def test_verified_plaintext_in_neither_form(plaintext: bytes, problem: str) -> None:
    with pytest.raises(PlaintextFormatError, match=problem):
        CURRENT.decrypt_text(seal(plaintext))


@pytest.mark.parametrize(
    ("text", "problem"), [("[1]", "is list, expected an object"), ("{", "not JSON")]
)
def test_decrypt_wants_a_json_object(text: str, problem: str) -> None:
    env = CURRENT.encrypt_text(text)
    assert CURRENT.decrypt_text(env).text == text
    with pytest.raises(PlaintextFormatError, match=problem):
        CURRENT.decrypt(env)


def test_sha256_json_form_round_trips_and_sha1_only_refuses_it() -> None:
    sha256_json = COMBINATIONS[(Digest.SHA256, PlaintextForm.JSON)]
    env = sha256_json.encrypt(ENC["sample_data"])
    result = CURRENT.decrypt_text(env)
    assert (result.digest, result.form) == (Digest.SHA256, PlaintextForm.JSON)
    assert sha256_json.decrypt(env) == ENC["sample_data"]
    with pytest.raises(MessageAuthenticationError, match=r"tried 1 keys x 1 digests"):
        SHA1_ONLY.decrypt(env)


def test_random_ivs_differ() -> None:
    first, second = (message_parts(CURRENT.encrypt({"a": 1}))[1] for _ in range(2))
    assert len(first) == 12
    assert first != second


def test_injected_iv_must_be_12_bytes() -> None:
    with pytest.raises(ValueError, match="IV is 16 bytes"):
        CURRENT.encrypt({}, iv=bytes(16))


# --- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize("keys", ["", [], ["", ""]])
def test_needs_a_non_empty_key(keys: str | list[str]) -> None:
    with pytest.raises(ConfigurationError, match="no encryption key"):
        MessageEncryptor(keys)


def test_empty_keys_are_dropped_like_ruby() -> None:
    encryptor = MessageEncryptor(["", SECRET])
    assert encryptor.decrypt_text(FIXED["encrypted_hash"]).key_index == 0


def test_needs_an_accepted_digest() -> None:
    with pytest.raises(ConfigurationError, match="accepted_digests"):
        MessageEncryptor(SECRET, accepted_digests=())


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"__encrypted__": True, "value": "x"}, True),
        ({"__encrypted__": 0}, True),  # truthy in Ruby
        ({"__encrypted__": ""}, True),
        ({"__encrypted__": False}, False),
        ({"__encrypted__": None}, False),
        ({"http_method": "get"}, False),
        ([{"__encrypted__": True}], False),
        ("__encrypted__", False),
        (None, False),
    ],
)
def test_is_envelope_follows_ruby_truthiness(data: object, expected: bool) -> None:
    assert is_envelope(data) is expected


# --- properties -------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)
JSON_OBJECTS = st.dictionaries(st.text(), JSON_VALUES, max_size=6)
PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(data=JSON_OBJECTS, combination=st.sampled_from(sorted(COMBINATIONS, key=str)))
def test_round_trip_in_every_combination(
    data: dict[str, Any], combination: tuple[Digest, PlaintextForm]
) -> None:
    env = COMBINATIONS[combination].encrypt(data)
    assert CURRENT.decrypt(env) == data
    result = CURRENT.decrypt_text(env)
    assert (result.digest, result.form) == combination


def _only_encryption_errors(env: Any) -> None:
    with contextlib.suppress(EncryptionError):
        ROTATING.decrypt(env)


@PROPERTY_SETTINGS
@given(st.text() | st.binary().map(lambda raw: base64.b64encode(raw).decode()))
def test_arbitrary_values_raise_only_encryption_errors(value: str) -> None:
    _only_encryption_errors(envelope(value))


@PROPERTY_SETTINGS
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=4))
def test_arbitrary_messages_raise_only_encryption_errors(parts: list[bytes]) -> None:
    message = "--".join(base64.b64encode(part).decode() for part in parts)
    _only_encryption_errors(envelope_of_message(message))


@PROPERTY_SETTINGS
@given(
    st.dictionaries(
        st.sampled_from(["__encrypted__", "value"]) | st.text(), JSON_VALUES, max_size=4
    )
)
def test_arbitrary_envelopes_raise_only_encryption_errors(env: dict[str, Any]) -> None:
    _only_encryption_errors({"__encrypted__": True, **env})
