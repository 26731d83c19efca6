# frozen_string_literal: true

# ActiveRecord 6.1 compatibility shim (test scaffolding, not gem code), for every Ruby process
# of the tests that runs the real gem's PatientHttp::PayloadStore::ActiveRecordStore:
# tests/interop/sql_store_peer.rb and tests/differential/active_record_store_boot.rb.
#
# patient_http 1.3.0's ActiveRecordStore#store_json is written for ActiveRecord >= 7.2 and
# calls two APIs that Debian 12's ActiveRecord 6.1 lacks:
#   1. Model.with_connection { ... }  (7.2)  -> here: the model's connection_pool.with_connection
#   2. Model.upsert(attrs, unique_by:, update_only: [...])  (update_only: 7.0) -> here: 6.1's
#      InsertAll, with its list of columns to update on conflict replaced by update_only
#      (6.1 would update every inserted column but the key, created_at included).
# The SQL that results is what ActiveRecord 7.x writes for the same call
# (tests/interop/test_sql_store_interop.py checks it). Applied only where the running
# ActiveRecord lacks the API; ActiveRecord72Shim::APPLIED names what was applied.

require "active_record"

module ActiveRecord72Shim
  APPLIED = []
end

unless ActiveRecord::Base.respond_to?(:with_connection)
  ActiveRecord72Shim::APPLIED << "with_connection"
  ActiveRecord::Base.singleton_class.prepend(Module.new do
    def with_connection(&block)
      connection_pool.with_connection(&block)
    end
  end)
end

if ActiveRecord.gem_version < Gem::Version.new("7.0")
  ActiveRecord72Shim::APPLIED << "upsert(update_only:)"
  ActiveRecord::InsertAll.prepend(Module.new do
    def initialize(model, inserts, update_only: nil, **options)
      @update_only_columns = update_only && Array(update_only).map(&:to_s)
      super(model, inserts, **options)
    end

    def updatable_columns
      @update_only_columns || super
    end
  end)
  ActiveRecord::Base.singleton_class.prepend(Module.new do
    def upsert(attributes, update_only: nil, **options)
      return super(attributes, **options) if update_only.nil?

      ActiveRecord::InsertAll.new(
        self, [attributes], on_duplicate: :update, update_only: update_only, **options
      ).execute
    end
  end)
end

# The table of the gem's db/migrate/20250101000000_create_patient_http_payloads.rb
# (patient_http 1.3.0; the oracle vendors lib/ only), as `rails db:migrate` makes it with the
# running ActiveRecord: no id, key string(36), data text, timestamps, a unique index on key
# and one on created_at. Shared by the interop peer and the differential's boot file.
module PatientHttpPayloadsTable
  def self.create(connection, table)
    connection.create_table(table, id: false) do |t|
      t.string :key, limit: 36, null: false
      t.text :data, null: false
      t.timestamps
    end
    connection.add_index(table, :key, unique: true)
    connection.add_index(table, :created_at)
  end
end
