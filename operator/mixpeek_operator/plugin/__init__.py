"""`kubectl mixpeek`: a kubectl plugin over the operator's own clients (no kopf).

`cli.py` parses arguments and maps failures to exit codes; each verb lives in its own
module exposing ``configure_parser(parser)`` and ``async run(args, session) -> int``.
"""
