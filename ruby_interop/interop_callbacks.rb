# frozen_string_literal: true

# TEST STAND-IN for the interop tests (tests/interop/) -- NOT part of patient-sidekiq.
#
# Ruby callback classes as an app using patient_http-sidekiq would write them. Each one
# records what it received as one JSON object RPUSHed onto the Redis list
# `interop:records`, so a pytest scenario can compare it with what it expected.

require "json"
require "sidekiq"

module Interop
  RECORDS = "interop:records"

  def self.record(entry)
    delivery = Thread.current[:patient_http_delivery] || {}
    entry = entry.merge("runtime" => "ruby", "delivery" => delivery)
    Sidekiq.redis { |r| r.rpush(RECORDS, JSON.generate(entry)) }
  end

  def self.response_fields(response)
    body = response.body
    text = body&.dup&.force_encoding("UTF-8")
    {
      "status" => response.status,
      "headers" => response.headers,
      "body" => text&.valid_encoding? ? text : nil,
      "body_base64" => body && [body].pack("m0"),
      "json" => response.json,
      "success" => response.success?,
      "callback_args" => response.callback_args.to_h,
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
        "class" => error.class_name,
        "error_type" => error.error_type,
        "message" => error.message,
        "callback_args" => error.callback_args.to_h,
        "request_id" => error.request_id,
        "url" => error.url,
        "http_method" => error.http_method,
        "redirects" => error.redirects,
        "response" => error.response && Interop.response_fields(error.response)
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
