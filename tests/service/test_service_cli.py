"""The nnverify command line: keys create / list / revoke, and the parser's commands."""

from __future__ import annotations

import pytest

from service.cli import build_parser, main
from service.db import session_scope
from service.settings import ServiceSettings
from service.tables import ApiKey


@pytest.fixture
def data_env(tmp_path, monkeypatch) -> ServiceSettings:
    monkeypatch.setenv("NNVERIFY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    return ServiceSettings()


def test_keys_create_list_revoke(data_env, capsys):
    assert main(["keys", "create", "--name", "alice"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("nnv_") and len(key) > 30
    with session_scope(data_env) as s:
        row = s.query(ApiKey).one()
        assert row.name == "alice" and key not in (row.key_sha256, row.prefix)
        assert row.role == "user"
    assert main(["keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert "alice" in listed and "active" in listed and key not in listed
    assert main(["keys", "revoke", "alice"]) == 0
    assert main(["keys", "list"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["keys", "revoke", "nobody"]) == 1


def test_keys_create_admin(data_env, capsys):
    assert main(["keys", "create", "--name", "boss", "--admin"]) == 0
    key = capsys.readouterr().out.strip()
    assert main(["keys", "create", "--name", "worker-bee"]) == 0
    capsys.readouterr()
    with session_scope(data_env) as s:
        roles = {row.name: row.role for row in s.query(ApiKey)}
    assert roles == {"boss": "admin", "worker-bee": "user"}
    from service.keys import find_key

    with session_scope(data_env) as s:
        found = find_key(s, key)
        assert found is not None and found.role == "admin"
    assert main(["keys", "list"]) == 0
    assert "boss  admin" in capsys.readouterr().out


def test_parser_has_the_service_commands():
    parser = build_parser()
    for argv in (["serve", "--port", "0"], ["worker", "--device", "cuda:1"], ["db", "upgrade"],
                 ["keys", "create", "--name", "x"]):
        assert callable(parser.parse_args(argv).func)
    assert parser.parse_args(["worker", "--device", "cuda:1"]).device == "cuda:1"


def test_worker_refuses_a_device_it_cannot_use(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["worker", "--device", "cuda:0"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert main(["worker", "--device", "toaster"]) == 2


def test_client_commands_are_parsed_without_the_engine():
    """`nnverify submit/status/...` talk to a server: they do not wait for torch's import."""
    import subprocess
    import sys

    parser = build_parser(engine=False)
    args = parser.parse_args(["submit", "m.onnx", "p.vnnlib", "--wait", "--timeout", "5"])
    assert args.wait and args.timeout == 5.0 and args.bab is None and callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["verify", "m.onnx", "p.vnnlib"])
    assert build_parser().parse_args(["verify", "m.onnx", "p.vnnlib"]).command == "verify"
    code = ("import sys; from service.cli import main; "
            "rc = main(['results', '--url', 'http://127.0.0.1:9']); "
            "print(rc, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert "cannot reach the nnverify server at http://127.0.0.1:9" in done.stderr
