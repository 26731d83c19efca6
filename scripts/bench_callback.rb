# frozen_string_literal: true

# The callback class the benchmark's jobs name (scripts/bench_enqueue.rb writes them,
# scripts/bench_gem_boot.rb runs them): the gem checks it exists before it enqueues or runs a
# request, as an app has its callback classes loaded. It never runs: the benchmark only counts
# the CallbackWorker jobs.
class BenchCallback
  def on_complete(_response)
  end

  def on_error(_error)
  end
end
