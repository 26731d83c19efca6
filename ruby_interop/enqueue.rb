# frozen_string_literal: true

# TEST STAND-IN for the interop tests (tests/interop/) -- NOT part of patient-sidekiq.
#
# Enqueues RequestWorker jobs as an app using patient_http-sidekiq would, with the stand-in
# in patient_http_standin.rb. Reads one JSON object on stdin:
#
#   {"redis_url": "redis://...", "queue": "patient_http",
#    "encryption_keys": ["new", "old"], "payload_threshold": 1000,
#    "requests": [{"method": "post", "url": "http://...", "headers": {...},
#                  "json": {...} | "body": "..." (+ "body_base64": true),
#                  "params": {...}, "timeout": 5, "max_redirects": 2,
#                  "callback": "Interop::Recorder", "callback_args": {...},
#                  "raise_error_responses": true}]}
#
# and prints, as its last stdout line, a JSON array with {"request_id", "jid", "data"} for
# each request (data = the job's first argument as pushed).

require "json"
require "logger"
require_relative "patient_http_standin"
require_relative "interop_callbacks"

input = JSON.parse($stdin.read)
Sidekiq.logger = Logger.new(nil)
Sidekiq.configure_client { |c| c.redis = {url: input.fetch("redis_url")} }
settings = PatientHttp::Sidekiq::Settings.new(
  keys: input["encryption_keys"] || [], threshold: input["payload_threshold"]
)
queue = input["queue"] || "patient_http"
out = input.fetch("requests").map do |spec|
  PatientHttp::Sidekiq.execute(spec, settings: settings, queue: queue)
end
puts JSON.generate(out)
