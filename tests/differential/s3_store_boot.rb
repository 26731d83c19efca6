# frozen_string_literal: true

# The oracle's boot file plus the gem's :s3 payload store (PatientHttp::PayloadStore::S3Store)
# on an S3-compatible server, registered through the gem's public configuration API with an
# Aws::S3::Bucket, as an application registers it: the differential's S3 group.
#
#   DIFFERENTIAL_S3_ENDPOINT      the server (moto), http://127.0.0.1:PORT
#   DIFFERENTIAL_S3_BUCKET        this side's bucket
#   DIFFERENTIAL_S3_KEY_PREFIX    the store's key_prefix
#   DIFFERENTIAL_STORE_THRESHOLD  payload_store_threshold in bytes
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION: the server's dummy credentials

require "aws-sdk-s3"
require File.join(ENV.fetch("ORACLE_ROOT"), "lib", "oracle_boot.rb")

client = Aws::S3::Client.new(
  endpoint: ENV.fetch("DIFFERENTIAL_S3_ENDPOINT"),
  force_path_style: true, # moto answers at one address, with no per-bucket host names
  region: ENV.fetch("AWS_REGION"),
  access_key_id: ENV.fetch("AWS_ACCESS_KEY_ID"),
  secret_access_key: ENV.fetch("AWS_SECRET_ACCESS_KEY")
)
bucket = Aws::S3::Resource.new(client: client).bucket(ENV.fetch("DIFFERENTIAL_S3_BUCKET"))

# `configure` would start from a fresh Configuration: add to the one oracle_boot.rb built.
config = PatientHttp::Sidekiq.configuration
config.register_payload_store(:objects, adapter: :s3, bucket: bucket,
  key_prefix: ENV.fetch("DIFFERENTIAL_S3_KEY_PREFIX"))
config.payload_store_threshold = Integer(ENV.fetch("DIFFERENTIAL_STORE_THRESHOLD"))
# The gem memoizes its ExternalStorage; boot may have built it before this store existed.
PatientHttp::Sidekiq.instance_variable_set(:@external_storage, nil)
