"""The patient_http gem's wire format: requests, responses, failures, headers, payloads,
encryption, payload stores and packing of job arguments."""
