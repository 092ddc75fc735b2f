"""The command layer: one module per `npga` subcommand, each a tyro `Config` and `main(cfg)`.

Commands parse, orchestrate and print; the library they call logs and never prints, and never imports
this package (import-linter checks it).
"""
