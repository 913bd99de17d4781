#!/usr/bin/env python3
"""Launcher so that ``python cli.py ...`` works from a checkout without installing."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vault.__main__ import main

if __name__ == "__main__":
    main()
