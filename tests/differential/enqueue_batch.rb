# frozen_string_literal: true

# Enqueue a batch of requests through the REAL gem (PatientHttp::Sidekiq.execute), in one Ruby
# process: the differential test's way to make the RequestWorker jobs both processors run.
#
#   ruby -r "$ORACLE_ROOT/lib/oracle_boot.rb" enqueue_batch.rb < requests.json
#
# Input: a JSON list of {"name", "method", "url", "params", "headers", "json", "body",
# "body_base64", "timeout", "max_redirects", "preprocessors", "callback_args",
# "raise_error_responses"}; a header or param value {"$secret": NAME} becomes the gem's
# secret reference. The gem's configuration (queues, encryption, payload store) comes from the
# ORACLE_* environment that oracle_boot.rb reads. Output: one JSON line, a list of
# {"name", "request_id"}.

require "json"
require "base64"

def secret_refs(hash)
  hash.to_h do |key, value|
    secret = value.is_a?(Hash) && value.keys == ["$secret"]
    [key, secret ? PatientHttp.secret(value["$secret"]) : value]
  end
end

def request_for(spec)
  options = {}
  options[:headers] = secret_refs(spec["headers"]) if spec["headers"]
  options[:params] = secret_refs(spec["params"]) if spec["params"]
  options[:json] = spec["json"] if spec.key?("json")
  options[:body] = spec["body"] if spec.key?("body")
  options[:body] = Base64.strict_decode64(spec["body_base64"]).b if spec.key?("body_base64")
  %w[timeout max_redirects preprocessors].each do |name|
    options[name.to_sym] = spec[name] if spec.key?(name)
  end
  PatientHttp::Request.new(spec.fetch("method", "get"), spec.fetch("url"), **options)
end

specs = JSON.parse($stdin.read)
out = specs.map do |spec|
  options = {callback: spec.fetch("callback", "OracleCallback")}
  options[:callback_args] = spec["callback_args"] if spec.key?("callback_args")
  options[:raise_error_responses] = spec["raise_error_responses"] if spec.key?("raise_error_responses")
  {"name" => spec["name"], "request_id" => PatientHttp::Sidekiq.execute(request_for(spec), **options)}
end
puts JSON.generate(out)
