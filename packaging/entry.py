"""The executable's entry point (PyInstaller runs this file): what `python -m app` does."""

import runpy

runpy.run_module("app", run_name="__main__", alter_sys=True)
