# frozen_string_literal: true

# Test callbacks of the interop suite (tests/interop/) -- NOT part of patient-sidekiq.
#
# Ruby callback classes as an app using patient_http-sidekiq would write them, using only
# the gem's public Response/Error API, so the real gem's CallbackWorker (gem_boot.rb) and
# the stand-in's (patient_http_standin.rb) both call them. Each one records what it
# received as one JSON object RPUSHed onto the Redis list `interop:records`, so a pytest
# scenario can compare it with what it expected.

require "json"
require "sidekiq"

module Interop
  RECORDS = "interop:records"

  def self.record(entry)
    delivery = Thread.current[:patient_http_delivery] || {}
    entry = entry.merge("runtime" => "ruby", "delivery" => delivery)
    Sidekiq.redis { |r| r.rpush(RECORDS, JSON.generate(entry)) }
  end

  def self.args_of(result)
    args = result.callback_args
    # the gem's CallbackArgs#to_h has symbol keys; its as_json is the wire hash
    (defined?(PatientHttp::CallbackArgs) && args.is_a?(PatientHttp::CallbackArgs)) ? args.as_json : args.to_h
  end

  # The class a callback reports: the wrapped exception's name for a request error (the
  # gem's RequestError keeps it as "class_name"), else the error's own class.
  def self.error_class_name(error)
    return error.class_name if error.respond_to?(:class_name)
    return error.as_json["class_name"] if defined?(PatientHttp::RequestError) && error.is_a?(PatientHttp::RequestError)

    error.class.name
  end

  def self.response_fields(response)
    body = response.body
    text = body&.dup&.force_encoding("UTF-8")
    json_type = response.respond_to?(:json?) ? response.json? : true
    {
      "status" => response.status,
      "headers" => response.headers.to_h,
      "body" => text&.valid_encoding? ? text : nil,
      "body_base64" => body && [body].pack("m0"),
      "body_charset" => body&.encoding&.name,
      "json" => json_type ? response.json : nil,
      "success" => response.success?,
      "callback_args" => args_of(response),
      "request_id" => response.request_id,
      "url" => response.url,
      "http_method" => response.http_method,
      "redirects" => response.redirects
    }
  end

  # Records every result it gets, with the class of the object it was given.
  class Recorder
    def on_complete(response)
      Interop.record({"callback" => "on_complete", "class" => response.class.name}
        .merge(Interop.response_fields(response)))
    end

    def on_error(error)
      entry = {
        "callback" => "on_error",
        "class" => Interop.error_class_name(error),
        "error_type" => error.error_type,
        "message" => error.message,
        "callback_args" => Interop.args_of(error),
        "request_id" => error.request_id,
        "url" => error.url,
        "http_method" => error.http_method,
        "redirects" => error.respond_to?(:redirects) ? error.redirects : nil,
        "response" => (error.respond_to?(:response) && error.response) ? Interop.response_fields(error.response) : nil
      }
      Interop.record(entry)
    end
  end

  # The Ruby twin of a callback that Python runs (tests/interop/e2e_harness.py registers
  # "Interop::PyRecorder"). The gem checks at enqueue time that the callback class exists
  # in Ruby; a Ruby process that gets one of its jobs anyway records the mistake.
  class PyRecorder
    def on_complete(response)
      Interop.record({"callback" => "on_complete", "misrouted" => true, "request_id" => response.request_id})
    end

    def on_error(error)
      Interop.record({"callback" => "on_error", "misrouted" => true, "request_id" => error.request_id})
    end
  end
end
