# frozen_string_literal: true

# The oracle's boot file plus the gem's :file payload store, registered through the gem's
# public configuration API: the differential's file-store group (the oracle wires only the
# Redis store). DIFFERENTIAL_FILE_STORE is the directory, DIFFERENTIAL_STORE_THRESHOLD the
# payload_store_threshold in bytes.

require File.join(ENV.fetch("ORACLE_ROOT"), "lib", "oracle_boot.rb")

# `configure` would start from a fresh Configuration: add to the one oracle_boot.rb built.
config = PatientHttp::Sidekiq.configuration
config.register_payload_store(:files, adapter: :file, directory: ENV.fetch("DIFFERENTIAL_FILE_STORE"))
config.payload_store_threshold = Integer(ENV.fetch("DIFFERENTIAL_STORE_THRESHOLD"))
# The gem memoizes its ExternalStorage; boot may have built it before this store existed.
PatientHttp::Sidekiq.instance_variable_set(:@external_storage, nil)
