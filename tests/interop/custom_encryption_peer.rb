# frozen_string_literal: true

# The real gem with the differential's custom encryption blocks (custom_encryption_boot.rb):
# reads {"encrypt": hash} or {"decrypt": envelope} lines, answers one JSON line each, the
# result of PatientHttp::Sidekiq.encrypt / .decrypt (the gem's own Encryptor).

require "json"
ENV["ORACLE_PROCESSOR"] = "0"
require File.expand_path("../differential/custom_encryption_boot.rb", __dir__)

$stdout.sync = true
$stdin.each_line do |line|
  command = JSON.parse(line)
  result =
    if command.key?("encrypt")
      PatientHttp::Sidekiq.encrypt(command["encrypt"])
    else
      PatientHttp::Sidekiq.decrypt(command["decrypt"])
    end
  puts JSON.generate(result)
end
