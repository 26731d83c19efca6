# frozen_string_literal: true

# Boot file of the real gem's Sidekiq server in scripts/bench_pipeline (passed as the last
# `-r`, so Sidekiq loads this instead of lib/oracle_boot.rb, which it loads first):
#
# 1. patient_http's autoloaded constants are resolved once, before the processor's fibers
#    start: Ruby 3.1's autoload can raise NameError when two fibers hit the same autoload at
#    once (the same guard as tests/differential/eager_load.rb).
# 2. Sidekiq's Redis pools get BENCH_REDIS_POOL_SIZE connections and BENCH_REDIS_POOL_TIMEOUT
#    seconds of checkout wait. The gem pushes each CallbackWorker job from a fiber of its
#    processor's reactor, through Sidekiq's "internal" pool (10 connections, 1 s timeout, as
#    shipped). Under a backlog hundreds of fibers finish at once; those that wait over 1 s for a
#    connection get ConnectionPool::TimeoutError, logged as "Failed to enqueue completion
#    callback": the callback is lost. `config.redis = {size:, pool_timeout:}` is the stock
#    Sidekiq setting a Ruby app would change; it applies to every pool of the process.
# 3. BenchCallback, the callback class the benchmark's jobs name, is defined: the gem checks it
#    exists before running a request, as an app's Sidekiq process has its callback classes
#    loaded. It never runs (the benchmark's Sidekiq does not work the callback queue).
# 4. BENCH_SIDEKIQ_LOG_LEVEL (debug, info, warning, error) sets Sidekiq's logger, which the gem
#    logs to as well: at info (Sidekiq's default) Sidekiq logs two lines per job.

require "patient_http"

PatientHttp.constants.each do |name|
  PatientHttp.const_get(name)
rescue LoadError, NameError
  nil # an optional part whose library is not installed (rails, aws-sdk-s3 ...)
end

require File.join(ENV.fetch("ORACLE_ROOT"), "lib", "oracle_boot")

require_relative "bench_callback"

pool = {}
size = ENV.fetch("BENCH_REDIS_POOL_SIZE", "")
pool[:size] = Integer(size) unless size.empty?
timeout = ENV.fetch("BENCH_REDIS_POOL_TIMEOUT", "")
pool[:pool_timeout] = Float(timeout) unless timeout.empty?

level = ENV.fetch("BENCH_SIDEKIQ_LOG_LEVEL", "").upcase
level = "WARN" if level == "WARNING"

Sidekiq.configure_server do |config|
  config.redis = pool unless pool.empty?
  config.logger.level = Logger.const_get(level) unless level.empty?
end
