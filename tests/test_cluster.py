"""Cluster access (fmadask.cluster) and the deployment files (deploy/).

Real parts: a ``dask scheduler`` process with TLS, sockets, dask-jobqueue's job script, the
YAML/compose/Dockerfile texts themselves. Docker, SLURM and Kubernetes cannot run here; their
files are checked for what the tools would read.
"""
from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import dask
import pytest
import yaml

from external_cluster import TLSFiles, external_cluster, make_tls_files
from fmadask.cluster import get_client, make_security, worker_environ
from fmadask.errors import ClusterError, ConfigError
from fmadask.jobspec import load_job

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
WORKER_ENV_KEY, WORKER_ENV_VALUE = next(iter(worker_environ().items()))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_one_line(message: str, *words: str) -> None:
    assert "\n" not in message.strip(), message
    for word in words:
        assert word in message, message


# ---------------------------------------------------------------------------- addresses


def test_unreachable_scheduler_fails_fast_with_one_line() -> None:
    address = f"tcp://127.0.0.1:{_closed_port()}"
    with pytest.raises(ClusterError) as info:
        with get_client(address, connect_timeout=1.0, quiet=True):
            pass
    _assert_one_line(str(info.value), address, "scheduler is running")


@pytest.fixture
def not_dask() -> Iterator[str]:
    """A TCP service that answers like a web server, not a Dask scheduler."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" * 4)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(timeout=10)
    server.close()


def test_another_service_on_the_port_is_a_cluster_error(not_dask: str) -> None:
    with pytest.raises(ClusterError) as info:
        with get_client(not_dask, connect_timeout=2.0, quiet=True):
            pass
    _assert_one_line(str(info.value), not_dask)


def test_make_security_needs_all_three_files(tmp_path: Path) -> None:
    assert make_security() is None
    with pytest.raises(ConfigError, match="--tls-key"):
        make_security(tmp_path / "ca.pem", tmp_path / "node.pem")
    with pytest.raises(ConfigError, match="not found"):
        make_security(tmp_path / "ca.pem", tmp_path / "node.pem", tmp_path / "node.key")


# ---------------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, TLSFiles]]:
    """A ``dask scheduler`` process speaking TLS only (no workers: connecting is the point)."""
    folder = tmp_path_factory.mktemp("tls-scheduler")
    tls = make_tls_files(folder / "certs")
    with external_cluster(folder, workers=0, tls=tls) as address:
        yield address, tls


def test_tls_client_with_certificates_connects(tls_scheduler: tuple[str, TLSFiles]) -> None:
    address, tls = tls_scheduler
    assert address.startswith("tls://")
    security = make_security(tls.ca, tls.cert, tls.key)
    with get_client(address, security=security, quiet=True, worker_timeout=None) as client:
        assert client.scheduler_info()["address"] == address


def test_tls_certificates_from_the_dask_config(tls_scheduler: tuple[str, TLSFiles]) -> None:
    address, tls = tls_scheduler
    config = {"distributed.comm.tls.ca-file": str(tls.ca),
              "distributed.comm.tls.client.cert": str(tls.cert),
              "distributed.comm.tls.client.key": str(tls.key)}
    with dask.config.set(config), get_client(address, quiet=True,
                                             worker_timeout=None) as client:
        assert client.scheduler_info()["address"] == address


def test_tls_client_without_certificate_is_refused(tls_scheduler: tuple[str, TLSFiles]) -> None:
    address, _ = tls_scheduler
    with pytest.raises(ClusterError) as info:
        with get_client(address, connect_timeout=5.0, quiet=True):
            pass
    _assert_one_line(str(info.value), address, "--tls-ca")


def test_tls_client_with_another_ca_is_refused(tls_scheduler: tuple[str, TLSFiles],
                                               tmp_path: Path) -> None:
    address, _ = tls_scheduler
    other = make_tls_files(tmp_path / "other", name="other")
    with pytest.raises(ClusterError) as info:
        with get_client(address, security=make_security(other.ca, other.cert, other.key),
                        connect_timeout=5.0, quiet=True):
            pass
    _assert_one_line(str(info.value), address, "refused this client's TLS certificate")


def test_plain_tcp_to_a_tls_scheduler_is_a_cluster_error(
        tls_scheduler: tuple[str, TLSFiles]) -> None:
    address, _ = tls_scheduler
    plain = address.replace("tls://", "tcp://")
    with pytest.raises(ClusterError) as info:
        with get_client(plain, connect_timeout=3.0, quiet=True):
            pass
    _assert_one_line(str(info.value), plain, "tls://")


# ------------------------------------------------------------------------ optional extras


@pytest.mark.parametrize("kind, modules, extra", [
    ("slurm", ["dask_jobqueue"], "fmadask[slurm]"),
    ("kubernetes", ["dask_kubernetes", "dask_kubernetes.operator"], "fmadask[kubernetes]"),
])
def test_missing_extra_names_it(kind: str, modules: list[str], extra: str,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(ClusterError) as info:
        with get_client(kind, workers=1, quiet=True):
            pass
    _assert_one_line(str(info.value), kind, extra)


def test_slurm_job_script_from_deploy_config() -> None:
    """The worker job script of deploy/slurm/jobqueue.yaml (the site's settings) and a spec's
    [cluster] section (the jobs' size), as dask-jobqueue renders it (nothing submitted)."""
    pytest.importorskip("dask_jobqueue", reason="the 'slurm' extra (dask-jobqueue) is needed")
    from fmadask import slurm
    from fmadask.cluster import import_extra, slurm_prologue

    # as Dask reads a YAML file: merged key by key into the defaults (set() would replace them)
    config = {f"jobqueue.slurm.{key}": value for key, value in
              yaml.safe_load((DEPLOY / "slurm" / "jobqueue.yaml").read_text())["jobqueue"]
              ["slurm"].items()}
    with dask.config.set(config):
        settings = slurm.job_settings({"cores": 8, "processes": 8, "memory": "2GiB",
                                       "queue": "cpu", "walltime": "01:00:00",
                                       "lifetime": "auto"})
        script = slurm.job_script(settings, slurm_prologue({}), import_extra("slurm"))
    assert "#SBATCH -p cpu" in script
    assert "#SBATCH -t 01:00:00" in script
    assert "#SBATCH --cpus-per-task=8" in script
    # 8 worker processes of one thread each, 2 GiB each: a job of 16 GiB
    assert "--nworkers 8" in script and "--nthreads 1" in script
    assert "#SBATCH --mem=16G" in script
    assert 'source "${FMADASK_VENV:-$HOME/fmadask/.venv}/bin/activate"' in script   # the yaml's
    exports = [line for line in script.splitlines() if line.startswith(f"export {WORKER_ENV_KEY}=")]
    assert len(exports) == 1
    # the shell sees exactly the value fmadask's own workers get
    echoed = subprocess.run(["bash", "-c", f"{exports[0]}; printf %s \"${WORKER_ENV_KEY}\""],
                            capture_output=True, text=True, check=True).stdout
    assert echoed == WORKER_ENV_VALUE


def test_slurm_submit_script_is_valid_bash() -> None:
    script = DEPLOY / "slurm" / "submit.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "--scheduler slurm" in text and "DASK_CONFIG=$PWD/deploy/slurm" in text


# ------------------------------------------------------------------------- deploy files


def _yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _containers(pod_spec: dict) -> dict[str, dict]:
    return {c["name"]: c for c in pod_spec["containers"]}


def _check_pod_spec(pod_spec: dict, container: str, claims: set[str]) -> dict:
    """A PodSpec as the operator passes it to Kubernetes: named containers with image and args,
    volume mounts that name declared volumes, PVCs that storage.yaml creates."""
    c = _containers(pod_spec)[container]
    assert c["image"].startswith("fmadask:") and c["args"]
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    for mount in c.get("volumeMounts", []):
        assert mount["name"] in volumes
        assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] in claims
    return c


def _check_dask_cluster_spec(spec: dict, cluster_name: str, claims: set[str]) -> None:
    """``DaskCluster.spec`` (also ``DaskJob.spec.cluster.spec``): the operator's required fields."""
    assert isinstance(spec["worker"]["replicas"], int)
    worker = _check_pod_spec(spec["worker"]["spec"], "worker", claims)
    assert worker["args"][:2] == ["dask", "worker"]
    assert {"name": WORKER_ENV_KEY, "value": WORKER_ENV_VALUE} in worker["env"]
    scheduler = _check_pod_spec(spec["scheduler"]["spec"], "scheduler", claims)
    assert scheduler["args"][:2] == ["dask", "scheduler"]
    port_names = {p["name"] for p in scheduler["ports"]}
    assert {"tcp-comm", "http-dashboard"} <= port_names
    service = spec["scheduler"]["service"]
    assert service["selector"] == {"dask.org/cluster-name": cluster_name,
                                   "dask.org/component": "scheduler"}
    ports = {p["name"]: p for p in service["ports"]}
    assert ports["tcp-comm"]["port"] == 8786 and ports["tcp-comm"]["targetPort"] in port_names


@pytest.fixture(scope="module")
def claims() -> set[str]:
    docs = _yaml_docs(DEPLOY / "kubernetes" / "storage.yaml")
    assert all(d["kind"] == "PersistentVolumeClaim" for d in docs)
    return {d["metadata"]["name"] for d in docs}


def test_kubernetes_daskcluster_manifest(claims: set[str]) -> None:
    (doc,) = _yaml_docs(DEPLOY / "kubernetes" / "daskcluster.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("kubernetes.dask.org/v1", "DaskCluster")
    _check_dask_cluster_spec(doc["spec"], doc["metadata"]["name"], claims)


def test_kubernetes_daskjob_runs_fmadask(claims: set[str]) -> None:
    (doc,) = _yaml_docs(DEPLOY / "kubernetes" / "daskjob.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("kubernetes.dask.org/v1", "DaskJob")
    # the operator names the job's cluster after the DaskJob
    _check_dask_cluster_spec(doc["spec"]["cluster"]["spec"], doc["metadata"]["name"], claims)
    job_pod = doc["spec"]["job"]["spec"]
    assert job_pod["restartPolicy"] == "Never"
    args = _check_pod_spec(job_pod, "job", claims)["args"]
    assert args[:2] == ["fmadask", "run"]
    assert args[args.index("--scheduler") + 1] == "$(DASK_SCHEDULER_ADDRESS)"
    # the job spec and its overrides are valid for fmadask (paths are the pod's, not checked)
    overrides = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    spec = load_job(ROOT / args[2], overrides, check_paths=False)
    assert spec.data.dir.startswith("/work/data") and spec.output.dir.startswith("/work/runs")


def test_kubernetes_gpu_worker_group() -> None:
    (cluster,) = _yaml_docs(DEPLOY / "kubernetes" / "daskcluster.yaml")
    (doc,) = _yaml_docs(DEPLOY / "kubernetes" / "gpu-workergroup.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("kubernetes.dask.org/v1", "DaskWorkerGroup")
    assert doc["spec"]["cluster"] == cluster["metadata"]["name"]
    worker = _containers(doc["spec"]["worker"]["spec"])["worker"]
    assert worker["image"] == "fmadask:cuda"
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "GPU=1" in worker["args"]


def test_compose_file_services() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"scheduler", "cpu-worker", "gpu-worker", "job"} <= set(services)
    assert services["cpu-worker"]["deploy"]["replicas"] == 2
    (device,) = services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["count"] == 1 and "gpu" in device["capabilities"]
    for name in ("cpu-worker", "gpu-worker"):
        command = services[name]["command"]
        assert command[:3] == ["dask", "worker", "tcp://scheduler:8786"]
        assert command[command.index("--nthreads") + 1] == "1"
        assert services[name]["environment"] == {WORKER_ENV_KEY: WORKER_ENV_VALUE}
    assert services["job"]["command"] == ["fmadask", "run", "jobs/demo.toml", "--scheduler",
                                          "tcp://scheduler:8786"]
    for service in services.values():
        if "build" in service:
            assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()


def _pip_installs(lines: list[str]) -> list[list[str]]:
    """The arguments of every ``pip install`` in shell lines, after ``pip``."""
    installs = []
    for line in lines:
        for command in line.split("&&"):
            words = shlex.split(command, comments=True)
            if "pip" in words and "install" in words:
                installs.append(words[words.index("pip") + 1:])
    return installs


def _dockerfile(path: Path) -> list[tuple[str, str]]:
    """``(instruction, arguments)`` of a Dockerfile, continuation lines joined."""
    text = path.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfile_installs_like_setup_sh(name: str) -> None:
    setup = (ROOT / "scripts" / "setup.sh").read_text().splitlines()
    instructions = _dockerfile(DEPLOY / name)
    runs = [args for instruction, args in instructions if instruction == "RUN"]
    assert _pip_installs(runs) == _pip_installs(setup)
    assert len(_pip_installs(setup)) >= 3  # pip upgrade, pinned torch, the package
    envs = " ".join(args for instruction, args in instructions if instruction == "ENV")
    assert f'{WORKER_ENV_KEY}="{WORKER_ENV_VALUE}"' in envs
    for instruction, args in instructions:
        if instruction == "COPY":
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), source


def test_kubernetes_daskjob_s3_shares_no_volume() -> None:
    """The bucket variant: no pod mounts a volume, job and workers get the AWS_* Secret, and
    the job's commands are valid fmadask command lines on s3:// folders."""
    import shlex

    from fmadask.cli import build_parser

    (doc,) = _yaml_docs(DEPLOY / "kubernetes" / "daskjob-s3.yaml")
    (secret,) = _yaml_docs(DEPLOY / "kubernetes" / "s3-secret.yaml")
    assert "volume" not in yaml.safe_dump(doc).lower()
    job = doc["spec"]["job"]["spec"]["containers"][0]
    worker = _containers(doc["spec"]["cluster"]["spec"]["worker"]["spec"])["worker"]
    for container in (job, worker):
        assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "FMA_BUCKET"} <= set(secret["stringData"])
    (script,) = job["args"]
    commands = [shlex.split(c.replace("${FMA_BUCKET}", "b").replace("$DASK_SCHEDULER_ADDRESS",
                                                                     "tcp://s:8786"))
                for c in script.split("&&")]
    assert [c[1] for c in commands] == ["featurize", "train"]
    for command in commands:
        args = build_parser().parse_args(command[1:])
        assert args.scheduler == "tcp://s:8786"
    assert build_parser().parse_args(commands[0][1:]).out.startswith("s3://b/")


def test_compose_s3_variant_shares_no_volume() -> None:
    """The bucket variant of the compose file: no service mounts a volume; the workers and the
    job reach the S3 service through AWS_* only; the job's fmadask lines parse, and its run
    keeps data and run folder in the bucket with the stages a bucket serves."""
    import shlex

    from fmadask.cli import build_parser
    from fmadask.run import run_path

    compose = yaml.safe_load((DEPLOY / "docker-compose.s3.yml").read_text())
    services = compose["services"]
    assert {"s3", "scheduler", "cpu-worker", "job"} <= set(services)
    assert all("volumes" not in service for service in services.values())
    endpoint = f"http://s3:{services['s3']['ports'][0].rsplit(':', 1)[1]}"
    for name in ("cpu-worker", "job"):
        env = services[name]["environment"]
        assert env["AWS_ENDPOINT_URL"] == endpoint and "AWS_SECRET_ACCESS_KEY" in env
        assert "s3" in services[name]["depends_on"]
    assert services["cpu-worker"]["environment"][WORKER_ENV_KEY] == WORKER_ENV_VALUE
    assert services["cpu-worker"]["command"][:3] == ["dask", "worker", "tcp://scheduler:8786"]
    lexer = shlex.shlex(services["job"]["command"][-1], posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, words = [], []
    for token in [*lexer, ";"]:
        if token in (";", "&&", "||", "{", "}"):
            commands, words = commands + [words], []
        else:
            words.append(token)
    runs = [c[1:] for c in commands if c and c[0] == "fmadask"]
    assert [r[0] for r in runs] == ["info", "sample", "run"]
    args = build_parser().parse_args(runs[-1])
    assert args.scheduler == "tcp://scheduler:8786"
    job = Path(args.job.replace("/opt/fmadask/", f"{ROOT}/"))
    spec = load_job(job, args.set, check_paths=False)
    assert spec.data.dir.startswith("s3://fmadask/")
    assert run_path(spec) == "s3://fmadask/runs/demo"     # accepted: no stage it cannot serve


# ------------------------------------------------------------------- a cluster without workers

FMADASK = str(Path(sys.executable).with_name("fmadask"))


@pytest.fixture(scope="module")
def featurized(sample_dir: Path, local_client, tmp_path_factory) -> Path:
    """The session's sample through the real featurize job (features and spectrograms)."""
    from fmadask.pipeline import run_featurize

    out = tmp_path_factory.mktemp("featurized") / "run"
    run_featurize(sample_dir, out=out, client=local_client, progress=False)
    return out


def test_every_command_needing_workers_stops_in_one_line_when_none_join(
        sample_dir: Path, featurized: Path, tmp_path: Path) -> None:
    """A real scheduler nobody started workers for: each command says once that it waits, then
    stops within --worker-timeout in one line naming the scheduler and the fix (featurize used
    to wait forever, train blamed free space)."""
    spec = tmp_path / "job.toml"
    spec.write_text(f'[job]\nname = "noworkers"\n[data]\ndir = "{sample_dir}"\n'
                    f'[output]\ndir = "{tmp_path / "run"}"\n')
    with external_cluster(tmp_path / "cluster", workers=0) as address:
        commands = {
            "featurize": ["featurize", str(sample_dir), "--out", str(tmp_path / "f"),
                          "--scheduler", address, "--worker-timeout", "2"],
            "train": ["train", str(featurized), "--out", str(tmp_path / "c"), "--scheduler",
                      address, "--worker-timeout", "2"],
            "cnn": ["cnn", str(featurized), "--out", str(tmp_path / "n"), "--scheduler",
                    address, "--worker-timeout", "2"],
            "run": ["run", str(spec), "--scheduler", address, "--set",
                    "cluster.worker_timeout=2"],
        }
        env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
        procs = {name: subprocess.Popen([FMADASK, *args], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=env)
                 for name, args in commands.items()}
        try:
            done = {name: (p.communicate(timeout=300), p.returncode) for name, p in procs.items()}
        finally:
            for p in procs.values():
                p.kill()
    for name, ((_, err), code) in done.items():
        lines = err.strip().splitlines()
        assert code == 2, (name, err)
        assert sum("waiting up to 2 s for Dask workers" in line for line in lines) == 1, (name, err)
        last = lines[-1]
        assert last.startswith("fmadask: no Dask worker joined"), (name, err)
        for word in (address, f"dask worker {address}", "--worker-timeout"):
            assert word in last, (name, last)
        assert "Traceback" not in err, (name, err)


def test_dashboard_link_is_printed_only_where_one_is_served(tmp_path: Path, caplog) -> None:
    """A scheduler without bokeh still announces a dashboard, whose page only says that bokeh is
    missing: its link is printed only where bokeh serves the dashboard."""
    import importlib.util
    import logging

    served = importlib.util.find_spec("bokeh") is not None   # the scheduler runs in this venv
    with external_cluster(tmp_path / "cluster", workers=0) as address:
        with caplog.at_level(logging.INFO, logger="fmadask.cluster"):
            with get_client(address, worker_timeout=None) as client:
                link = client.dashboard_link
    assert link.startswith("http://127.0.0.1:")     # announced all the same
    printed = [r.getMessage() for r in caplog.records if "Dask dashboard" in r.getMessage()]
    assert printed == ([f"Dask dashboard: {link}"] if served else []), printed


def test_closing_our_local_cluster_tolerates_dask_running_out_of_time_to_reap_a_worker():
    # On a loaded machine Dask SIGKILLs a worker slow to exit and then waits about a second for
    # the process to be reaped; that wait ran out in a test session at load 15 and the command,
    # its work done, ended in a TimeoutError traceback. The workers are killed: not a failure.
    import psutil
    from distributed import Client, LocalCluster

    from fmadask.cluster import _close, worker_config

    class SlowToReap(LocalCluster):
        def close(self, *args, **kwargs):
            super().close(*args, **kwargs)
            raise TimeoutError        # as distributed's nanny raises it after its kill

    # fmadask's worker config, as get_client's: a plain LocalCluster's nanny would set Dask's
    # MALLOC_TRIM_THRESHOLD_ in this process's environment, for every later test's workers.
    with dask.config.set(worker_config()):
        cluster = SlowToReap(n_workers=1, threads_per_worker=1, processes=True,
                             dashboard_address=":0")
    client = Client(cluster)
    pids = list(client.run(os.getpid).values())
    _close(client, cluster, quietly=False)
    assert client.status == "closed"
    assert "MALLOC_TRIM_THRESHOLD_" not in os.environ
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                   for p in pids)
