"""Settings: a wrong value fails at start-up with one line naming the setting."""

from __future__ import annotations

import pytest

from bot.core.errors import ConfigError
from bot.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in list(__import__("os").environ):
        if name.startswith("EASEL_") or name == "DISCORD_TOKEN":
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("EASEL_MAX_STEPS", "many", "Setting EASEL_MAX_STEPS: Input should be a valid integer"),
        (
            "EASEL_MAX_STEPS",
            "0",
            "Setting EASEL_MAX_STEPS: Input should be greater than or equal to 1",
        ),
        ("EASEL_DEFAULT_SAMPLER", "plms", "Setting EASEL_DEFAULT_SAMPLER: must be one of euler"),
        ("EASEL_DEFAULT_ASPECT", "9:1", "Setting EASEL_DEFAULT_ASPECT: --ar 9:1 is too extreme"),
        ("EASEL_DEVICE", "tpu", "Setting EASEL_DEVICE: must be auto, cpu, cuda"),
        ("EASEL_DTYPE", "fp8", "Setting EASEL_DTYPE: Input should be 'auto'"),
        ("EASEL_COMPILE", "maybe", "Setting EASEL_COMPILE: Input should be a valid boolean"),
    ],
)
def test_bad_value_gives_one_line_naming_the_setting(monkeypatch, name, value, fragment):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(fragment)
    assert "\n" not in message


def test_env_file_and_defaults(tmp_path):
    (tmp_path / ".env").write_text("EASEL_MAX_STEPS=20\nEASEL_DATA_DIR=/srv/easel\nOTHER=1\n")
    s = load_settings()
    assert s.max_steps == 20 and s.limits.max_steps == 20
    assert s.db_url == "sqlite+aiosqlite:////srv/easel/easel.db"
    assert s.model == "tiny" and s.device == "auto"


def test_token_never_appears_in_reprs_or_errors(monkeypatch):
    monkeypatch.setenv("DISCORD_TOKEN", "MTAx.secret-token-value")
    s = load_settings()
    assert "secret-token-value" not in repr(s) and "secret-token-value" not in str(s)
    assert s.discord_token.get_secret_value() == "MTAx.secret-token-value"
    monkeypatch.setenv("EASEL_MAX_STEPS", "x")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "secret" not in str(info.value)


def test_env_example_lists_every_setting():
    from pathlib import Path

    from bot.settings import Settings

    example = (Path(__file__).parents[1] / ".env.example").read_text()
    for name in Settings.model_fields:
        env = "DISCORD_TOKEN" if name == "discord_token" else f"EASEL_{name.upper()}"
        assert f"{env}=" in example, f"{env} is missing from .env.example"


def test_the_example_file_loads_as_is(tmp_path):
    from pathlib import Path

    example = Path(__file__).parents[1] / ".env.example"
    (tmp_path / ".env").write_text(example.read_text())
    s = load_settings()
    assert s.discord_token is None and s.safety_checker is None and s.database_url is None
    assert s.model == "tiny" and s.admin_role_ids == []
