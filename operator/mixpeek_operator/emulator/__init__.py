"""A local emulator of the Mixpeek bucket-sync API (the V2 surface of the reference).

`app.create_app(EmulatorConfig(...))` builds the ASGI app; `mixpeek-operator emulator`
serves it. This package is test and demo tooling: the operator's runtime modules never
import it. Nothing is imported here so that `mixpeek-operator --help` stays fast.
"""
