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
