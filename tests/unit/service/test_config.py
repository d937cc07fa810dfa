"""Service configuration: tokens from a TOML file and the environment, scopes, refusals that say why."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tenure.service.config import ClientToken, ConfigError, Scope, ServiceConfig, generated_token

SECRET = "s" * 24
OTHER = "o" * 24


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tenure.toml"
    path.write_text(text)
    return path


def test_defaults_have_auth_on_and_no_tokens() -> None:
    config = ServiceConfig.load(env={})
    assert config.auth
    assert config.tokens == ()
    assert config.authenticate(SECRET) is None


def test_tokens_from_the_environment_name_a_client_and_its_scopes() -> None:
    config = ServiceConfig.load(env={"TENURE_TOKENS": f"ci:{SECRET}:read,write; ops:{OTHER}:admin"})
    ci = config.authenticate(SECRET)
    ops = config.authenticate(OTHER)
    assert ci is not None
    assert ops is not None
    assert (ci.client, ci.scopes) == ("ci", frozenset({Scope.READ, Scope.WRITE}))
    assert ops.scopes == frozenset(Scope)
    assert config.authenticate("x" * 24) is None


def test_write_implies_read_but_callback_implies_nothing_else() -> None:
    writer = ClientToken.make("w", SECRET, ["write"])
    plane = ClientToken.make("p", OTHER, ["callback"])
    assert writer.scopes == {Scope.WRITE, Scope.READ}
    assert plane.scopes == {Scope.CALLBACK}


def test_auth_off_from_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[auth]\nenabled = true\n")
    assert not ServiceConfig.load(path, env={"TENURE_AUTH": "off"}).auth
    with pytest.raises(ConfigError, match="TENURE_AUTH must be on or off"):
        ServiceConfig.load(env={"TENURE_AUTH": "maybe"})


def test_a_file_gives_tokens_directly_or_through_the_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
[service]
kinds = ["mypkg.kinds"]
database = "sqlite:///x.db"
public_url = "https://tenure.example"

[[tokens]]
client = "ci"
token = "{SECRET}"
scopes = ["read"]

[[tokens]]
client = "plane"
token_env = "PLANE_TOKEN"
scopes = ["callback"]
""",
    )
    config = ServiceConfig.load(path, env={"PLANE_TOKEN": OTHER})
    assert config.kinds == ("mypkg.kinds",)
    assert config.database == "sqlite:///x.db"
    assert config.public_url == "https://tenure.example"
    plane = config.authenticate(OTHER)
    assert plane is not None
    assert plane.client == "plane"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[auth\n", "not valid TOML"),
        ("[nonsense]\n", "unknown section"),
        ("[auth]\nenabled = 'yes'\n", "auth.enabled must be true or false"),
        ("[[tokens]]\nclient = 'a'\nscopes = ['read']\n", "needs client and token"),
        (f"[[tokens]]\nclient = 'a'\ntoken = '{SECRET}'\nscopes = ['root']\n", "unknown scope 'root'"),
        (f"[[tokens]]\nclient = 'a'\ntoken = '{SECRET}'\nscopes = []\n", "has no scopes"),
        ("[[tokens]]\nclient = 'a'\ntoken = 'short'\nscopes = ['read']\n", "too short"),
        ("[[tokens]]\nclient = 'a'\ntoken_env = 'MISSING'\nscopes = ['read']\n", "MISSING is not set"),
        ("[service]\nport = 1\n", "unknown key(s) in [service]: port"),
        ("[service]\nkinds = 'x'\n", "service.kinds must be a list"),
    ],
)
def test_a_wrong_file_is_refused_saying_what_and_where(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        ServiceConfig.load(write(tmp_path, text), env={})
    assert message in str(info.value)
    assert "tenure.toml" in str(info.value)


def test_a_malformed_environment_entry_does_not_echo_the_token() -> None:
    with pytest.raises(ConfigError) as info:
        ServiceConfig.load(env={"TENURE_TOKENS": f"ci-{SECRET}-read"})
    assert SECRET not in str(info.value)


def test_a_generated_token_is_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "tenure.token"
    first = generated_token(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = generated_token(path)
    assert first.digest == again.digest
    assert first.scopes == frozenset(Scope)
    config = ServiceConfig().with_tokens([first])
    principal = config.authenticate(path.read_text().strip())
    assert principal is not None
    assert principal.client == "local-admin"
    assert SECRET not in repr(first)
