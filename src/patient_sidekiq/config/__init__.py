"""Configuration: one frozen Config from defaults, a TOML file, the environment and flags.

``Config`` and ``FIELDS`` (every option's metadata) are in :mod:`.model`, ``load_config`` in
:mod:`.loader`, each option's table entry in :mod:`.options` and its value parser in
:mod:`.parsers`.
"""
