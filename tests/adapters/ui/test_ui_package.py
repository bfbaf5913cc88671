"""The inspector without a browser: admin keys (CLI, old databases), `memstore ui`, the mount in `memstore serve`,
and the wheel shipping its templates and static files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from sqlalchemy import inspect, text
from typer.testing import CliRunner

from memstore.cli.serve import keys_app
from memstore.storage.embed import HashEmbedder

ROOT = Path(__file__).resolve().parents[3]
UI = ROOT / "adapters" / "ui"
runner = CliRunner()


def test_admin_keys_from_the_cli(tmp_path: Path) -> None:
    home = str(tmp_path / "h")
    made = runner.invoke(keys_app, ["create", "--name", "ops", "--admin", "--home", home, "--json"])
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout)["admin"] is True
    plain = runner.invoke(keys_app, ["create", "--name", "app", "--home", home])
    assert "admin" not in plain.stderr
    listed = json.loads(runner.invoke(keys_app, ["list", "--home", home, "--json"]).stdout)
    assert [(k["name"], k["admin"]) for k in listed] == [("ops", True), ("app", False)]
    table = runner.invoke(keys_app, ["list", "--home", home]).stdout
    assert "admin" in table and re.search(r"ops .*yes", table) and not re.search(r"app .*yes", table)


def test_a_keys_table_from_before_admin_keys_gains_the_column(tmp_path: Path) -> None:
    from memstore.adapters.server.keys import KeyStore, digest
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as conn:  # the table as the proxy first created it
        conn.execute(text("CREATE TABLE proxy_keys (id VARCHAR(64) PRIMARY KEY, name VARCHAR(100) NOT NULL, "
                          "prefix VARCHAR(32) NOT NULL UNIQUE, hash VARCHAR(64) NOT NULL, namespace VARCHAR(256), "
                          "created_at DATETIME NOT NULL, revoked_at DATETIME, last_used_at DATETIME)"))
        conn.execute(text("INSERT INTO proxy_keys VALUES ('k1', 'old', 'aaaaaaaaaaaa', :h, NULL, "
                          "'2025-01-01 00:00:00', NULL, NULL)"), {"h": digest("aaaaaaaaaaaa", "s" * 30)})
    store = KeyStore(engine)
    assert "admin" in {c["name"] for c in inspect(engine).get_columns("proxy_keys")}
    old = store.verify("msk_aaaaaaaaaaaa_" + "s" * 30)
    assert old is not None and old.admin is False  # still a proxy key, not an admin
    KeyStore(engine)  # idempotent
    assert store.create("new", admin=True)[0].admin is True


def test_memstore_ui_command(tmp_path: Path) -> None:
    env = {**os.environ, "MEMSTORE_HOME": str(tmp_path / "nothing-here")}
    out = subprocess.run([sys.executable, "-m", "memstore.cli", "ui", "--help"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0 and "--admin" in out.stdout and "--database-url" in out.stdout
    missing = subprocess.run([sys.executable, "-m", "memstore.cli", "ui", "--port", "1"], capture_output=True,
                             text=True, env=env, timeout=120)
    assert missing.returncode == 1 and "no memstore at" in missing.stderr and "Traceback" not in missing.stderr
    bad = subprocess.run([sys.executable, "-m", "memstore.cli", "ui", "--extractor", "magic"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "--extractor" in bad.stderr


def test_memstore_serve_serves_the_inspector(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient
    from memstore.adapters.server.app import create_app
    from memstore.adapters.server.keys import open_keys
    from memstore.adapters.server.state import ServerSettings

    home = str(tmp_path / "srv")
    settings = ServerSettings(home=home, embedder=HashEmbedder(), worker=False, warmup=False)
    keys = open_keys(home=home)
    _row, admin = keys.create("ops", admin=True)
    _row, proxy = keys.create("app")
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        page = client.get("/ui/login")
        assert page.status_code == 200 and "frame-ancestors 'none'" in page.headers["content-security-policy"]
        token = re.search(r'name="token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        refused = client.post("/ui/login", data={"key": proxy, "token": token}, headers={"Origin": "http://127.0.0.1"})
        assert refused.status_code == 403 and "no admin scope" in refused.text
        page = client.get("/ui/login")
        token = re.search(r'name="token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        signed = client.post("/ui/login", data={"key": admin, "token": token}, headers={"Origin": "http://127.0.0.1"})
        assert signed.status_code == 200 and "<h1>Users</h1>" in signed.text
        assert "msk_" not in "".join(client.cookies.values())
        # both keys still work for the proxy
        for key in (admin, proxy):
            assert client.get("/v1/memory/users", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert client.get("/v1/memory/users").status_code == 401


def test_the_wheel_ships_the_templates_and_static_files(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("memstore-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {f"memstore/adapters/ui/{p.relative_to(UI).as_posix()}" for p in UI.rglob("*")
              if p.is_file() and "__pycache__" not in p.parts}
    assert {"memstore/adapters/ui/templates/base.html", "memstore/adapters/ui/static/htmx.min.js",
            "memstore/adapters/ui/static/htmx.LICENSE", "memstore/cli/ui.py"} <= names
    assert wanted <= names, sorted(wanted - names)
