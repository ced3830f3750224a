"""Makes the SDK (src/) and the shared test processes (tests/python/kit.py)
importable, and provides the `target` and `clients` fixtures."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from sdk_testkit import clients, target  # noqa: E402,F401
