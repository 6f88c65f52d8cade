"""Hardening round 2 (issue 12) in-process on SQLite and PostgreSQL: hostile inputs answer
400 in the envelope, per-account local subtrees, errors that disclose nothing, capped error
responses, Idempotency-Key, secrets read from files or the environment by the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.testclient import TestClient

from destinations.api import create_api_key
from destinations.api.cli import RedactApiKey, redact_api_keys
from tests.api.vaultplugin import VaultStore


def _vault(name: str = "d", **extra: Any) -> dict[str, Any]:
    return {
        "name": name, "enabled": True, "type": "vault", "vault_access_key_id": "AKIDROUND2",
        "vault_secret_key": "round2-secret", "vault_bucket": "ok", **extra,
    }  # fmt: skip


def _envelope_400(response: Any) -> dict[str, Any]:
    assert response.status_code == 400, (response.status_code, response.text[:300])
    info: dict[str, Any] = response.json()["request_info"]
    assert info["success"] is False and isinstance(info["message"], str)
    return info


def _rows(app: Starlette) -> int:
    with app.state.engine.connect() as connection:
        return int(connection.execute(sa.text("SELECT count(*) FROM destinations")).scalar() or 0)


# -- item 6: inputs that answered 500 ---------------------------------------------------------

HOSTILE_BODIES = {
    "lone surrogate in a value": '{"name": "\\ud800", "type": "vault", "enabled": true}',
    "lone surrogate in a key": '{"\\udfff": "x", "name": "n", "type": "vault", "enabled": true}',
    "lone surrogate nested": '{"name": "n", "vault_bucket": ["\\ud800"], "type": "vault"}',
    "5,000-digit integer": '{"name": "n", "enabled": ' + "9" * 5000 + "}",
    "4,000-digit integer": '{"name": "n", "vault_bucket": ' + "7" * 4000 + "}",
    "huge float": '{"name": "n", "enabled": 1e999999}',
    "NaN": '{"name": "n", "enabled": NaN}',
    "nested 5,000 deep": '{"name": ' + "[" * 5000 + "]" * 5000 + "}",
    "nested 30,000 deep": "[" * 30_000 + "]" * 30_000,
}


def test_hostile_json_bodies_answer_400(app: Starlette, api_key: str, vault: object) -> None:
    client = TestClient(app, raise_server_exceptions=False)
    seed = client.post("/destinations", params={"api_key": api_key}, json=_vault("seed"))
    assert seed.status_code == 200
    seed_id = seed.json()["destination"]["id"]
    for label, body in HOSTILE_BODIES.items():
        for method, path in (("POST", "/destinations"), ("PUT", f"/destinations/{seed_id}")):
            response = client.request(
                method, path, params={"api_key": api_key}, content=body.encode(),
                headers={"content-type": "application/json"},
            )  # fmt: skip
            _envelope_400(response)
            assert len(response.content) < 2000, label
    assert _rows(app) == 1


def test_nul_and_bad_unicode_in_query_and_path_answer_400(
    app: Starlette, api_key: str, vault: object
) -> None:
    client = TestClient(app, raise_server_exceptions=False)
    seed = client.post("/destinations", params={"api_key": api_key}, json=_vault("seed"))
    seed_id = seed.json()["destination"]["id"]
    key = api_key
    urls = [
        f"/destinations?api_key={key}&search_term=a%00b",
        f"/destinations?api_key={key}&sort_by=%00",
        f"/destinations?api_key={key}&page=1%00",
        f"/destinations?api_key={key}%00",
        f"/destinations?api_key={key}&x%00y=1",
        f"/destinations/ab%00cd?api_key={key}",
        f"/destinations/{seed_id}%00?api_key={key}",
        f"/destinations?api_key={key}&search_term=%ED%A0%80",
    ]
    for url in urls:
        for method in ("GET", "PUT", "DELETE"):
            if method != "GET" and "/destinations/" not in url:
                continue
            response = client.request(method, url, json={"name": "x"})
            assert response.status_code == 400 or (
                "%ED%A0%80" in url and response.status_code == 200
            ), (method, url, response.text[:200])
            assert response.json()["request_info"]["success"] is (response.status_code == 200)
    post = client.post(f"/destinations?api_key={key}&x=%00", json=_vault("n"))
    _envelope_400(post)
    assert _rows(app) == 1


def test_cli_overlong_path_component_exits_2_without_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "destinations", "verify", "-p", "type=local",
         "-p", f"local_directory={tmp_path}/{'x' * 300}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "local_directory" in done.stderr


def test_overlong_path_component_through_the_api_is_400(
    client: TestClient, api_key: str
) -> None:
    info = _envelope_400(
        client.post("/destinations", params={"api_key": api_key},
                    json={"name": "l", "type": "local", "enabled": True,
                          "local_directory": "y" * 300})
    )  # fmt: skip
    assert list(info["errors"]) == ["local_directory"]


# -- item 3: one subtree per account ----------------------------------------------------------


def test_each_account_writes_in_its_own_subtree(
    client: TestClient, api_key: str, other_key: str, local_root: Path, app: Starlette
) -> None:
    shown = []
    for key in (api_key, other_key):
        response = client.post(
            "/destinations", params={"api_key": key},
            json={"name": "exports", "type": "local", "enabled": True, "local_directory": ".",
                  "local_path_prefix": "exports/"},
        )  # fmt: skip
        assert response.status_code == 200, response.text
        shown.append(response.json()["destination"]["local_directory"])
    assert shown == [".", "."]
    with app.state.engine.connect() as connection:
        stored = connection.execute(
            sa.text("SELECT account_id, params FROM destinations ORDER BY account_id")
        ).all()
    directories = {
        account: (json.loads(p) if isinstance(p, str) else p)["local_directory"]
        for account, p in stored
    }
    assert len(set(directories.values())) == 2
    for account, directory in directories.items():
        assert Path(directory) == (local_root / str(account)).resolve()
    # One account cannot name the other's subtree.
    other_account = max(directories)
    info = _envelope_400(
        client.post("/destinations", params={"api_key": api_key},
                    json={"name": "x", "type": "local", "enabled": False,
                          "local_directory": f"../{other_account}"})
    )  # fmt: skip
    assert list(info["errors"]) == ["local_directory"]


# -- item 7: errors disclose nothing ----------------------------------------------------------


def test_local_directory_errors_do_not_disclose_the_server(
    client: TestClient, api_key: str, local_root: Path, tmp_path: Path
) -> None:
    (tmp_path / "exists-outside").mkdir()
    (local_root / "1").mkdir(exist_ok=True)
    (local_root / "1" / "a-file").write_text("x")
    outside = {}
    for value in (str(tmp_path / "exists-outside"), str(tmp_path / "missing-outside"),
                  "../../exists-outside", "../../missing-outside", "/etc", "/nonexistent"):
        info = _envelope_400(
            client.post("/destinations", params={"api_key": api_key},
                        json={"name": "x", "type": "local", "enabled": False,
                              "local_directory": value})
        )  # fmt: skip
        outside[value] = info["errors"]["local_directory"]
        text = json.dumps(info)
        assert str(tmp_path) not in text and str(local_root) not in text
    # The same message whether or not the directory outside exists.
    assert len(set(outside.values())) == 1, outside
    for value in ("missing-inside", "a-file"):
        info = _envelope_400(
            client.post("/destinations", params={"api_key": api_key},
                        json={"name": "x", "type": "local", "enabled": False,
                              "local_directory": value})
        )  # fmt: skip
        assert str(local_root) not in json.dumps(info)


# -- item 12: capped error responses ----------------------------------------------------------


def test_error_response_names_at_most_20_fields(client: TestClient, api_key: str) -> None:
    # 9,000 unknown fields in a form body under the 64 KiB limit (names of 1 to 3 letters).
    letters = "abcdefghijklmnopqrstuvwxyz"
    names = [a + b + c for a in letters for b in letters for c in letters][:9000]
    raw = ("name=n&type=vault&enabled=true&" + "&".join(f"{n}=" for n in names)).encode()
    assert len(raw) <= 64 * 1024
    response = client.post(
        "/destinations", params={"api_key": api_key}, content=raw,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    info = _envelope_400(response)
    print(f"\nerror size: {len(raw)} byte body with {len(names)} unknown fields -> "
          f"{len(response.content)} byte response")  # fmt: skip
    assert len(info["errors"]) == 20 and info["more_errors"] >= len(names) - 20
    assert f"and {info['more_errors']} more" in info["message"]
    assert len(response.content) < 4096


# -- item 13: Idempotency-Key -----------------------------------------------------------------


def test_idempotency_key_replays_and_refuses_another_body(
    app: Starlette, client: TestClient, api_key: str, other_key: str, vault: type[VaultStore]
) -> None:
    headers = {"Idempotency-Key": "create-7f1c"}
    first = client.post("/destinations", params={"api_key": api_key}, json=_vault("once"),
                        headers=headers)  # fmt: skip
    assert first.status_code == 200
    again = client.post("/destinations", params={"api_key": api_key}, json=_vault("once"),
                        headers=headers)  # fmt: skip
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert _rows(app) == 1
    other = client.post("/destinations", params={"api_key": api_key}, json=_vault("twice"),
                        headers=headers)  # fmt: skip
    assert other.status_code == 409 and other.json()["request_info"]["success"] is False
    assert "Idempotency-Key" in other.json()["request_info"]["message"]
    # Keys are per account; a failed create leaves the key free for a retry.
    theirs = client.post("/destinations", params={"api_key": other_key}, json=_vault("once"),
                         headers=headers)  # fmt: skip
    assert theirs.status_code == 200 and theirs.json() != first.json()
    bad = client.post("/destinations", params={"api_key": api_key},
                      json=_vault("bad", vault_bucket="bad-credentials"),
                      headers={"Idempotency-Key": "retry-me"})  # fmt: skip
    assert bad.status_code == 400
    good = client.post("/destinations", params={"api_key": api_key},
                       json=_vault("bad", vault_bucket="bad-credentials"),
                       headers={"Idempotency-Key": "retry-me"})  # fmt: skip
    assert good.status_code == 400 and good.headers.get("idempotent-replayed") is None
    invalid = client.post("/destinations", params={"api_key": api_key}, json=_vault("x"),
                          headers={"Idempotency-Key": "x" * 256})  # fmt: skip
    _envelope_400(invalid)
    assert _rows(app) == 2
    # Older than 24 h: the key is free again.
    with app.state.engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE idempotency_keys SET created_at = :t"),
            {"t": "2000-01-01 00:00:00+00:00"},
        )
    later = client.post("/destinations", params={"api_key": api_key}, json=_vault("twice"),
                        headers=headers)  # fmt: skip
    assert later.status_code == 200 and _rows(app) == 3


# -- item 8: redaction by decoded name (unit) -------------------------------------------------


def test_redaction_decodes_parameter_names() -> None:
    for line in ("GET /d?api_key=SECRET HTTP/1.1", "GET /d?api%5Fkey=SECRET", "/d?API%5fKEY=SECRET",
                 "/d?x=1&api_k%65y=SECRET&y=2", "/d?x=1;api%5Fkey=SECRET"):  # fmt: skip
        assert "SECRET" not in redact_api_keys(line), line
    assert redact_api_keys("/d?page=2&search_term=api_key") == "/d?page=2&search_term=api_key"
    import logging

    record = logging.LogRecord("a", 20, "", 0, '%s - "%s %s"', ("1.2.3.4", "GET",
                               "/d?api%5Fkey=SECRET"), None)  # fmt: skip
    RedactApiKey().filter(record)
    assert "SECRET" not in record.getMessage()


# -- item 14: secrets from a file or the environment ------------------------------------------


def test_cli_reads_param_values_from_files_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from destinations.cli import main

    (tmp_path / "out").mkdir()
    (tmp_path / "dir.txt").write_text(f"{tmp_path / 'out'}\n")
    ok = CliRunner().invoke(
        main, ["verify", "-p", "type=local", "-p", f"local_directory=@{tmp_path / 'dir.txt'}"]
    )
    assert ok.exit_code == 0, ok.output
    monkeypatch.setenv("ROUND2_DIR", str(tmp_path / "out"))
    ok = CliRunner().invoke(main, ["verify", "-p", "type=local", "-p",
                                   "local_directory=env:ROUND2_DIR"])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    # A secret from the environment is never echoed, even when the destination is invalid.
    monkeypatch.setenv("ROUND2_SECRET", "do-not-print-9c1e")
    bad = CliRunner().invoke(main, ["verify", "-p", "type=s3compatible",
                                    "-p", "s3_secret_access_key=env:ROUND2_SECRET"])  # fmt: skip
    assert bad.exit_code == 2 and "do-not-print-9c1e" not in bad.output
    missing = CliRunner().invoke(main, ["verify", "-p", "type=local",
                                        "-p", "local_directory=env:ROUND2_NOPE"])  # fmt: skip
    assert missing.exit_code == 2 and "ROUND2_NOPE is not set" in missing.output
    unreadable = CliRunner().invoke(main, ["verify", "-p", "type=local",
                                           "-p", f"local_directory=@{tmp_path}/nope"])  # fmt: skip
    assert unreadable.exit_code == 2 and "cannot read the file" in unreadable.output


# -- item 1: only an empty database gets a new key --------------------------------------------


def test_only_an_empty_database_gets_a_new_key_file(tmp_path: Path, vault: object) -> None:
    from destinations import SecretsUnreadable
    from destinations.api import create_app

    url = f"sqlite:///{tmp_path / 'k.db'}"
    app = create_app(database_url=url, local_root=tmp_path)
    assert (tmp_path / "k.db.key").is_file()
    key = create_api_key("k", database_url=url)
    assert TestClient(app).post(
        "/destinations", params={"api_key": key}, json=_vault()
    ).status_code == 200  # fmt: skip
    app.state.engine.dispose()
    assert oct((tmp_path / "k.db").stat().st_mode & 0o777) == "0o600"
    os.remove(tmp_path / "k.db.key")
    with pytest.raises(SecretsUnreadable, match=r"k\.db\.key is missing"):
        create_app(database_url=url, local_root=tmp_path)
    assert not (tmp_path / "k.db.key").exists()


def test_the_stored_idempotency_fingerprint_is_keyed_not_a_plain_hash(
    app: Starlette, client: TestClient, api_key: str
) -> None:
    """A request body holds secrets: what is stored to match replays must not let anyone
    holding the database check guessed secrets offline."""
    import hashlib
    import json

    body = _vault("fingerprinted")
    response = client.post("/destinations", params={"api_key": api_key}, json=body,
                           headers={"Idempotency-Key": "fp-1"})  # fmt: skip
    assert response.status_code == 200
    with app.state.engine.begin() as connection:
        (stored,) = connection.execute(
            sa.text("SELECT request_hash FROM idempotency_keys WHERE key = 'fp-1'")
        ).one()
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    # it is the fingerprint of exactly this body, and not its plain sha256
    assert stored == app.state.service.repository.box.fingerprint(canonical.encode())
    assert stored != hashlib.sha256(canonical.encode()).hexdigest()
