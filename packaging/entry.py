"""The executable's entry point (PyInstaller runs this file)."""

import sys

from app.cli import main

sys.exit(main())
