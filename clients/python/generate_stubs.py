"""Regenerates src/roomcast/v1 from the repository's proto/ with grpcio-tools.

The stubs are checked in so that installing the package needs no protoc;
tests/test_stubs.py fails when they no longer match the proto.

    python clients/python/generate_stubs.py [OUT_DIR]
"""

import pathlib
import sys

from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parents[1] / "proto"
PROTO = PROTO_ROOT / "roomcast" / "v1" / "roomcast.proto"


def generate(out: pathlib.Path) -> None:
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {PROTO}")


if __name__ == "__main__":
    generate(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "src")
