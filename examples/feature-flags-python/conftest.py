"""Makes the SDK's test kit (clients/python/tests) importable and provides its
`target` (standalone and cluster) and `clients` fixtures."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "clients" / "python" / "tests"))

from sdk_testkit import clients, target  # noqa: E402,F401
