# frozen_string_literal: true

# TEST STAND-IN for the interop tests (tests/interop/) -- NOT a port of the patient_http or
# patient_http-sidekiq gems and NOT part of patient-sidekiq.
#
# Used ONLY as the fallback Ruby side when the real gem (.oracle/, built from
# ../shared/oracle; see gem_boot.rb and README.md) is not available: this file writes and
# reads the same Redis data the gem does, following its documented contract
# (shared/spec/patient-http-wire.md): RequestWorker jobs as `PatientHttp::Sidekiq.execute`
# pushes them (ActiveSupport::MessageEncryptor envelopes with a key list, the Redis payload
# store), and a `PatientHttp::Sidekiq::CallbackWorker` Sidekiq job that unpacks a result and
# calls `on_complete` / `on_error` of a Ruby callback class. Only what the interop suite
# needs is here; with the real gem built, the suite never loads it.
#
# Configuration comes from the environment so that the same file serves a `sidekiq -r`
# server and the `enqueue.rb` script:
#   INTEROP_ENCRYPTION_KEYS   comma-separated keys, the first encrypts (unset: no encryption)
#   INTEROP_PAYLOAD_THRESHOLD JSON bytes above which a payload goes to the Redis store
#                             (unset: no payload store)

require "base64"
require "json"
require "securerandom"
require "uri"
require "zlib"
require "sidekiq"
require "active_support"
require "active_support/key_generator"
require "active_support/message_encryptor"

