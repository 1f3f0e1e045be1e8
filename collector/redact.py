"""Redaction of secrets before anything is stored or exported.

The patterns run over JSON *text* (the serialised payload) in one pass. No pattern can match a
double quote or end inside an escape sequence, so replacing a match keeps the JSON valid.
"""

from __future__ import annotations

import re

MARK = "[REDACTED:{}]"

# Names that mark the value after `=`/`:` (or a JSON key's string value) as a secret.
_SECRET_NAME = (
    r"[A-Za-z0-9_.-]*(?:passw(?:or)?d|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key"
    r"|private[_-]?key|client[_-]?secret|auth[_-]?key|credential|accountkey)[A-Za-z0-9_.-]*"
)

_PATTERNS: list[tuple[str, str]] = [
    (
        "private_key",
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[^\"]*?-----END [A-Z0-9 ]*PRIVATE KEY"
        r"(?: BLOCK)?-----",
    ),
    ("anthropic_key", r"\bsk-ant-[A-Za-z0-9_-]{20,}"),
    ("openai_key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
    ("aws_access_key", r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[A-Z0-9]{16}\b"),
    ("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})"),
    ("gitlab_token", r"\bglpat-[A-Za-z0-9_-]{20,}"),
    ("slack_token", r"\bxox[abposre]-[A-Za-z0-9-]{10,}"),
    ("slack_webhook", r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+"),
    ("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}"),
    ("stripe_key", r"\b(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{16,}"),
    ("huggingface_token", r"\bhf_[A-Za-z0-9]{30,}"),
    ("npm_token", r"\bnpm_[A-Za-z0-9]{36}"),
    ("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    ("bearer", r"(?<=\b[Bb]earer )[A-Za-z0-9._~+/=-]{8,}"),
    ("basic_auth", r"(?<=\b[Bb]asic )[A-Za-z0-9+/=]{12,}"),
    # scheme://user:password@host keeps the user and host.
    ("url_password", r"(?<=://)(?:[^/\s:@\"\\]+):[^@\s\"\\/]+(?=@)"),
    # "password": "value" inside the JSON text itself.
    ("json_secret", r"(?<=\")(?i:" + _SECRET_NAME + r")\"\s*:\s*\"(?:[^\"\\]|\\.)+(?=\")"),
    # NAME=value, NAME: value, --password value in commands, env files and logs.
    (
        "assignment",
        r"\b(?i:" + _SECRET_NAME + r")(?:\\\")?\s*[=:]\s*(?:\\\"|')?[^\s\"\\',;&|]{3,}",
    ),
    ("cli_secret", r"--(?i:password|passwd|token|secret|api-key)[ =][^\s\"\\]{3,}"),
]

_REGEX = re.compile("|".join(f"(?P<{name}>{rx})" for name, rx in _PATTERNS))
_KEEP_NAME = re.compile(r"^(.*?(?:\\\"|\"|')?\s*[=:]\s*(?:\\\"|\"|')?|--[a-z-]+[ =])", re.I)


def _replace(match: re.Match[str]) -> str:
    kind = match.lastgroup or "secret"
    if kind in {"assignment", "cli_secret", "json_secret"}:
        # Keep the name so a reader sees *what* was hidden, hide only the value.
        head = _KEEP_NAME.match(match.group(0))
        prefix = head.group(1) if head else ""
        return prefix + MARK.format(kind)
    if kind == "url_password":
        user = match.group(0).split(":", 1)[0]
        return f"{user}:{MARK.format(kind)}"
    return MARK.format(kind)


def redact(text: str) -> str:
    """The text with every recognised secret replaced by a [REDACTED:kind] marker."""
    return _REGEX.sub(_replace, text)


def kinds() -> list[str]:
    return [name for name, _ in _PATTERNS]
