"""Socket.IO arguments <-> the API's `args_json` + `attachments`.

`bytes` anywhere in the arguments (inside lists and dicts too) travel as binary
attachments, referenced from the JSON by `{"_placeholder": true, "num": N}`, as
Socket.IO's binary packets do; decoding puts `bytes` back in their place.
"""

from __future__ import annotations

import json
from typing import Any, List, Sequence, Tuple


def to_args(data: Any) -> list:
    """python-socketio's convention: a tuple is several arguments, None is none,
    anything else is one argument."""
    if data is None:
        return []
    if isinstance(data, tuple):
        return list(data)
    return [data]


def encode(args: Sequence[Any]) -> Tuple[str, List[bytes]]:
    """The arguments as a JSON array text and the attachments it references."""
    attachments: List[bytes] = []

    def walk(value: Any) -> Any:
        if isinstance(value, (bytes, bytearray, memoryview)):
            attachments.append(bytes(value))
            return {"_placeholder": True, "num": len(attachments) - 1}
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(item) for item in value]
        return value

    text = json.dumps([walk(arg) for arg in args], separators=(",", ":"))
    return text, attachments


def decode(args_json: str, attachments: Sequence[bytes]) -> list:
    """The arguments of a JSON array text, placeholders replaced by their bytes.

    Raises ValueError when the text is not a JSON array or a placeholder names
    an attachment that is not there."""
    if not args_json:
        return []
    try:
        args = json.loads(args_json)
    except RecursionError:
        raise ValueError("arguments nest too deeply") from None
    if not isinstance(args, list):
        raise ValueError("arguments are not a JSON array")

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            if value.get("_placeholder") is True and isinstance(value.get("num"), int) and len(value) == 2:
                num = value["num"]
                if not 0 <= num < len(attachments):
                    raise ValueError(f"placeholder {num} has no attachment")
                return bytes(attachments[num])
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    try:
        return [walk(arg) for arg in args]
    except RecursionError:
        raise ValueError("arguments nest too deeply") from None


def ack_value(args: list) -> Any:
    """What python-socketio's `call` returns for an ack's arguments: None for
    none, the argument for one, a tuple for several."""
    if not args:
        return None
    if len(args) == 1:
        return args[0]
    return tuple(args)