module PatientHttp
  module Sidekiq
    PAYLOAD_PREFIX = "patient_http:payloads:"
    KDF_SALT = "patient_http_payload_encryption"
    STORE_NAME = "redis"

    # The stand-in's settings: encryption keys and the payload store threshold.
    class Settings
      attr_reader :keys, :threshold

      def self.from_env
        keys = ENV.fetch("INTEROP_ENCRYPTION_KEYS", "").split(",").reject(&:empty?)
        threshold = ENV["INTEROP_PAYLOAD_THRESHOLD"]
        new(keys: keys, threshold: threshold && Integer(threshold))
      end

      def initialize(keys: [], threshold: nil)
        @keys = keys
        @threshold = threshold
      end

      # ActiveSupport 6.1 derives with PBKDF2-SHA1 (the gem's default digest everywhere).
      def encryptor
        return nil if keys.empty?

        @encryptor ||= begin
          derive = ->(k) { ActiveSupport::KeyGenerator.new(k).generate_key(KDF_SALT, ActiveSupport::MessageEncryptor.key_len) }
          enc = ActiveSupport::MessageEncryptor.new(derive.call(keys.first), cipher: "aes-256-gcm")
          keys.drop(1).each { |k| enc.rotate(derive.call(k)) }
          enc
        end
      end
    end

    # Wire spec section 5 (encrypt) and 6 (store), in the gem's order: encrypt, then store.
    module Packing
      module_function

      def pack(hash, settings, redis)
        data = hash
        if (enc = settings.encryptor)
          message = enc.encrypt_and_sign(JSON.generate(hash))
          data = {"__encrypted__" => true, "value" => [message].pack("m0")}
        end
        text = JSON.generate(data)
        return data if settings.threshold.nil? || text.bytesize <= settings.threshold

        key = SecureRandom.uuid
        redis.set(PAYLOAD_PREFIX + key, text)
        {"$ref" => {"store" => STORE_NAME, "key" => key}}
      end

      # Returns [hash, facts] where facts says how the data arrived (for the recorders).
      def unpack(data, settings, redis)
        facts = {"stored" => false, "encrypted" => false}
        if data.is_a?(Hash) && data.key?("$ref")
          ref = data["$ref"]
          raise ArgumentError, "unknown payload store #{ref["store"]}" unless ref["store"] == STORE_NAME

          text = redis.get(PAYLOAD_PREFIX + ref["key"])
          raise KeyError, "stored payload #{ref["key"]} not found" if text.nil?

          facts["stored"] = true
          facts["store_key"] = ref["key"]
          data = JSON.parse(text)
        end
        if data.is_a?(Hash) && data["__encrypted__"]
          enc = settings.encryptor or raise ArgumentError, "encrypted payload but no key configured"
          data = JSON.parse(enc.decrypt_and_verify(data["value"].unpack1("m")))
          facts["encrypted"] = true
        end
        [data, facts]
      end
    end

    # A body payload (wire spec 2.1).
    module Payload
      module_function

      TEXT = %r{\Atext/|application/(?:json|xml|javascript)}

      def encode(body, content_type)
        return nil if body.nil?

        unless content_type&.match?(TEXT)
          return {"encoding" => "binary", "value" => [body].pack("m0"), "charset" => "ASCII-8BIT"}
        end

        # Bodies here come from JSON instructions, so they are UTF-8 already (the gem also
        # converts other declared charsets first).
        text = body.dup.force_encoding("UTF-8")
        gzipped = Zlib.gzip(text) if text.bytesize >= 4096
        if gzipped && gzipped.bytesize < text.bytesize
          {"encoding" => "gzipped", "value" => [gzipped].pack("m0"), "charset" => "UTF-8"}
        else
          {"encoding" => "text", "value" => text, "charset" => "UTF-8"}
        end
      end

      def decode(payload)
        return nil if payload.nil? || payload["value"].nil?

        raw = case payload["encoding"]
        when "text" then payload["value"].dup
        when "binary" then payload["value"].unpack1("m")
        when "gzipped" then Zlib.gunzip(payload["value"].unpack1("m"))
        else raise ArgumentError, "unknown payload encoding #{payload["encoding"]}"
        end
        raw.force_encoding(payload["charset"] || "ASCII-8BIT")
      end
    end

    # callback_args readable with string or symbol keys, as in the gem.
    class CallbackArgs
      def initialize(hash)
        @hash = hash || {}
      end

      def [](key)
        @hash[key.to_s]
      end

      def to_h
        @hash.dup
      end
    end

    # What an on_complete callback receives (wire spec 4); named like the gem's class.
    class ::PatientHttp::Response
      attr_reader :status, :headers, :body, :duration, :request_id, :url, :http_method,
        :callback_args, :redirects

      def self.load(hash)
        new(hash)
      end

      def initialize(hash)
        @status = hash["status"]
        @headers = hash["headers"] || {}
        @body = Payload.decode(hash["body"])
        @duration = hash["duration"]
        @request_id = hash["request_id"]
        @url = hash["url"]
        @http_method = hash["http_method"]
        @callback_args = CallbackArgs.new(hash["callback_args"])
        @redirects = hash["redirects"] || []
      end

      def success?
        status.between?(200, 299)
      end

      def json
        JSON.parse(body) if headers["content-type"].to_s.include?("json") && body
      end
    end

    # The three error shapes of wire spec 4, told apart by their keys.
    class Error
      attr_reader :class_name, :message, :error_type, :url, :http_method, :request_id,
        :callback_args, :redirects, :response

      def self.load(hash)
        if hash.key?("response")
          response = Response.load(hash["response"])
          kind = if response.status.between?(400, 499) then "PatientHttp::ClientError"
          elsif response.status.between?(500, 599) then "PatientHttp::ServerError"
          else "PatientHttp::HttpError"
          end
          new(kind, "HTTP #{response.status} response", "http_error", response: response)
        elsif hash.key?("redirects")
          name = hash["error_class"]
          unless ["PatientHttp::TooManyRedirectsError", "PatientHttp::RecursiveRedirectError"].include?(name)
            raise ArgumentError, "not a redirect error: #{name}"
          end

          new(name, "redirect error", "redirect", fields: hash)
        else
          new(hash["class_name"], hash["message"], hash["error_type"], fields: hash)
        end
      end

      def initialize(class_name, message, error_type, fields: nil, response: nil)
        @class_name = class_name
        @message = message
        @error_type = error_type
        @response = response
        source = fields || {}
        @url = response ? response.url : source["url"]
        @http_method = response ? response.http_method : source["http_method"]
        @request_id = response ? response.request_id : source["request_id"]
        @callback_args = response ? response.callback_args : CallbackArgs.new(source["callback_args"])
        @redirects = response ? response.redirects : source["redirects"]
      end
    end

    # The gem's callback job: unpack the result, call the callback class, delete a stored
    # payload afterwards (wire spec 1, 4, 5, 6).
    class CallbackWorker
      include ::Sidekiq::Worker

      def perform(data, result_type, callback_name)
        callback = Object.const_get(callback_name).new
        settings = Settings.from_env
        result, facts = ::Sidekiq.redis { |r| Packing.unpack(data, settings, r) }
        # How the result's body travelled (text/gzipped/binary), for the body-encoding tests.
        body = result.is_a?(Hash) && (result.key?("response") ? result["response"] : result)["body"]
        facts["body_encoding"] = body.is_a?(Hash) ? body["encoding"] : nil
        Thread.current[:patient_http_delivery] = facts.merge("jid" => jid)
        begin
          case result_type
          when "response" then callback.on_complete(Response.load(result))
          when "error" then callback.on_error(Error.load(result))
          else raise ArgumentError, "Unknown result_type: #{result_type}"
          end
        ensure
          Thread.current[:patient_http_delivery] = nil
        end
        ::Sidekiq.redis { |r| r.del(PAYLOAD_PREFIX + facts["store_key"]) } if facts["stored"]
      end
    end

    # Only its name matters here: Python runs these jobs, never this Ruby process.
    class RequestWorker
      include ::Sidekiq::Worker

      def perform(*)
        raise NotImplementedError, "the interop stand-in never runs RequestWorker in Ruby"
      end
    end

    # Build a request hash as PatientHttp::Request#as_json does (wire spec 2).
    def self.request_as_json(spec)
      headers = (spec["headers"] || {}).transform_keys(&:downcase)
      body = spec["body"]
      if spec.key?("json")
        body = JSON.generate(spec["json"])
        headers["content-type"] ||= "application/json; charset=utf-8"
      end
      body = body.unpack1("m") if body && spec["body_base64"]
      url = spec["url"]
      if spec["params"]
        url += (url.include?("?") ? "&" : "?") + URI.encode_www_form(spec["params"])
      end
      {
        "http_method" => spec.fetch("method", "get").downcase,
        "url" => url,
        "headers" => headers,
        "body" => Payload.encode(body, headers["content-type"]),
        "timeout" => spec["timeout"],
        "max_redirects" => spec["max_redirects"]
      }
    end

    # Push one RequestWorker job the way `PatientHttp::Sidekiq.execute` does; return the
    # request id and the pushed jid.
    def self.execute(spec, settings:, queue: "patient_http")
      callback = spec.fetch("callback")
      klass = Object.const_get(callback)
      unless klass.method_defined?(:on_complete) && klass.method_defined?(:on_error)
        raise ArgumentError, "#{callback} must define on_complete and on_error"
      end

      request_id = SecureRandom.uuid
      data = ::Sidekiq.redis { |r| Packing.pack(request_as_json(spec), settings, r) }
      args = [data, callback, spec.fetch("raise_error_responses", false), spec["callback_args"], request_id]
      jid = ::Sidekiq::Client.push("class" => "PatientHttp::Sidekiq::RequestWorker", "queue" => queue,
        "retry" => true, "args" => args)
      {"request_id" => request_id, "jid" => jid, "data" => data}
    end
  end
end
