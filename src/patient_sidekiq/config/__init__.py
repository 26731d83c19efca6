"""Configuration: one frozen Config from defaults, a TOML file, the environment and flags."""
