# frozen_string_literal: true

# Loaded first by every Ruby process of the differential (RUBYOPT): resolves each of
# patient_http's autoloaded constants once, at boot. Ruby 3.1's autoload can fail with a
# NameError when two fibers of the gem's async processor trigger the same autoload at once
# ("uninitialized constant PatientHttp::RequestPreparer::OutgoingRequest", seen once): a flake
# of the reference, not a difference to report. Test scaffolding, not gem code.

require "patient_http"

PatientHttp.constants.each do |name|
  PatientHttp.const_get(name)
rescue LoadError, NameError
  nil # an optional part whose library is not installed (rails, aws-sdk-s3 …)
end
