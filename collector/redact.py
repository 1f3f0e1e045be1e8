"""Redaction of secrets before anything is stored or exported.

The patterns run over JSON *text* (the serialised payload). No pattern can match a double quote
or end inside an escape sequence, so replacing a match keeps the JSON valid.

Speed matters (every event passes here): each pattern has literal triggers, and a pattern runs
only when one of its triggers occurs in the lower-cased text. One Aho-Corasick pass (C) finds
every trigger at once; most payloads contain none and cost a few microseconds.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import ahocorasick

MARK = "[REDACTED:{}]"

# Lower-case substrings of every name _NAME matches (and of the --flags of cli_secret).
_NAME_WORDS = ("pass", "secret", "token", "key", "credential")
# A name that marks the value after `=`/`:` as a secret, matched from its keyword on.
_NAME = (
    r"(?i:passw(?:or)?d|passphrase|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|credential|(?:account|storage)[_-]?key|auth[_-]?key)[A-Za-z0-9_.-]{0,40}"
)  # the bounded tail keeps matching linear: `[..]*` backtracked over long runs (quadratic)
# ... as a JSON key, but for a count of tokens (input_tokens, max_tokens, token_count: usage).
_JSON_NAME = _NAME.replace("|token|", r"|token(?!s\b|_count)|")

# (kind, pattern, lower-case triggers). Order matters: specific token formats first.
_PATTERNS: list[tuple[str, str, tuple[str, ...]]] = [
    (
        "private_key",
        # The body stops at the next "-----" or the end of the JSON string (escapes taken whole),
        # so each BEGIN scans only its own block: a lazy scan to a distant END was quadratic.
        # A BEGIN without an END (a key cut short) is hidden up to the end of the string.
        r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----(?:[^\"\\-]|\\.|-(?!----))*"
        r"(?:-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)?",
        ("private key",),
    ),
    ("anthropic_key", r"\bsk-ant-[A-Za-z0-9_-]{20,}", ("sk-",)),
    ("openai_key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}", ("sk-",)),
    (
        "aws_access_key",
        r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[A-Z0-9]{16}\b",
        ("akia", "asia", "agpa", "aida", "aroa"),
    ),
    (
        "github_token",
        r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    ("gitlab_token", r"\bglpat-[A-Za-z0-9_-]{20,}", ("glpat-",)),
    ("slack_token", r"\bxox[abposre]-[A-Za-z0-9-]{10,}", ("xox",)),
    ("slack_webhook", r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+", ("hooks.slack.com",)),
    ("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}", ("aiza",)),
    ("stripe_key", r"\b(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{16,}", ("_live_", "_test_")),
    ("huggingface_token", r"\bhf_[A-Za-z0-9]{30,}", ("hf_",)),
    ("npm_token", r"\bnpm_[A-Za-z0-9]{36}", ("npm_",)),
    ("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", ("eyj",)),
    ("bearer", r"(?<=[Bb]earer )[A-Za-z0-9._~+/=-]{8,}", ("bearer ",)),
    ("basic_auth", r"(?<=[Bb]asic )[A-Za-z0-9+/=]{12,}", ("basic ",)),
    # scheme://user:password@host keeps the user and the host.
    ("url_password", r"(?<=://)(?:[^/\s:@\"\\]+):[^@\s\"\\/]+(?=@)", ("://",)),
    # "password": "value" as a key of the JSON text itself.
    ("json_secret", _JSON_NAME + r"\"\s*:\s*\"(?:[^\"\\]|\\.)+(?=\")", _NAME_WORDS),
    # NAME=value, NAME: value (commands, env files, logs; quotes may be JSON-escaped).
    (
        "assignment",
        _NAME + r"(?:\\\")?\s*[=:]\s*(?:\\\"|')?[^\s\"\\',;&|]{3,}",
        _NAME_WORDS,
    ),
    (
        "cli_secret",
        r"--(?i:password|passwd|token|secret|api-key)[ =][^\s\"\\]{3,}",
        _NAME_WORDS,
    ),
]

_KEEP_NAME = re.compile(r"^(.*?(?:\\\"|\"|')?\s*[=:]\s*(?:\\\"|\"|')?|--[A-Za-z-]+[ =])")


def _keep_name(kind: str) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        # Keep the name so a reader sees *what* was hidden; hide only the value.
        head = _KEEP_NAME.match(match.group(0))
        return (head.group(1) if head else "") + MARK.format(kind)

    return replace


def _url_password(match: re.Match[str]) -> str:
    return match.group(0).split(":", 1)[0] + ":" + MARK.format("url_password")


def _replacer(kind: str) -> str | Callable[[re.Match[str]], str]:
    if kind in {"assignment", "cli_secret", "json_secret"}:
        return _keep_name(kind)
    if kind == "url_password":
        return _url_password
    return MARK.format(kind)


_COMPILED = [
    (re.compile(rx), _replacer(kind), frozenset(triggers)) for kind, rx, triggers in _PATTERNS
]
_TRIGGERS = ahocorasick.Automaton()
for _trigger in {t for _, _, triggers in _PATTERNS for t in triggers}:
    _TRIGGERS.add_word(_trigger, _trigger)
_TRIGGERS.make_automaton()


def redact(text: str) -> str:
    """The text with every recognised secret replaced by a [REDACTED:kind] marker."""
    found = {t for _, t in _TRIGGERS.iter(text.lower())}
    if not found:
        return text
    for regex, replacement, triggers in _COMPILED:
        if not found.isdisjoint(triggers):
            text = regex.sub(replacement, text)
    return text
