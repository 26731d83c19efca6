# frozen_string_literal: true

# Bulk enqueue for scripts/bench_pipeline: COUNT GET requests through the REAL gem's public API,
# PatientHttp::Sidekiq.execute(PatientHttp::Request.new(:get, url), callback:, callback_args:),
# so the RequestWorker jobs are exactly what an application using patient_http-sidekiq 1.0.1
# pushes (one Sidekiq client push per request, as the gem does).
#
#   . "$ORACLE_ROOT/env.sh"
#   ORACLE_REDIS_URL=redis://127.0.0.1:PORT/DB ORACLE_REQUEST_QUEUE=q ORACLE_CALLBACK_QUEUE=cq \
#     ruby scripts/bench_enqueue.rb URLS COUNT [FIRST [CALLBACK_CLASS]]
#
# Requests FIRST .. FIRST+COUNT-1 (FIRST defaults to 0; the benchmark runs one such slice per
# core in parallel) each carry callback_args {"i" => i}; the callback class (default
# BenchCallback, from bench_callback.rb, so the gem's validation passes) never runs here.
# URLS is a comma-separated list: request i goes to URLS[i % URLS.size]. Prints one JSON line on stdout:
# {"count": N, "seconds": S}. The gem's processor is not started (ORACLE_PROCESSOR=0).

ENV["ORACLE_PROCESSOR"] = "0"
require File.join(ENV.fetch("ORACLE_ROOT"), "lib", "oracle_boot")

require_relative "bench_callback"

urls = ARGV.fetch(0).split(",")
count = Integer(ARGV.fetch(1))
first = Integer(ARGV.fetch(2, "0"))
callback = ARGV.fetch(3, "BenchCallback")
Sidekiq.logger.level = Logger::WARN

started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
(first...(first + count)).each do |i|
  request = PatientHttp::Request.new(:get, urls[i % urls.size])
  PatientHttp::Sidekiq.execute(request, callback: callback, callback_args: {"i" => i})
end
seconds = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
puts JSON.generate({"count" => count, "seconds" => seconds})
