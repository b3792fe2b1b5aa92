"""Assemble, start, find and stop one engine node (stdlib only: runs before and outside the test venv).

Layout under `ENGINES_HOME` (default /var/tmp/ddr-engines, readable by the unprivileged user):
`m2/` the Maven cache, `<name>/home` the assembled distribution (kept between runs: assembly is the slow
part), `<name>/data` and `<name>/logs` (fresh at every start), `<name>/node.json` (url, pid) while it runs.
Engines refuse to run as root, so as root the node runs as the system user `ddr-engine` via `runuser`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tests.engines.catalog import ADMIN_PASSWORD, ENGINES, ES_USER, ES_USER_PASSWORD, EngineSpec, JarModule

ENGINES_HOME = Path(os.environ.get("DDR_ENGINES_HOME", "/var/tmp/ddr-engines"))
ENGINE_USER = "ddr-engine"
READY_TIMEOUT_S = 240.0


class EngineError(RuntimeError):
    """A node could not be assembled or started; the message says why (and where its log is)."""


def _run(cmd: list[str], **kwargs: object) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if done.returncode:
        raise EngineError(f"{' '.join(cmd[:4])} ... failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}")


# -- assembly ---------------------------------------------------------------------------------------


def maven_artifact(coordinates: str) -> Path:
    """The artifact's file in our own Maven cache, fetched with `mvn dependency:get` if missing."""
    parts = coordinates.split(":")
    group, artifact, version = parts[:3]
    packaging = parts[3] if len(parts) > 3 else "jar"
    repo = ENGINES_HOME / "m2"
    path = repo / group.replace(".", "/") / artifact / version / f"{artifact}-{version}.{packaging}"
    if not path.exists():
        _run(
            [
                "mvn",
                "-q",
                "-B",
                f"-Dmaven.repo.local={repo}",
                "dependency:get",
                f"-Dartifact={coordinates}",
                "-Dtransitive=false",
            ]
        )
    if not path.exists():
        raise EngineError(f"mvn fetched {coordinates} but {path} is missing")
    return path


def _write_module(home: Path, module: JarModule, spec: EngineSpec) -> None:
    target = home / "modules" / module.name
    target.mkdir(parents=True, exist_ok=True)
    for coordinates in module.jars:
        shutil.copy2(maven_artifact(coordinates), target)
    descriptor = {
        "description": f"{module.name} (assembled from Maven Central jars by tests/engines)",
        "version": spec.version,
        "name": module.name,
        "classname": module.classname,
        "java.version": "11",
        "opensearch.version": spec.version,
        "extended.plugins": module.extends,
        "has.native.controller": "false",
    }
    (target / "plugin-descriptor.properties").write_text("".join(f"{k}={v}\n" for k, v in descriptor.items()))
    if module.policy:
        (target / "plugin-security.policy").write_text(module.policy)


def _unzip_flat(archive: Path, into: Path) -> None:
    """Unzip a distribution whose single top folder becomes `into` (file modes kept: bin/ is executable)."""
    staging = into.with_name(into.name + ".unzip")
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            out = Path(zf.extract(info, staging))
            mode = info.external_attr >> 16
            if mode and not info.is_dir():
                out.chmod(mode & 0o777)
    (top,) = list(staging.iterdir())
    top.rename(into)
    staging.rmdir()


def assembled(spec: EngineSpec) -> bool:
    """Its home was built from this very spec (a changed spec, e.g. TLS turned on, needs a new one)."""
    home = ENGINES_HOME / (spec.home_of or spec.name) / "home"
    with contextlib.suppress(OSError):
        return (home / ".assembled").read_text() == repr(ENGINES[spec.home_of] if spec.home_of else spec)
    return False


def assemble(spec: EngineSpec) -> Path:
    """`<name>/home`: the distribution, its rebuilt modules and plugins; built once, atomically."""
    if spec.home_of:
        return assemble(ENGINES[spec.home_of])
    home = ENGINES_HOME / spec.name / "home"
    if assembled(spec):
        return home
    building = home.with_name("home.building")
    shutil.rmtree(building, ignore_errors=True)
    _unzip_flat(maven_artifact(spec.zip), building)
    for module in spec.modules:
        _write_module(building, module, spec)
    env = {
        **os.environ,
        "JAVA_HOME": spec.java_home,
        "OPENSEARCH_JAVA_HOME": spec.java_home,
        "ES_JAVA_HOME": spec.java_home,
    }
    for plugin in spec.plugins:
        _run(
            [str(building / "bin" / "opensearch-plugin"), "install", "--batch", maven_artifact(plugin).as_uri()],
            env=env,
            cwd=building,
        )
    if spec.distribution == "elasticsearch":
        _secure_elasticsearch(building, env)
        if spec.tls:
            _certify_elasticsearch(building, env)
    elif spec.secure:  # the plugin's own script: demo TLS certificates, security config, admin password
        script = building / "plugins" / "opensearch-security" / "tools" / "install_demo_configuration.sh"
        script.chmod(0o755)
        _run(
            ["bash", str(script), "-y", "-i", "-s"],
            env={**env, "OPENSEARCH_INITIAL_ADMIN_PASSWORD": ADMIN_PASSWORD},
            cwd=building,
        )
    (building / ".assembled").write_text(repr(spec))
    shutil.rmtree(home, ignore_errors=True)
    building.rename(home)
    return home


