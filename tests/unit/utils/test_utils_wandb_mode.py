"""W&B runs offline unless the user configured it."""

from __future__ import annotations

import pytest

from calcium_gnn.utils.wandb_mode import ensure_offline_unless_configured


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    return monkeypatch


def test_offline_when_nothing_is_configured(clean_env) -> None:
    assert ensure_offline_unless_configured() == "offline"


def test_user_mode_is_respected(clean_env) -> None:
    clean_env.setenv("WANDB_MODE", "disabled")
    assert ensure_offline_unless_configured() == "disabled"


def test_api_key_means_online(clean_env) -> None:
    clean_env.setenv("WANDB_API_KEY", "x" * 40)
    assert ensure_offline_unless_configured() == "online"


def test_netrc_login_means_online(clean_env, tmp_path) -> None:
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    assert ensure_offline_unless_configured() == "online"


def test_finish_wandb_closes_an_open_run_and_imports_nothing(monkeypatch) -> None:
    import sys
    import types

    from calcium_gnn.utils.wandb_mode import finish_wandb

    monkeypatch.delitem(sys.modules, "wandb", raising=False)
    finish_wandb()  # W&B never imported: nothing to close, and it stays unimported
    assert "wandb" not in sys.modules
    closed: list[bool] = []
    fake = types.SimpleNamespace(run=object())
    fake.finish = lambda: (closed.append(True), setattr(fake, "run", None))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    finish_wandb()
    finish_wandb()  # the run is closed: a second call does nothing
    assert closed == [True]
