# frozen_string_literal: true

# Ruby side of tests/interop/test_sql_store_interop.py: the REAL gem's
# PatientHttp::PayloadStore::ActiveRecordStore on a real database, driven by a list of steps.
#
# stdin:  {"database": {"adapter": "sqlite3", "database": PATH} | {"url": "postgresql://..."},
#          "steps": [{"op": ..., ...}, ...]}
# stdout: one JSON line {"activerecord": VERSION, "shims": [...], "results": [one per step]}
#
# Steps: migrate (create the table as the gem's migration does), schema (what ActiveRecord
# sees of the table), store {key, data}, fetch {key}, exists {key}, delete {key},
# row {key} (the record's attributes), older_than {seconds_from_now | at (ISO 8601)}.

require "json"
require "time"
require "active_record"
require "patient_http/payload_store/active_record_store"

# The ActiveRecord 6.1 compatibility shim for the two ActiveRecord 7.x APIs the store calls
# (test scaffolding, not gem code); ActiveRecord72Shim::APPLIED says which were applied.
require_relative "active_record_72_shim"
SHIMS = ActiveRecord72Shim::APPLIED

input = JSON.parse($stdin.read)
database = input.fetch("database")
ActiveRecord::Base.logger = nil
ActiveRecord::Migration.verbose = false
if database["url"]
  ActiveRecord::Base.establish_connection(database["url"])
else
  ActiveRecord::Base.establish_connection(adapter: database.fetch("adapter"),
    database: database.fetch("database"))
end

MODEL = PatientHttp::PayloadStore::ActiveRecordStore::Payload
STORE = PatientHttp::PayloadStore::ActiveRecordStore.new

def migrate
  PatientHttpPayloadsTable.create(ActiveRecord::Base.connection, MODEL.table_name)
  MODEL.reset_column_information
  true
end

def schema
  connection = ActiveRecord::Base.connection
  table = MODEL.table_name
  {
    "primary_key" => connection.primary_key(table),
    "columns" => connection.columns(table).map do |c|
      {"name" => c.name, "sql_type" => c.sql_type, "null" => c.null, "default" => c.default,
       "limit" => c.limit, "precision" => c.precision}
    end,
    "indexes" => connection.indexes(table).map do |i|
      {"name" => i.name, "columns" => i.columns, "unique" => i.unique}
    end.sort_by { |i| i["name"] }
  }
end

def time_text(time)
  time&.utc&.iso8601(6)
end

def row(key)
  record = MODEL.find_by(key: key)
  return nil unless record

  {
    "data" => record.data,
    "created_at" => time_text(record.created_at),
    "updated_at" => time_text(record.updated_at),
    "created_at_before_type_cast" => record.created_at_before_type_cast.to_s
  }
end

def older_than(step)
  time = step["at"] ? Time.iso8601(step["at"]) : Time.now + step.fetch("seconds_from_now")
  MODEL.older_than(time).order(:key).pluck(:key)
end

results = input.fetch("steps").map do |step|
  key = step["key"]
  case step.fetch("op")
  when "migrate" then migrate
  when "schema" then schema
  when "store" then {"returned" => STORE.store(key, step.fetch("data")),
                     "json" => JSON.generate(step.fetch("data"))}
  when "fetch" then STORE.fetch(key)
  when "exists" then STORE.exists?(key)
  when "delete" then STORE.delete(key)
  when "row" then row(key)
  when "older_than" then older_than(step)
  else raise ArgumentError, "unknown step #{step.inspect}"
  end
end

puts JSON.generate({"activerecord" => ActiveRecord.version.to_s, "shims" => SHIMS,
  "results" => results})
