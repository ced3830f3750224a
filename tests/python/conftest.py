"""Fixtures shared by the Python end-to-end suites."""

import importlib
import subprocess
import sys

import pytest

from kit import REPO


@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    """The generated roomcast.v1 protobuf and gRPC modules: (messages, stubs)."""
    out = tmp_path_factory.mktemp("stubs")
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc",
            f"-I{REPO / 'proto'}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(REPO / "proto" / "roomcast" / "v1" / "roomcast.proto"),
        ],
        check=True,
        timeout=60,
    )
    sys.path.insert(0, str(out))
    messages = importlib.import_module("roomcast.v1.roomcast_pb2")
    stubs = importlib.import_module("roomcast.v1.roomcast_pb2_grpc")
    return messages, stubs
