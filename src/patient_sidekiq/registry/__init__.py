"""What an application registers, as a Ruby app's configure block: Python callbacks,
lifecycle hooks, secrets, preprocessors and encryption hooks."""
