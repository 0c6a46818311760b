"""Flowmill's terminal UI: a Textual app that is a client of the HTTP API (`flowmill tui`, or
`flowmill` alone on a terminal). `app.py` assembles it; `screens/` holds one module per screen
and `widgets/` the pieces they share; `flowmill.tcss` is its one stylesheet."""
