# frozen_string_literal: true

# The oracle's boot file plus the gem's :active_record payload store
# (PatientHttp::PayloadStore::ActiveRecordStore), registered through the gem's public
# configuration API on a database of this side: the differential's ActiveRecord groups.
#
#   DIFFERENTIAL_AR_SQLITE        an SQLite file, or
#   DIFFERENTIAL_AR_URL           a postgresql:// URL
#   DIFFERENTIAL_STORE_THRESHOLD  payload_store_threshold in bytes
#
# Debian's ActiveRecord is 6.1: tests/interop/active_record_72_shim.rb adds the two 7.x APIs
# the store calls. The table is created, when missing, as the gem's migration makes it.

require "active_record"
require_relative "../interop/active_record_72_shim"
require File.join(ENV.fetch("ORACLE_ROOT"), "lib", "oracle_boot.rb")
require "patient_http/payload_store/active_record_store"

ActiveRecord::Base.logger = nil
ActiveRecord::Migration.verbose = false
# Sidekiq threads and the gem's processor threads each keep a connection (no Rails executor
# gives them back): a pool larger than all of them.
pool = {pool: 30, checkout_timeout: 10}
if (url = ENV["DIFFERENTIAL_AR_URL"]) && !url.empty?
  ActiveRecord::Base.establish_connection(url: url, **pool)
else
  ActiveRecord::Base.establish_connection(adapter: "sqlite3",
    database: ENV.fetch("DIFFERENTIAL_AR_SQLITE"), timeout: 10_000, **pool)
end

ActiveRecord::Base.connection_pool.with_connection do |connection|
  # Several processes share the SQLite file (the gem's or our worker writing, Sidekiq threads
  # reading and deleting): in the default rollback journal a reader whose transaction must
  # turn into a writer while another holds the write lock gets SQLITE_BUSY at once, whatever
  # the busy timeout (seen as SQLite3::BusyException in a CallbackWorker). WAL, what any app
  # sharing an SQLite file between processes runs, lets readers and the writer proceed; it
  # is a property of the file, so both sides and our worker use it.
  connection.execute("PRAGMA journal_mode=WAL") unless ENV["DIFFERENTIAL_AR_URL"].to_s != ""
  table = PatientHttp::PayloadStore::ActiveRecordStore::Payload.table_name
  PatientHttpPayloadsTable.create(connection, table) unless connection.table_exists?(table)
end

# `configure` would start from a fresh Configuration: add to the one oracle_boot.rb built.
config = PatientHttp::Sidekiq.configuration
config.register_payload_store(:rows, adapter: :active_record)
config.payload_store_threshold = Integer(ENV.fetch("DIFFERENTIAL_STORE_THRESHOLD"))
# The gem memoizes its ExternalStorage; boot may have built it before this store existed.
PatientHttp::Sidekiq.instance_variable_set(:@external_storage, nil)
