# frozen_string_literal: true

# TEST STAND-IN for the interop tests (tests/interop/) -- NOT a port of the patient_http-sidekiq
# gem and NOT part of patient-sidekiq.
#
# Used ONLY as the fallback Ruby side when the real gem is not built (with it, the suite
# uses gem_task_monitor.rb, the gem's own classes). The in-flight and statistics side of
# the gem, written from its documented contract
# (shared/spec/patient-http-wire.md §7 and §8) so that Ruby code reads and repairs what the
# Python worker writes:
#
#   web_tab   the numbers the gem's Sidekiq Web tab shows (totals, in-flight and capacity per
#             host:pid, utilization); like the page, it drops process ids whose
#             max_connections key has expired from the processes set
#   sweep     the gem's orphan sweep: gc_last_run / gc_lock, the task ids older than the
#             threshold whose process id is not in the processes set, an atomic Lua
#             check-and-remove of each, then a normal Sidekiq push of the job (same jid).
#             Like the gem it does not prune the processes set itself ("prune": true adds
#             the pruning the spec recommends)
#   register  what a Ruby processor writes for requests it is running (in-flight index, job
#             hash, processes set), so a test can leave behind what a killed Ruby process
#             leaves: give "alive": false to omit its max_connections key
#
# Reads one JSON object on stdin and prints its answer as JSON on the last stdout line:
#
#   {"redis_url": "redis://...", "action": "web_tab"}
#   {"redis_url": ..., "action": "sweep", "orphan_threshold": 2, "heartbeat_interval": 1,
#    "prune": false}
#   {"redis_url": ..., "action": "register", "process_id": "host:pid:0123456789abcdef",
#    "max_connections": 5, "alive": false, "age": 30, "jobs": ["<RequestWorker job JSON>"]}

require "json"
require "logger"
require "securerandom"
require "sidekiq"

