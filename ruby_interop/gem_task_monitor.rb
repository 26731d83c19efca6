# frozen_string_literal: true

# The in-flight and statistics side of the REAL gem for the interop suite (tests/interop/)
# -- NOT part of patient-sidekiq and NOT a copy of the gem: every number and every repair
# here is done by patient_http-sidekiq 1.0.1's own classes (loaded by the oracle's
# lib/oracle_boot.rb, see gem_boot.rb), so Ruby reads and repairs what the Python worker
# wrote exactly as a Ruby app with the gem does.
#
#   web_tab  renders the gem's Sidekiq Web tab (GET /sidekiq/patient-http of Sidekiq 7.3.10's
#            Web UI with the tab mounted, lib/oracle_web.rb) and reads its numbers off the
#            page; also Stats#get_totals (the exact duration the page does not show). Like
#            the page, TaskMonitor.inflight_counts_by_process drops process ids whose
#            max_connections key has expired ("pruned": the ids it dropped)
#   sweep    one garbage-collection pass of the gem's monitor thread
#            (TaskMonitorThread#attempt_garbage_collection: gc_needed?, the gc lock,
#            cleanup_orphaned_requests, record_gc_run) with the given heartbeat_interval and
#            orphan_threshold; answers the task ids it re-enqueued (from the gem's log line)
#            and the jobs it pushed
#
#   {"redis_url": "redis://...", "action": "web_tab"}
#   {"redis_url": ..., "action": "sweep", "orphan_threshold": 2, "heartbeat_interval": 1}
#
# Prints its answer as JSON on the last stdout line.

require "json"
require "logger"
require "stringio"
require "cgi"

input = JSON.parse($stdin.read)
ENV["ORACLE_REDIS_URL"] = input.fetch("redis_url")
ENV["ORACLE_PROCESSOR"] = "0"
if input["action"] == "sweep"
  ENV["ORACLE_CONFIG_JSON"] = JSON.generate(
    "heartbeat_interval" => input.fetch("heartbeat_interval", 60),
    "orphan_threshold" => input.fetch("orphan_threshold", 300)
  )
end

oracle_root = ENV.fetch("ORACLE_ROOT") { abort "gem_task_monitor.rb: ORACLE_ROOT is not set" }
require File.join(oracle_root, "lib", "oracle_boot")

module Interop
  module GemTaskMonitor
    module_function

    def number(text)
      text = text.gsub(/<[^>]*>/, "").strip.delete(",").delete_suffix("%")
      text.include?(".") ? Float(text) : Integer(text)
    end

    def cells(html)
      html.scan(%r{<tr>\s*((?:<td>.*?</td>\s*)+)</tr>}m).map do |(row)|
        row.scan(%r{<td>(.*?)</td>}m).flatten.map(&:strip)
      end
    end

    # The gem's tab, rendered by Sidekiq's Web UI, and the numbers it shows.
    def web_page
      require File.join(ENV.fetch("ORACLE_ROOT"), "lib", "oracle_web")
      require "rack/mock"
      response = Rack::MockRequest.new(OracleWeb.app).get("/sidekiq/patient-http")
      raise "the Web tab answered #{response.status}" unless response.status == 200

      html = response.body
      stats = html.scan(%r{<div class="stat-value[^"]*">(.*?)</div>}m).flatten
      capacity = html.scan(%r{<div class="capacity-value">(.*?)</div>}m).flatten
      process_html, rest = html.split(%r{<!-- HTTP Status Codes Breakdown -->}, 2)
      process_html = process_html.split(%r{<div class="process-breakdown">}, 2).last
      status_html, error_html = (rest || "").split(%r{<!-- Error Types Breakdown -->}, 2)
      {
        "total_requests" => number(stats[0]),
        "total_errors" => number(stats[1]),
        "max_capacity_exceeded" => number(stats[2]),
        "avg_duration" => number(stats[3]),
        "max_capacity" => number(capacity[0]),
        "current_inflight" => number(capacity[1]),
        "utilization" => number(capacity[2]),
        "processes" => cells(process_html).to_h do |id, inflight, max, util|
          [id.gsub(/<[^>]*>/, ""), {"inflight" => number(inflight), "max_capacity" => number(max), "utilization" => number(util)}]
        end,
        "http_status_counts" => cells(status_html.to_s).to_h { |s, n| [s.gsub(/<[^>]*>/, ""), number(n)] },
        "error_type_counts" => cells(error_html.to_s).to_h { |t, n| [CGI.unescapeHTML(t), number(n)] }
      }
    end

    def web_tab
      before = PatientHttp::Sidekiq::TaskMonitor.registered_process_ids
      page = web_page
      after = PatientHttp::Sidekiq::TaskMonitor.registered_process_ids
      {
        "page" => page,
        "totals" => PatientHttp::Sidekiq::Stats.new.get_totals,
        "pruned" => (before - after).sort
      }
    end

    def sweep
      config = PatientHttp::Sidekiq.configuration
      log = StringIO.new
      config.logger = Logger.new(log)
      pushed = []
      capture = Class.new do
        include Sidekiq::ClientMiddleware
        define_method(:call) do |_klass, job, queue, _pool, &block|
          result = block.call
          pushed << {"jid" => job["jid"], "queue" => queue} if result
          result
        end
      end
      Sidekiq.configure_client { |c| c.client_middleware { |chain| chain.add capture } }
      monitor = PatientHttp::Sidekiq::TaskMonitor.new(config)
      thread = PatientHttp::Sidekiq::TaskMonitorThread.new(config, monitor, -> { [] })
      thread.send(:attempt_garbage_collection)
      text = log.string
      raise "the gem's sweep failed: #{text}" if text.include?("Garbage collection failed")

      {
        "requeued_task_ids" => text.scan(/Re-enqueued orphaned request (\S+) to/).flatten.sort,
        "pushed" => pushed
      }
    end
  end
end

answer = case input.fetch("action")
when "web_tab" then Interop::GemTaskMonitor.web_tab
when "sweep" then Interop::GemTaskMonitor.sweep
else abort "unknown action #{input["action"].inspect}"
end
puts JSON.generate(answer)
