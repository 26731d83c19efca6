"""``python -m patient_sidekiq`` runs the command line."""

from patient_sidekiq.cli.app import main

main()