def _certify_elasticsearch(home: Path, env: dict[str, str]) -> None:
    """config/certs: a CA (`ca.crt`, what clients trust) and the node's HTTP certificate for 127.0.0.1 and
    localhost, made by the distribution's own elasticsearch-certutil (PEM)."""
    certs = home / "config" / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    certutil = str(home / "bin" / "elasticsearch-certutil")
    _run([certutil, "ca", "--pem", "--silent", "--days", "3650", "--out", str(certs / "ca.zip")], env=env, cwd=home)
    with zipfile.ZipFile(certs / "ca.zip") as z:
        (certs / "ca.crt").write_bytes(z.read("ca/ca.crt"))
        (certs / "ca.key").write_bytes(z.read("ca/ca.key"))
    _run(
        [
            certutil,
            "cert",
            "--pem",
            "--silent",
            "--days",
            "3650",
            "--ca-cert",
            str(certs / "ca.crt"),
            "--ca-key",
            str(certs / "ca.key"),
            "--ip",
            "127.0.0.1",
            "--dns",
            "localhost",
            "--name",
            "http",
            "--out",
            str(certs / "http.zip"),
        ],
        env=env,
        cwd=home,
    )
    with zipfile.ZipFile(certs / "http.zip") as z:
        (certs / "http.crt").write_bytes(z.read("http/http.crt"))
        (certs / "http.key").write_bytes(z.read("http/http.key"))
    for made in ("ca.zip", "http.zip", "ca.key"):
        (certs / made).unlink()


def _secure_elasticsearch(home: Path, env: dict[str, str]) -> None:
    """The `elastic` password in the keystore, and a file-realm user holding only the documented role
    (deploy/elasticsearch/security-role.json, its index patterns widened to the tests' `ddr-test-*`)."""
    keystore = home / "bin" / "elasticsearch-keystore"
    _run([str(keystore), "create"], env=env, cwd=home)
    subprocess.run(
        [str(keystore), "add", "-x", "-f", "bootstrap.password"],
        input=ADMIN_PASSWORD + "\n",
        text=True,
        env=env,
        cwd=home,
        check=True,
        capture_output=True,
    )
    role = json.loads(
        (Path(__file__).resolve().parents[2] / "deploy" / "elasticsearch" / "security-role.json").read_text()
    )
    for rule in role["indices"]:
        rule["names"] = [*rule["names"], "ddr-test-*"]
    (home / "config" / "roles.yml").write_text(json.dumps({"ddr_search": role}) + "\n")  # JSON is YAML
    _run(
        [str(home / "bin" / "elasticsearch-users"), "useradd", ES_USER, "-p", ES_USER_PASSWORD, "-r", "ddr_search"],
        env=env,
        cwd=home,
    )


# -- running ----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_USER_LOCK = threading.Lock()  # the nodes boot on parallel threads: two `useradd`s at once raced on a fresh machine


def _engine_user() -> str | None:
    """The user a node runs as: `ddr-engine` (created on demand, once) when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    with _USER_LOCK:
        try:
            pwd.getpwnam(ENGINE_USER)
        except KeyError:
            _run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", ENGINE_USER])
    return ENGINE_USER


def state_file(name: str) -> Path:
    return ENGINES_HOME / name / "node.json"


def _healthy(record: dict[str, object]) -> bool:
    request = urllib.request.Request(f"{record['url']}/_cluster/health")
    context = None
    if record.get("ca_file"):
        context = ssl.create_default_context(cafile=str(record["ca_file"]))
        context.check_hostname = False  # the demo certificate names the node "node-0.example.com"
    if record.get("username"):
        token = base64.b64encode(f"{record['username']}:{record['password']}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as response:
            return json.load(response).get("status") in ("green", "yellow")
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (a killed node started by this process, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return False
    return True


def running(name: str) -> dict[str, object] | None:
    """The running node's record (url, pid, version, ...) or None when it is not up and healthy."""
    path = state_file(name)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not _alive(int(record["pid"])) or not _healthy(record):
        return None
    return record


