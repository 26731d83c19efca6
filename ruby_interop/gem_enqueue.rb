# frozen_string_literal: true

# Enqueue for the interop suite (tests/interop/) through the REAL gem -- NOT part of
# patient-sidekiq: PatientHttp::Sidekiq.execute(PatientHttp::Request.new(...), ...) of
# patient_http-sidekiq 1.0.1 (loaded by the oracle's lib/oracle_boot.rb, see gem_boot.rb).
# Reads the same JSON on stdin as enqueue.rb (the stand-in's enqueuer):
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
# each request (data = the job's first argument as the gem pushed it). The gem is configured
# through the oracle's ORACLE_* variables: keys (first encrypts), the :redis payload store
# named "redis" with the threshold, the RequestWorker queue; its processor is not started.

require "json"
require "base64"

input = JSON.parse($stdin.read)
ENV["ORACLE_REDIS_URL"] = input.fetch("redis_url")
ENV["ORACLE_REQUEST_QUEUE"] = input["queue"] || "patient_http"
ENV["ORACLE_PROCESSOR"] = "0"
keys = input["encryption_keys"] || []
ENV["ORACLE_ENCRYPTION_KEY"] = keys.empty? ? "" : JSON.generate(keys)
if input["payload_threshold"]
  ENV["ORACLE_PAYLOAD_STORE"] = "redis"
  ENV["ORACLE_PAYLOAD_STORE_NAME"] = "redis"
  ENV["ORACLE_PAYLOAD_THRESHOLD"] = input["payload_threshold"].to_s
else
  ENV["ORACLE_PAYLOAD_STORE"] = ""
end

oracle_root = ENV.fetch("ORACLE_ROOT") { abort "gem_enqueue.rb: ORACLE_ROOT is not set" }
require File.join(oracle_root, "lib", "oracle_boot")
require_relative "interop_callbacks" # the gem checks that the callback class exists

# What the gem pushed: jid and first argument, for the output.
class InteropEnqueueCapture
  include Sidekiq::ClientMiddleware

  PUSHED = []

  def call(_job_class, job, _queue, _redis_pool)
    result = yield
    PUSHED << {"jid" => job["jid"], "data" => job["args"][0]} if result
    result
  end
end

Sidekiq.configure_client do |config|
  config.client_middleware { |chain| chain.add InteropEnqueueCapture }
end

def build_request(spec)
  kwargs = {}
  kwargs[:headers] = spec["headers"] if spec["headers"]
  kwargs[:params] = spec["params"] if spec["params"]
  kwargs[:json] = spec["json"] if spec.key?("json")
  if spec["body"]
    kwargs[:body] = spec["body_base64"] ? Base64.decode64(spec["body"]).b : spec["body"]
  end
  kwargs[:timeout] = spec["timeout"] if spec.key?("timeout")
  kwargs[:max_redirects] = spec["max_redirects"] if spec.key?("max_redirects")
  PatientHttp::Request.new(spec.fetch("method", "get").to_sym, spec.fetch("url"), **kwargs)
end

out = input.fetch("requests").map do |spec|
  options = {callback: spec.fetch("callback"), callback_args: spec["callback_args"]}
  options[:raise_error_responses] = spec["raise_error_responses"] if spec.key?("raise_error_responses")
  before = InteropEnqueueCapture::PUSHED.size
  request_id = PatientHttp::Sidekiq.execute(build_request(spec), **options)
  {"request_id" => request_id}.merge(InteropEnqueueCapture::PUSHED.fetch(before))
end
puts JSON.generate(out)
