"""Secrets, preprocessors and encryption hooks registered by an application."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from patient_sidekiq.errors import (
    ConfigurationError,
    MalformedMessageError,
    MessageAuthenticationError,
)
from patient_sidekiq.http.settings import OutgoingRequest
from patient_sidekiq.registry.encryption_hooks import CustomEncryptor, EncryptionHooks
from patient_sidekiq.registry.registrations import (
    PreprocessorRegistry,
    PreprocessorSpec,
    SecretRegistry,
    SecretSpec,
    build_preprocessors,
    build_secrets,
)
from patient_sidekiq.wire.encryption import MessageEncryptor


def xor(data: bytes) -> bytes:
    return bytes(byte ^ 0x5A for byte in data)


# --- secrets ---


def test_secret_registry_value_callable_and_decorator() -> None:
    registry = SecretRegistry()
    registry.register("plain", "v")

    @registry.register("computed")
    def computed(name: str) -> str:
        return name.upper()

    assert computed("x") == "X"  # the decorator gives the function back
    registry.register("plain", "replaced")  # as the gem: registering again replaces
    values = registry.snapshot()
    assert values["plain"] == "replaced"
    assert values["computed"] is computed
    assert "replaced" not in repr(registry)
    with pytest.raises(ConfigurationError, match="non-empty string"):
        registry.register("", "v")
    with pytest.raises(ConfigurationError, match="a string or a callable"):
        registry.register("n", 42)  # type: ignore[call-overload]


def test_configured_secrets_read_the_environment_and_files_at_each_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_TOKEN", "one")
    secret_file = tmp_path / "token"
    secret_file.write_text("from-file\n")
    specs = [
        SecretSpec("env", "env", "APP_TOKEN"),
        SecretSpec("file", "file", str(secret_file)),
        SecretSpec("inline", "value", "literal"),
    ]
    values = build_secrets(specs, SecretRegistry())
    env, file = values["env"], values["file"]
    assert callable(env)
    assert callable(file)
    assert (env("env"), file("file"), values["inline"]) == ("one", "from-file", "literal")
    monkeypatch.setenv("APP_TOKEN", "two")  # rotated: the next request sees it
    secret_file.write_text("rotated-and-longer")
    assert (env("env"), file("file")) == ("two", "rotated-and-longer")


def test_missing_sources_and_double_registrations_stop_the_start(tmp_path: Path) -> None:
    registry = SecretRegistry()
    registry.register("both", "code")
    specs = [
        SecretSpec("both", "env", "HOME"),
        SecretSpec("unset", "env", "PATIENT_SIDEKIQ_TEST_UNSET_VARIABLE"),
        SecretSpec("gone", "file", str(tmp_path / "absent")),
    ]
    with pytest.raises(ConfigurationError) as caught:
        build_secrets(specs, registry)
    lines = str(caught.value).splitlines()
    assert lines[0] == "secret 'both' is registered in code and in the configuration"
    assert lines[1] == (
        "secret 'unset': environment variable PATIENT_SIDEKIQ_TEST_UNSET_VARIABLE is not set"
    )
    assert lines[2].startswith(f"secret 'gone': cannot read {tmp_path / 'absent'}")


# --- preprocessors ---


def test_preprocessor_registry_checks_what_it_is_given() -> None:
    registry = PreprocessorRegistry()

    @registry.register("stamp")
    def stamp(request: OutgoingRequest) -> None:
        request.headers["x-stamp"] = "1"

    registry.register("async", _async_preprocessor)
    assert registry.names() == ["async", "stamp"]
    with pytest.raises(ConfigurationError, match="must accept one argument"):
        registry.register("none", lambda: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigurationError, match="must be callable"):
        registry.register("text", "not callable")  # type: ignore[call-overload]


async def _async_preprocessor(request: OutgoingRequest) -> None:
    request.headers["x-async"] = "1"


def test_built_in_aws_sigv4_from_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    spec = PreprocessorSpec("sign", "aws_sigv4", (("region", "us-east-1"), ("service", "s3")))
    signer = build_preprocessors([spec], PreprocessorRegistry())["sign"]
    request = OutgoingRequest("get", "https://bucket.example.com/key", {"x-request-id": "r"}, None)
    signer(request)
    assert request.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/us-east-1/s3/aws4_request" in request.headers["authorization"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (PreprocessorSpec("p", "gpg_sign"), "unknown built-in 'gpg_sign'"),
        (PreprocessorSpec("p", "aws_sigv4"), "aws_sigv4 needs a service"),
        (
            PreprocessorSpec("p", "aws_sigv4", (("service", "s3"), ("colour", "red"))),
            "unknown aws_sigv4 options colour",
        ),
    ],
)
def test_bad_built_ins_are_refused(spec: PreprocessorSpec, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build_preprocessors([spec], PreprocessorRegistry())


# --- encryption hooks ---


def test_custom_envelope_is_the_gems() -> None:
    encryptor = CustomEncryptor(EncryptionHooks(encrypt=xor, decrypt=xor))
    envelope = encryptor.encrypt({"a": "é", "n": 1})
    assert list(envelope) == ["__encrypted__", "value"]
    assert envelope["__encrypted__"] is True
    # strict base64 of the hook's bytes, the hook given the JSON text as the gem writes it
    assert xor(base64.b64decode(envelope["value"], validate=True)) == '{"a":"é","n":1}'.encode()
    opened = encryptor.decrypt_text(envelope)
    assert json.loads(opened.text) == {"a": "é", "n": 1}
    assert (opened.digest, opened.form) == (None, None)


def test_a_missing_direction_falls_back_to_the_key_or_to_plain() -> None:
    keyed = MessageEncryptor("k" * 32)
    only_decrypt = CustomEncryptor(EncryptionHooks(decrypt=xor), keyed)
    envelope = only_decrypt.encrypt({"a": 1})  # written with the key
    assert keyed.decrypt(envelope) == {"a": 1}
    plain = CustomEncryptor(EncryptionHooks(decrypt=xor))
    assert plain.encrypt({"a": 1}) == {"a": 1}  # the gem with only a decryption block
    only_encrypt = CustomEncryptor(EncryptionHooks(encrypt=xor))
    with pytest.raises(MalformedMessageError, match="no decryption hook"):
        only_encrypt.decrypt_text(only_encrypt.encrypt({"a": 1}))


def test_hooks_returning_text_and_lenient_base64() -> None:
    encryptor = CustomEncryptor(
        EncryptionHooks(encrypt=lambda data: data.decode()[::-1], decrypt=lambda data: data[::-1])
    )
    envelope = encryptor.encrypt({"a": 1})
    assert envelope["value"] == base64.b64encode(b'}1:"a"{').decode()
    # Ruby's unpack1("m") skips line breaks (Base64.encode64 writes them)
    wrapped = {"__encrypted__": True, "value": envelope["value"][:4] + "\n" + envelope["value"][4:]}
    assert encryptor.decrypt_text(wrapped).text == '{"a":1}'
    with pytest.raises(MalformedMessageError, match="no string 'value'"):
        encryptor.decrypt_text({"__encrypted__": True, "value": None})


def test_a_payload_the_decryption_hook_refuses_is_an_envelope_error() -> None:
    def refuse(data: bytes) -> bytes:
        raise KeyError("tampered")

    encryptor = CustomEncryptor(EncryptionHooks(encrypt=xor, decrypt=refuse))
    with pytest.raises(MessageAuthenticationError, match="refused the payload: KeyError"):
        encryptor.decrypt_text(encryptor.encrypt({"a": 1}))
    # filed under a Ruby class name, as every envelope error
    assert MessageAuthenticationError.ruby_class_name == "ArgumentError"
