"""Redaction of obvious secrets and size capping, applied before anything reaches the spool.

`re` (with `enum`) costs about 7 ms to import under `python3 -S`, so a cheap substring test on
the raw input decides whether the regular expressions are needed at all: an event that contains
none of the markers below cannot match any pattern.
"""

from __future__ import annotations

TYPE_CHECKING = False  # `typing` costs ~10 ms to import: annotations only

if TYPE_CHECKING:
    from typing import Any, List, Optional, Pattern, Tuple

MAX_STRING_CHARS = 16_384
REDACTED = "[REDACTED]"

# Lower-case substrings that every pattern (and every sensitive key name) needs to match.
_MARKERS = (
    "sk-",
    "akia",
    "asia",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "xox",
    "eyj",
    "bearer",
    "token",
    "private",
    "passw",
    "pwd",
    "secret",
    "key",
    "auth",
    "credential",
    "://",
    "aiza",
    "glpat-",
    "_live_",
    "_test_",
    "npm_",
    "hf_",
)

_SECRET_KEY = (
    r"(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|client[_-]?secret|auth[_-]?token|(?:account|storage)[_-]?key)"
)

_PATTERNS: Optional[List[Tuple[Pattern[str], str]]] = None
_KEY_RE: Optional[Pattern[str]] = None


def _compile() -> List[Tuple[Pattern[str], str]]:
    global _PATTERNS, _KEY_RE
    if _PATTERNS is None:
        import re

        rules = [
            (
                r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?"
                r"(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|\Z)",
                "[REDACTED:private-key]",
            ),
            (r"\bsk-ant-[A-Za-z0-9_-]{8,}", "[REDACTED:anthropic-key]"),
            (r"\bsk-[A-Za-z0-9_-]{16,}", "[REDACTED:api-key]"),
            (r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", "[REDACTED:aws-key]"),
            (r"\bgh[pousr]_[A-Za-z0-9]{30,}", "[REDACTED:github-token]"),
            (r"\bgithub_pat_[A-Za-z0-9_]{20,}", "[REDACTED:github-token]"),
            (r"\bxox[abposr]-[A-Za-z0-9-]{8,}", "[REDACTED:slack-token]"),
            (r"\bglpat-[A-Za-z0-9_-]{20,}", "[REDACTED:gitlab-token]"),
            (r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+", "[REDACTED:slack-webhook]"),
            (r"\bAIza[0-9A-Za-z_-]{35}", "[REDACTED:google-api-key]"),
            (r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}", "[REDACTED:stripe-key]"),
            (r"\bnpm_[A-Za-z0-9]{36}", "[REDACTED:npm-token]"),
            (r"\bhf_[A-Za-z0-9]{30,}", "[REDACTED:huggingface-token]"),
            (r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", "[REDACTED:jwt]"),
            (r"(?i)\b(bearer|token)(\s+)[A-Za-z0-9._~+/-]{12,}=*", r"\1\2" + REDACTED),
            # user:password@ in URLs
            (r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]+:)[^\s@/]+@", r"\1" + REDACTED + "@"),
            # password=..., "api_key": "...", export AWS_SECRET_ACCESS_KEY=...
            (
                # No `\b(?:[a-z0-9]+[_-])*` before the key word: it backtracked quadratically
                # over runs like "a-b_a-b_..."; the name's prefix stays in the text unmatched.
                r"(?i)(" + _SECRET_KEY + r")"
                r"(\\?[\"']?\s*[:=]\s*\\?[\"']?)([^\s\"'\\&,;]{3,})",
                r"\1\2" + REDACTED,
            ),
        ]
        _PATTERNS = [(re.compile(p), r) for p, r in rules]
        _KEY_RE = re.compile(r"(?i)(?:^|[_-])(?:" + _SECRET_KEY + r"|authorization|credentials?)$")
    return _PATTERNS


def needs_redaction(raw_lower: str) -> bool:
    return any(m in raw_lower for m in _MARKERS)


def _cap(text: str) -> str:
    if len(text) <= MAX_STRING_CHARS:
        return text
    return text[:MAX_STRING_CHARS] + f"...[truncated {len(text) - MAX_STRING_CHARS} chars]"


def redact_text(text: str) -> str:
    for pattern, repl in _compile():
        text = pattern.sub(repl, text)
    return text


def clean(obj: Any, redact: bool) -> Any:
    """Copy of a JSON value with long strings capped and, when `redact`, secrets replaced."""
    if isinstance(obj, str):
        text = _cap(obj)
        return redact_text(text) if redact else text
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if redact and isinstance(value, str) and _is_secret_key(key):
                out[key] = REDACTED
            else:
                out[key] = clean(value, redact)
        return out
    if isinstance(obj, list):
        return [clean(v, redact) for v in obj]
    return obj


def _is_secret_key(key: str) -> bool:
    _compile()
    assert _KEY_RE is not None
    return _KEY_RE.search(key) is not None
