"""Our encryption and JSON against the real ActiveSupport::MessageEncryptor and Ruby JSON."""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.ruby.ruby_marshal import marshal_dump_string
from patient_sidekiq.wire.encryption import Digest, MessageEncryptor
from tests.interop.conftest import run_ruby
from tests.support.strategies import json_values

pytestmark = pytest.mark.interop

# Configured the way the gem's `encryption_key=` configures ActiveSupport (wire spec §5).
RUBY_ENCRYPTOR = r"""
require "json"
require "active_support"
require "active_support/key_generator"
require "active_support/message_encryptor"
# ActiveSupport 6.1 (Debian's) always derives with SHA1; the SHA256 branch derives the key
# as ActiveSupport >= 7.0 does when a Rails app's load_defaults selects SHA256.
def encryptor(keys, digest)
  gen = lambda do |k|
    if digest == "sha256"
      OpenSSL::KDF.pbkdf2_hmac(k, salt: "patient_http_payload_encryption", iterations: 65536,
        length: ActiveSupport::MessageEncryptor.key_len, hash: "sha256")
    else
      ActiveSupport::KeyGenerator.new(k).generate_key("patient_http_payload_encryption",
        ActiveSupport::MessageEncryptor.key_len)
    end
  end
  enc = ActiveSupport::MessageEncryptor.new(gen.call(keys.first), cipher: "aes-256-gcm")
  keys[1..].each { |k| enc.rotate(gen.call(k)) }
  enc
end
"""

KEYS = ["interop-new-key", "interop-old-key"]


def test_ruby_decrypts_what_python_encrypts() -> None:
    texts = [rubyjson.dumps({"n": i, "s": "é" * i, "big": "x" * (i * 997)}) for i in range(6)]
    envelopes = [MessageEncryptor(KEYS).encrypt_text(text) for text in texts]
    old_key_envelope = MessageEncryptor(KEYS[1:]).encrypt_text(texts[0])
    program = (
        RUBY_ENCRYPTOR
        + r"""
input = JSON.parse($stdin.read)
enc = encryptor(input["keys"], "sha1")
out = input["envelopes"].map { |e| enc.decrypt_and_verify(e["value"].unpack1("m")) }
puts JSON.generate(out)
"""
    )
    decrypted = run_ruby(program, {"keys": KEYS, "envelopes": [*envelopes, old_key_envelope]})
    assert decrypted == [*texts, texts[0]]


def test_python_decrypts_what_ruby_encrypts_with_either_digest() -> None:
    program = (
        RUBY_ENCRYPTOR
        + r"""
input = JSON.parse($stdin.read)
out = input["texts"].flat_map do |t|
  keys = input["keys"]
  [["sha1", keys], ["sha256", keys], ["sha1", keys[1..]]].map do |digest, keys|
    {"__encrypted__" => true, "value" => [encryptor(keys, digest).encrypt_and_sign(t)].pack("m0")}
  end
end
puts JSON.generate(out)
"""
    )
    texts = [rubyjson.dumps({"k": "v"}), rubyjson.dumps({"u": "日本", "f": 1.5})]
    envelopes = run_ruby(program, {"keys": KEYS, "texts": texts})
    decryptor = MessageEncryptor(KEYS)
    results = [decryptor.decrypt_text(envelope) for envelope in envelopes]
    assert [r.text for r in results] == [t for t in texts for _ in range(3)]
    assert [(r.digest, r.key_index) for r in results[:3]] == [
        (Digest.SHA1, 0),
        (Digest.SHA256, 0),
        (Digest.SHA1, 1),
    ]


@settings(max_examples=1, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(json_values, min_size=200, max_size=200))
def test_json_generate_and_marshal_match_ruby(values: list[object]) -> None:
    strings = [rubyjson.dumps(v) for v in values]
    program = r"""
require "json"
input = JSON.parse($stdin.read)
out = input.map { |v| [JSON.generate(v), [Marshal.dump(JSON.generate(v))].pack("m0")] }
puts JSON.generate(out)
"""
    ruby = run_ruby(program, values)
    assert [generated for generated, _ in ruby] == strings
    assert [m for _, m in ruby] == [
        base64.b64encode(marshal_dump_string(s)).decode() for s in strings
    ]
