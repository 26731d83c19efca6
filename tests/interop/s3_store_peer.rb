# frozen_string_literal: true

# The real gem's S3Store (PatientHttp::PayloadStore::S3Store), for
# tests/interop/test_s3_store_interop.py to talk to line by line: one Ruby process serves a
# whole test module (Ruby and the SDK take most of a second to load).
#
# ARGV[0] is the endpoint of the S3-compatible server. Each request line is a JSON object
# {"op": …, "bucket": …, "key_prefix": …, "key": …, "data": …} and gets one reply line;
# "key_prefix" null means the gem's default. A store is built per bucket and prefix the way an
# application builds one, from an Aws::S3::Bucket of an Aws::S3::Resource. The first line
# written, before any request, is {"ready": …} with what was loaded. Errors are replies too
# ({"error": class, "message": …}), so the test sees them.

require "json"
require "aws-sdk-s3"
require "patient_http"

client = Aws::S3::Client.new(
  endpoint: ARGV.fetch(0),
  force_path_style: true, # moto answers at one address, with no per-bucket host names
  region: "us-east-1",
  access_key_id: "testing",
  secret_access_key: "testing"
)
resource = Aws::S3::Resource.new(client: client)
stores = Hash.new do |built, (bucket, key_prefix)|
  built[[bucket, key_prefix]] =
    PatientHttp::PayloadStore::S3Store.new(bucket: resource.bucket(bucket), key_prefix: key_prefix)
end

def reply(data)
  $stdout.puts(JSON.generate(data))
  $stdout.flush
end

reply(
  "ready" => true,
  "patient_http" => PatientHttp::VERSION,
  "aws_sdk_s3" => Aws::S3::GEM_VERSION,
  "source" => PatientHttp::PayloadStore::S3Store.instance_method(:store_json).source_location.first
)

$stdin.each_line do |line|
  request = JSON.parse(line)
  store = stores[[request.fetch("bucket"), request["key_prefix"]]]
  key = request["key"]
  answer =
    case request["op"]
    when "store"
      # What the store writes is JSON.generate(data): return that text for comparison.
      {"key" => store.store(key, request["data"]), "json" => JSON.generate(request["data"])}
    when "fetch" then {"data" => store.fetch(key)}
    when "exists" then {"exists" => store.exists?(key)}
    when "delete" then {"deleted" => store.delete(key)}
    when "key_prefix" then {"key_prefix" => store.key_prefix}
    else raise ArgumentError, "unknown op #{request["op"].inspect}"
    end
  reply(answer)
rescue => e
  reply("error" => e.class.name, "message" => e.message)
end
