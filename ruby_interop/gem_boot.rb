# frozen_string_literal: true

# Boot file of the REAL-GEM Ruby side of the interop suite (tests/interop/), NOT part of
# patient-sidekiq and NOT a copy of the gem: it loads the real patient_http 1.3.0 +
# patient_http-sidekiq 1.0.1 inside the real Sidekiq 7.3.10, as built from ../shared/oracle
# into .oracle/ (its lib/oracle_boot.rb configures the gem from ORACLE_* variables).
#
#   ORACLE_ROOT=.oracle ORACLE_REDIS_URL=redis://... RUBYLIB=<oracle_env> \
#     ruby $ORACLE_VENDOR/sidekiq-7.3.10/bin/sidekiq -r ruby_interop/gem_boot.rb -q interop_callbacks
#
# On top of the oracle's boot file it loads our recording callbacks (interop_callbacks.rb:
# Interop::Recorder, Interop::PyRecorder), which the gem's own CallbackWorker calls, and one
# Sidekiq server middleware, Interop::Delivery, that notes how each CallbackWorker job's
# result travelled (stored in the payload store? encrypted? body payload encoding?) for the
# recorder, reading it through the gem's own ExternalStorage and decrypt. With
# ORACLE_PROCESSOR=0 the server only runs callbacks; without it, the gem's async processor
# runs too (RequestWorker jobs).

oracle_root = ENV.fetch("ORACLE_ROOT") { abort "gem_boot.rb: ORACLE_ROOT is not set" }
require File.join(oracle_root, "lib", "oracle_boot")
require_relative "interop_callbacks"

module Interop
  # Notes how a CallbackWorker job's result travelled, in Thread.current[:patient_http_delivery].
  class Delivery
    include ::Sidekiq::ServerMiddleware

    def call(_instance, job, _queue)
      if job["class"] == "PatientHttp::Sidekiq::CallbackWorker"
        Thread.current[:patient_http_delivery] = facts(job)
      end
      yield
    ensure
      Thread.current[:patient_http_delivery] = nil
    end

    private

    def facts(job)
      data = job["args"][0]
      facts = {"stored" => false, "encrypted" => false, "jid" => job["jid"]}
      storage = PatientHttp::Sidekiq.external_storage
      if storage.storage_ref?(data)
        facts["stored"] = true
        facts["store_key"] = data["$ref"]["key"]
        data = storage.fetch(data)
      end
      facts["encrypted"] = data.is_a?(Hash) && data["__encrypted__"] == true
      plain = PatientHttp::Sidekiq.decrypt(data)
      body = (plain["response"].is_a?(Hash) ? plain["response"] : plain)["body"]
      facts["body_encoding"] = body.is_a?(Hash) ? body["encoding"] : nil
      facts
    rescue => e
      {"error" => "#{e.class}: #{e.message}"}
    end
  end
end

Sidekiq.configure_server do |config|
  config.server_middleware { |chain| chain.add Interop::Delivery }
end
