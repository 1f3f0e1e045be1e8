"""Create .env from .env.example (first `make up`), then render Alertmanager's files from it.

1. .env: made once from .env.example with a random Grafana admin password; an existing .env is
   left alone. The file is created readable by its owner only.
2. Alertmanager (every `make up`): alerts/alertmanager.yml with its receivers filled in from .env,
   written with the secret files it reads to alerts/secrets/alertmanager/, which compose mounts
   read-only at /etc/alertmanager/secrets.

How a value gets from .env into the config: a line of alerts/alertmanager.yml that ends in a
comment `# ${VAR}` takes its value from VAR. For a `*_file:` key the value goes into the file the
line names (only there: the rendered config names the file); for any other key it replaces the
value in place. `# ${VAR}` is required: when VAR is empty the whole list item holding the line
(one slack/email/webhook config) is left out, so a receiver that is not configured has no
integration and notifies nobody, without an error; `# ${VAR:-}` is optional: only that line is
left out. Keys left with nothing under them are dropped too. The shell's environment wins over
.env, as it does for compose. Stdlib only: it runs before the virtualenv exists.

Permissions: alerts/secrets/ is made owner-only (0700), so other users of this machine cannot
reach the files, while alerts/secrets/alertmanager/ and its files are world-readable (0755/0644)
so that Alertmanager's container user (nobody) can read them through the bind mount, whatever
the uid of whoever ran `make up`.

Usage: python3 scripts/init_env.py [--example PATH] [--env PATH] [--template PATH] [--out DIR]
       [--secrets-path DIR] [--no-alertmanager]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Variables generated when empty: passwords, never a default (POSTGRES_PASSWORD: `make up TEAM=1`).
GENERATED = ("GF_ADMIN_PASSWORD", "POSTGRES_PASSWORD")
# Where compose mounts alerts/secrets/alertmanager/ in the Alertmanager container; the secret
# files named in alerts/alertmanager.yml live there.
SECRETS_MOUNT = "/etc/alertmanager/secrets"
CONFIG_NAME = "alertmanager.yml"
KEEP = {".gitignore"}

MARKER = re.compile(r"^(?P<body>.*?)\s+#\s*\$\{(?P<var>[A-Z][A-Z0-9_]*)(?P<optional>:-)?\}\s*$")
KEY = re.compile(r"^(?P<lead>\s*(?:-\s+)?)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<value>.*)$")


def render(example: str) -> str:
    lines = []
    for line in example.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in GENERATED and not value.strip():
            line = f"{key}={secrets.token_urlsafe(24)}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def create_env(example: Path, env: Path) -> None:
    if env.exists():
        print(f">> {env} exists: keeping it")
        have = read_dotenv(env.read_text())
        missing = [k for k in GENERATED if not have.get(k)]
        if missing:  # a .env from before a generated variable existed gets it, once
            with env.open("a") as f:
                f.writelines(f"{k}={secrets.token_urlsafe(24)}\n" for k in missing)
            print(f">> added a random {', '.join(missing)} to {env}")
        return
    text = render(example.read_text())
    fd = os.open(env, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    print(f">> created {env} with a random Grafana admin password (GF_ADMIN_PASSWORD)")


# --- .env ------------------------------------------------------------------------------------


def read_dotenv(text: str) -> dict[str, str]:
    """KEY=value lines as compose reads them: comments, `export`, quotes, ` #` comments."""
    out = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].strip()
        out[key.strip()] = value
    return out


def settings(env_file: Path, environ: Mapping[str, str]) -> dict[str, str]:
    values = read_dotenv(env_file.read_text()) if env_file.exists() else {}
    values.update(environ)
    return {k: v.strip() for k, v in values.items()}


# --- alerts/alertmanager.yml -> rendered config + secret files -------------------------------


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _item_span(lines: list[str], index: int) -> tuple[int, int]:
    """[start, end) of the innermost YAML list item that holds line `index`."""
    own = _indent(lines[index])
    for start in range(index, -1, -1):
        line = lines[start]
        dash = _indent(line)
        if line.lstrip().startswith("- ") and (start == index or dash < own):
            end = start + 1
            while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > dash):
                end += 1
            return start, end
    raise ValueError(f"line {index + 1}: a required ${{VAR}} marker outside a list item")


def _prune_empty_keys(lines: list[str]) -> list[str]:
    """Drop `key:` lines (no value) that have nothing under them, until none is left."""
    while True:
        for i, line in enumerate(lines):
            found = KEY.match(line)
            if not found or found.group("value").split("#")[0].strip():
                continue
            depth = len(found.group("lead"))
            following = [n for n in lines[i + 1 :] if n.strip() and not n.lstrip().startswith("#")]
            if not following or _indent(following[0]) <= depth:
                lines = lines[:i] + lines[i + 1 :]
                break
        else:
            return lines


def render_alertmanager(
    template: str, values: Mapping[str, str], secrets_path: str = SECRETS_MOUNT
) -> tuple[str, dict[str, str]]:
    """(rendered alertmanager.yml, {secret file name: content}) for these settings."""
    lines = template.splitlines()
    drop: set[int] = set()
    files: dict[str, str] = {}
    for i, line in enumerate(lines):
        marked = MARKER.match(line)
        if not marked:
            continue
        value = values.get(marked.group("var"), "")
        if not value:
            if marked.group("optional"):
                drop.add(i)
            else:
                start, end = _item_span(lines, i)
                drop.update(range(start, end))
            continue
        found = KEY.match(marked.group("body"))
        if not found:
            raise ValueError(f"line {i + 1}: a ${{VAR}} marker on a line without a key")
        lead, key = found.group("lead"), found.group("key")
        if key.endswith("_file"):
            path = found.group("value").strip().strip("'\"")
            directory, _, name = path.rpartition("/")
            if directory != SECRETS_MOUNT or not name:
                raise ValueError(f"line {i + 1}: secret files live in {SECRETS_MOUNT}/")
            files[name] = value
            lines[i] = f"{lead}{key}: {secrets_path}/{name}"
        else:
            # A JSON string is a valid YAML double-quoted scalar: any value stays one string.
            lines[i] = f"{lead}{key}: {json.dumps(value)}"
    kept = _prune_empty_keys([line for i, line in enumerate(lines) if i not in drop])
    header = (
        "# Rendered by scripts/init_env.py from alerts/alertmanager.yml and .env (make up):\n"
        "# do not edit, edit those and run `make up` again.\n"
    )
    return header + "\n".join(kept) + "\n", files


def notifying(config: str) -> dict[str, list[str]]:
    """Receiver name -> the integrations it has (slack, email, webhook) in a rendered config."""
    out: dict[str, list[str]] = {}
    receiver = None
    for line in config.splitlines():
        name = re.match(r"^  - name: (\S+)", line)
        kind = re.match(r"^    (\w+)_configs:", line)
        if line.startswith("receivers:"):
            receiver = ""
        elif receiver is not None and name:
            receiver = name.group(1)
            out[receiver] = []
        elif receiver and kind:
            out[receiver].append(kind.group(1))
    return out


def _write(path: Path, text: str) -> None:
    """Atomically, so a running Alertmanager never reads half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_alertmanager(
    template: Path, values: Mapping[str, str], out: Path, secrets_path: str = SECRETS_MOUNT
) -> dict[str, list[str]]:
    config, files = render_alertmanager(template.read_text(), values, secrets_path)
    out.parent.mkdir(mode=0o700, exist_ok=True)
    os.chmod(out.parent, 0o700)
    out.mkdir(mode=0o755, exist_ok=True)
    os.chmod(out, 0o755)
    for name, content in files.items():
        _write(out / name, content)
    _write(out / CONFIG_NAME, config)
    # A secret removed from .env must not stay behind.
    for stale in out.iterdir():
        if stale.is_file() and stale.name not in {*files, CONFIG_NAME, *KEEP}:
            stale.unlink()
    return notifying(config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", type=Path, default=REPO / ".env.example")
    parser.add_argument("--env", type=Path, default=REPO / ".env")
    parser.add_argument("--template", type=Path, default=REPO / "alerts" / CONFIG_NAME)
    parser.add_argument("--out", type=Path, default=REPO / "alerts" / "secrets" / "alertmanager")
    parser.add_argument(
        "--secrets-path",
        default=SECRETS_MOUNT,
        help="where Alertmanager finds --out (the compose mount; a host path to run it directly)",
    )
    parser.add_argument("--no-alertmanager", action="store_true", help="only create .env")
    args = parser.parse_args(argv)
    create_env(args.example, args.env)
    if args.no_alertmanager:
        return 0
    try:
        receivers = write_alertmanager(
            args.template, settings(args.env, os.environ), args.out, args.secrets_path
        )
    except PermissionError as err:
        print(
            f">> cannot write {err.filename}: if Docker created it (a `docker compose up` before"
            f" `make up`), remove it with sudo and run `make up` again",
            file=sys.stderr,
        )
        return 1
    print(f">> rendered {args.out / CONFIG_NAME} and its secret files from {args.env.name}")
    for name, kinds in receivers.items():
        print(f">>   receiver {name:<14} {', '.join(kinds) or '(not configured: notifies nobody)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
