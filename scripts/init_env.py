"""Create .env from .env.example with a random Grafana admin password (first `make up`).

An existing .env is left alone. The file is created readable by its owner only.
Usage: python3 scripts/init_env.py [--example PATH] [--env PATH]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Variables generated when empty in the example: the password, never a default.
GENERATED = ("GF_ADMIN_PASSWORD",)


def render(example: str) -> str:
    lines = []
    for line in example.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in GENERATED and not value.strip():
            line = f"{key}={secrets.token_urlsafe(24)}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", type=Path, default=REPO / ".env.example")
    parser.add_argument("--env", type=Path, default=REPO / ".env")
    args = parser.parse_args(argv)
    if args.env.exists():
        print(f">> {args.env} exists: keeping it")
        return 0
    text = render(args.example.read_text())
    fd = os.open(args.env, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    print(f">> created {args.env} with a random Grafana admin password (GF_ADMIN_PASSWORD)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
