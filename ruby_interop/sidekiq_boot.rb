# frozen_string_literal: true

# TEST STAND-IN for the interop tests (tests/interop/) -- NOT part of patient-sidekiq.
#
# Boot file for a real `sidekiq` server process:
#   REDIS_URL=redis://... sidekiq -r /abs/path/ruby_interop/sidekiq_boot.rb -q pyjobs -c 2
# It defines a worker that records every job it performs in the Redis list
# `interop:performed`, so a test can check what Ruby actually ran, and loads the
# patient_http-sidekiq stand-in (PatientHttp::Sidekiq::CallbackWorker, configured from
# INTEROP_* environment variables) and the recording callbacks (Interop::Recorder).

require "json"
require "sidekiq"
require_relative "patient_http_standin"
require_relative "interop_callbacks"

module Interop
  class RecordingJob
    include Sidekiq::Worker

    def perform(*args)
      record = JSON.generate({"jid" => jid, "args" => args, "class" => self.class.name})
      Sidekiq.redis { |c| c.rpush("interop:performed", record) }
    end
  end
end
