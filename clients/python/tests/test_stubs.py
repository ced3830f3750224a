"""The checked-in stubs (src/roomcast/v1) match what grpcio-tools generates
from proto/roomcast/v1/roomcast.proto; regenerate with generate_stubs.py."""

import importlib.util
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
PACKAGE = HERE.parent


def test_checked_in_stubs_match_the_proto(tmp_path):
    spec = importlib.util.spec_from_file_location("generate_stubs", PACKAGE / "generate_stubs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in (tmp_path / "roomcast" / "v1").iterdir())
    assert generated, "protoc generated nothing"
    for rel in generated:
        checked_in = PACKAGE / "src" / rel
        assert checked_in.exists(), f"{rel} is not checked in; run clients/python/generate_stubs.py"
        assert checked_in.read_text() == (tmp_path / rel).read_text(), (
            f"{rel} is stale; run clients/python/generate_stubs.py"
        )
