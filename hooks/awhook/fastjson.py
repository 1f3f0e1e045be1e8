"""JSON without importing `json` on the hot path.

`import json` pulls in `re` and `enum` and costs about as much as the interpreter's own start-up
(measured: ~9 ms on a 2-core VM with `python3 -S`). The C accelerator `_json` that `json` itself
uses does the work; only the error path imports `json.decoder` (for JSONDecodeError). Any other
interpreter falls back to the `json` module.
"""

from __future__ import annotations

TYPE_CHECKING = False  # `typing` costs ~10 ms to import: annotations only

if TYPE_CHECKING:
    from typing import Any

try:
    import _json

    class _Context:
        strict = (
            False  # raw control characters inside strings are accepted, as json.loads(strict=False)
        )
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int

        @staticmethod
        def parse_constant(name: str) -> float:
            return float(name.replace("Infinity", "inf"))

    def _default(obj: Any) -> Any:
        raise TypeError(f"not JSON serializable: {type(obj).__name__}")

    # typeshed wants a json.JSONDecoder; the C scanner only reads the attributes above.
    _scan = _json.make_scanner(_Context())  # type: ignore[arg-type]
    _encode = _json.make_encoder(
        None, _default, _json.encode_basestring_ascii, None, ":", ",", False, False, True
    )

    def loads(text: str) -> Any:
        start = len(text) - len(text.lstrip())
        try:
            obj, end = _scan(text, start)
        except Exception:  # bad input: let `json` produce the proper error
            import json

            return json.loads(text, strict=False)
        if text[end:].strip():
            raise ValueError("extra data after the JSON document")
        return obj

    def dumps(obj: Any) -> str:
        return "".join(_encode(obj, 0))

except (ImportError, AttributeError, TypeError):  # pragma: no cover - non-CPython interpreters
    import json

    def loads(text: str) -> Any:
        return json.loads(text, strict=False)

    def dumps(obj: Any) -> str:
        return json.dumps(obj, separators=(",", ":"))
