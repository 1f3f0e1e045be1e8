"""Each UI of the monitoring stack: its URL and whether its health endpoint answers 2xx.

Usage: python3 scripts/stack_status.py [NAME=HEALTH_URL ...]
Without arguments it checks the stack's defaults on 127.0.0.1. Exits 1 if any check fails.
Stdlib only: it runs with the system python3, before any virtualenv exists.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

# name -> (URL to open in a browser, health endpoint)
DEFAULTS: dict[str, tuple[str, str]] = {
    "collector": ("http://127.0.0.1:4000/docs", "http://127.0.0.1:4000/readyz"),
    "grafana": ("http://127.0.0.1:3000", "http://127.0.0.1:3000/api/health"),
    "prometheus": ("http://127.0.0.1:9090", "http://127.0.0.1:9090/-/ready"),
    "alertmanager": ("http://127.0.0.1:9093", "http://127.0.0.1:9093/-/ready"),
    "loki": ("http://127.0.0.1:3100/ready", "http://127.0.0.1:3100/ready"),
    "tempo": ("http://127.0.0.1:3200/ready", "http://127.0.0.1:3200/ready"),
    "otel-collector": ("http://127.0.0.1:13133", "http://127.0.0.1:13133/"),
}


def check(url: str, timeout: float = 3.0) -> str:
    """'ok', or why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return "ok" if 200 <= response.status < 300 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"down ({reason})"


def main(argv: list[str]) -> int:
    targets = DEFAULTS
    if argv:
        targets = {}
        for arg in argv:
            name, _, url = arg.partition("=")
            targets[name] = (url, url)
    failed = 0
    for name, (ui, health) in targets.items():
        status = check(health)
        failed += status != "ok"
        print(f"{name:<15} {ui:<35} {status}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
