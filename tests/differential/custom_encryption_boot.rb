# frozen_string_literal: true

# The oracle's boot file plus custom payload encryption, registered through the gem's public
# `encryption` / `decryption` blocks: AES-256-GCM, the 12-byte IV before the ciphertext and
# its tag. tests/differential/python_side.py registers the same callables for our worker.

require "openssl"
require "digest"
require File.join(ENV.fetch("ORACLE_ROOT"), "lib", "oracle_boot.rb")

module DifferentialCustomEncryption
  KEY = Digest::SHA256.digest("differential custom encryption")

  def self.encrypt(json)
    cipher = OpenSSL::Cipher.new("aes-256-gcm").encrypt
    cipher.key = KEY
    iv = cipher.random_iv
    cipher.auth_data = ""
    sealed = cipher.update(json) + cipher.final
    iv + sealed + cipher.auth_tag
  end

  def self.decrypt(data)
    cipher = OpenSSL::Cipher.new("aes-256-gcm").decrypt
    cipher.key = KEY
    cipher.iv = data.byteslice(0, 12)
    cipher.auth_tag = data.byteslice(data.bytesize - 16, 16)
    cipher.auth_data = ""
    cipher.update(data.byteslice(12, data.bytesize - 28)) + cipher.final
  end
end

# `configure` would start from a fresh Configuration: add to the one oracle_boot.rb built.
config = PatientHttp::Sidekiq.configuration
config.encryption { |json| DifferentialCustomEncryption.encrypt(json) }
config.decryption { |data| DifferentialCustomEncryption.decrypt(data) }
