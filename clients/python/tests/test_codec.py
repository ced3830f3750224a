"""Arguments <-> args_json + attachments, without a server."""

import pytest

from roomcast import _codec


def test_bytes_become_placeholders_and_back():
    args = [{"a": b"\x00\x01", "b": [1, bytearray(b"x")]}, b"", "text"]
    text, attachments = _codec.encode(args)
    assert attachments == [b"\x00\x01", b"x", b""]
    assert '"_placeholder":true' in text
    assert _codec.decode(text, attachments) == [{"a": b"\x00\x01", "b": [1, b"x"]}, b"", "text"]


def test_python_socketio_argument_conventions():
    assert _codec.to_args(None) == []
    assert _codec.to_args((1, 2)) == [1, 2]
    assert _codec.to_args([1, 2]) == [[1, 2]]
    assert _codec.ack_value([]) is None
    assert _codec.ack_value(["x"]) == "x"
    assert _codec.ack_value([1, 2]) == (1, 2)


@pytest.mark.parametrize(
    "text", ['{"a":1}', "[", '[{"_placeholder":true,"num":3}]', "[" * 100_000 + "]" * 100_000, "nul"]
)
def test_bad_arguments_raise_value_error(text):
    with pytest.raises(ValueError):
        _codec.decode(text, [b"only-one"])