module Interop
  module TaskMonitor
    PREFIX = "sidekiq:patient_http:"
    INDEX = "#{PREFIX}inflight_index"
    JOBS = "#{PREFIX}inflight_jobs"
    PROCESSES = "#{PREFIX}processes"
    GC_LOCK = "#{PREFIX}gc_lock"
    GC_LAST_RUN = "#{PREFIX}gc_last_run"
    TOTALS = "#{PREFIX}totals"

    # A heartbeat may refresh a task between the scan and its removal; re-checking the score
    # inside Redis makes that heartbeat win. Answers [1, job] when the task was taken.
    TAKE_IF_STALE = <<~LUA
      local score = redis.call("ZSCORE", KEYS[1], ARGV[1])
      if (not score) or tonumber(score) >= tonumber(ARGV[2]) then
        return {0}
      end
      local job = redis.call("HGET", KEYS[2], ARGV[1])
      redis.call("ZREM", KEYS[1], ARGV[1])
      redis.call("HDEL", KEYS[2], ARGV[1])
      return {1, job}
    LUA

    # Only the holder may delete the lock (it may have expired and been taken by another).
    RELEASE_IF_OURS = <<~LUA
      if redis.call("GET", KEYS[1]) == ARGV[1] then
        return redis.call("DEL", KEYS[1])
      end
      return 0
    LUA

    module_function

    def max_connections_key(process_id)
      "#{PROCESSES}:#{process_id}:max_connections"
    end

    def process_of(task_id)
      task_id.split("/", 2).first
    end

    def now_ms
      (Time.now.to_f * 1000).round
    end

    def web_tab(redis)
      ids = redis.smembers(PROCESSES)
      limits = ids.empty? ? [] : redis.mget(*ids.map { |id| max_connections_key(id) })
      running = redis.zrange(INDEX, 0, -1).map { |task| process_of(task) }.tally
      processes = {}
      gone = []
      ids.zip(limits).each do |id, limit|
        if limit.nil?
          gone << id
          next
        end
        host_pid = id.split(":")[0, 2].join(":")
        entry = processes[host_pid] ||= {"inflight" => 0, "max_capacity" => 0}
        entry["inflight"] += running.fetch(id, 0)
        entry["max_capacity"] += Integer(limit)
      end
      redis.srem(PROCESSES, gone) unless gone.empty?

      totals = totals(redis)
      capacity = processes.values.sum { |p| p["max_capacity"] }
      inflight = processes.values.sum { |p| p["inflight"] }
      requests = totals["requests"]
      {
        "totals" => totals,
        "avg_duration" => requests.positive? ? (totals["duration"] / requests).round(3) : 0.0,
        "max_capacity" => capacity,
        "current_inflight" => inflight,
        "utilization" => capacity.positive? ? (inflight.to_f / capacity * 100).round(1) : 0,
        "processes" => processes,
        "pruned" => gone.sort
      }
    end

    def totals(redis)
      raw = redis.hgetall(TOTALS)
      by_prefix = lambda do |prefix|
        raw.select { |k, _| k.start_with?(prefix) }
          .map { |k, v| [k.delete_prefix(prefix), Integer(v)] }.sort.to_h
      end
      {
        "requests" => raw.fetch("requests", 0).to_i,
        "duration" => raw.fetch("duration", 0).to_f.round(6),
        "errors" => raw.fetch("errors", 0).to_i,
        "max_capacity_exceeded" => raw.fetch("max_capacity_exceeded", 0).to_i,
        "http_status_counts" => by_prefix.call("http_status:"),
        "error_type_counts" => by_prefix.call("errors:")
      }
    end

    def sweep(redis, orphan_threshold:, heartbeat_interval:, prune: false)
      last = redis.get(GC_LAST_RUN)
      if last && now_ms - last.to_f < heartbeat_interval * 1000
        return {"skipped" => "gc_last_run is recent"}
      end
      holder = "ruby-sweeper:#{Process.pid}:#{SecureRandom.hex(4)}"
      lock_ttl = [(2 * heartbeat_interval).ceil, 120].max
      unless redis.set(GC_LOCK, holder, nx: true, ex: lock_ttl)
        return {"skipped" => "gc_lock is held by #{redis.get(GC_LOCK)}"}
      end
      begin
        pruned = prune ? web_tab(redis)["pruned"] : []
        started = now_ms
        cutoff = started - (orphan_threshold * 1000).round
        stale = redis.zrangebyscore(INDEX, "-inf", cutoff)
        live = redis.smembers(PROCESSES)
        requeued = stale.reject { |task| live.include?(process_of(task)) }.filter_map do |task|
          taken, job = redis.eval(TAKE_IF_STALE, keys: [INDEX, JOBS], argv: [task, cutoff.to_s])
          next unless taken == 1 && job

          hash = JSON.parse(job)
          Sidekiq::Client.push(hash)
          {"task_id" => task, "jid" => hash["jid"], "queue" => hash["queue"]}
        end
        redis.set(GC_LAST_RUN, started.to_s, px: (1.5 * heartbeat_interval * 1000).round)
        {"pruned" => pruned, "requeued" => requeued}
      ensure
        redis.eval(RELEASE_IF_OURS, keys: [GC_LOCK], argv: [holder])
      end
    end

    def register(redis, process_id:, jobs:, max_connections:, alive:, age:)
      score = now_ms - (age * 1000).round
      tasks = jobs.map do |job|
        request_id = JSON.parse(job).fetch("args")[4] || SecureRandom.uuid
        ["#{process_id}/#{request_id}", job]
      end
      redis.multi do |tx|
        tasks.each do |task, job|
          tx.zadd(INDEX, score, task)
          tx.hset(JOBS, task, job)
        end
        tx.sadd(PROCESSES, process_id)
        tx.set(max_connections_key(process_id), max_connections.to_s, ex: 120) if alive
      end
      {"task_ids" => tasks.map(&:first)}
    end
  end
end

if $PROGRAM_NAME == __FILE__
  input = JSON.parse($stdin.read)
  Sidekiq.logger = Logger.new(nil)
  Sidekiq.configure_client { |c| c.redis = {url: input.fetch("redis_url")} }
  answer = Sidekiq.redis do |redis|
    case input.fetch("action")
    when "web_tab"
      Interop::TaskMonitor.web_tab(redis)
    when "sweep"
      Interop::TaskMonitor.sweep(
        redis,
        orphan_threshold: input.fetch("orphan_threshold", 300),
        heartbeat_interval: input.fetch("heartbeat_interval", 60),
        prune: input.fetch("prune", false)
      )
    when "register"
      Interop::TaskMonitor.register(
        redis,
        process_id: input.fetch("process_id"),
        jobs: input.fetch("jobs"),
        max_connections: input.fetch("max_connections", 5),
        alive: input.fetch("alive", true),
        age: input.fetch("age", 0)
      )
    else
      abort "unknown action #{input["action"].inspect}"
    end
  end
  puts JSON.generate(answer)
end