def start(name: str, *, port: int | None = None, keep_data: bool = False) -> dict[str, object]:
    """Start `name` unless it already runs (idempotent); returns its record once it answers healthy.

    A fresh start wipes the node's data; `restart` passes the old port and `keep_data` (a node coming
    back after a crash, with everything it had acknowledged).
    """
    spec = ENGINES[name]
    if (record := running(name)) is not None and assembled(spec):
        return record
    stop(name)
    home = assemble(spec)
    root = ENGINES_HOME / spec.name
    data, logs = root / "data", root / "logs"
    for folder in (data, logs):
        if not keep_data:
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
    user = _engine_user()
    if user is not None:
        ENGINES_HOME.chmod(0o755)
        root.chmod(0o755)
        _run(["chown", "-R", f"{user}:", str(home), str(root)])
    port = port or _free_port()
    options = {
        "discovery.type": "single-node",
        "network.host": "127.0.0.1",
        "http.port": str(port),
        "transport.port": str(_free_port()),
        "path.data": str(data),
        "path.logs": str(logs),
        "cluster.name": f"ddr-test-{spec.name}",
        "cluster.routing.allocation.disk.threshold_enabled": "false",
        **spec.settings,
    }
    command = [str(home / "bin" / spec.distribution), *[f"-E{k}={v}" for k, v in options.items()]]
    heap = f"-Xms{spec.heap} -Xmx{spec.heap}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "JAVA_HOME": spec.java_home,
        "OPENSEARCH_JAVA_HOME": spec.java_home,
        "OPENSEARCH_JAVA_OPTS": heap,
        "ES_JAVA_HOME": spec.java_home,
        "ES_JAVA_OPTS": heap,
    }
    if user is not None:
        command = ["runuser", "-u", user, "--", *command]
    console = (logs / "console.log").open("ab")
    # cwd: jvm.options writes logs/gc.log relative to it, so each node (even on a shared home) has its own
    process = subprocess.Popen(
        command,
        cwd=root,
        env=env,
        stdout=console,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    record = {
        "name": name,
        "url": f"http://127.0.0.1:{port}",
        "port": port,
        "pid": process.pid,
        "version": spec.version,
        "distribution": spec.distribution,
        "logs": str(logs),
    }
    if spec.distribution == "elasticsearch":
        record.update(username="elastic", password=ADMIN_PASSWORD, user=ES_USER, user_password=ES_USER_PASSWORD)
        if spec.tls:
            record.update(url=f"https://127.0.0.1:{port}", ca_file=str(home / "config" / "certs" / "ca.crt"))
    elif spec.secure:
        record.update(
            url=f"https://127.0.0.1:{port}",
            ca_file=str(home / "config" / "root-ca.pem"),
            username="admin",
            password=ADMIN_PASSWORD,
        )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not _healthy(record):
        if process.poll() is not None:
            raise EngineError(
                f"{name} exited with {process.returncode}; see {logs}/console.log:\n" + _tail(logs / "console.log")
            )
        if time.monotonic() > deadline:
            stop_pid(process.pid)
            raise EngineError(
                f"{name} did not answer within {READY_TIMEOUT_S:.0f} s; see {logs}/console.log:\n"
                + _tail(logs / "console.log")
            )
        time.sleep(0.5)
    state_file(name).write_text(json.dumps(record, indent=2))
    return record


def kill(name: str) -> dict[str, object]:
    """SIGKILL the node (a machine dying: no flush, no goodbye); returns its last record for `restart`."""
    record = json.loads(state_file(name).read_text())
    with contextlib.suppress(ProcessLookupError):
        os.killpg(int(record["pid"]), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _alive(int(record["pid"])) and time.monotonic() < deadline:
        time.sleep(0.1)
    state_file(name).unlink(missing_ok=True)
    return record


def restart(record: dict[str, object]) -> dict[str, object]:
    """Bring a killed node back on the same port with the data it had."""
    return start(str(record["name"]), port=int(record["port"]), keep_data=True)


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def stop_pid(pid: int, timeout_s: float = 30.0) -> None:
    """SIGTERM the node's process group, SIGKILL it after `timeout_s`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)


def _ours(pid: int) -> bool:
    """The pid still runs one of our nodes (a state file left by a dead machine may name a reused pid)."""
    try:
        return str(ENGINES_HOME) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def stop(name: str) -> None:
    path = state_file(name)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if _ours(int(record["pid"])):
        stop_pid(int(record["pid"]))
    path.unlink(missing_ok=True)
