"""``[dataplane]`` and ``[[dataplanes]]``: signaling settings from the TOML file, refusals that say what and where."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tenure.engine.planes import ControlPlaneRef, DataPlaneRef, Signaling
from tenure.service.config import ConfigError, Scope, ServiceConfig

CP_TOKEN = "token-the-cp-presents-to-dp1"
DP_TOKEN = "token-dp1-presents-to-the-cp"


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> ServiceConfig:
    path = tmp_path / "tenure.toml"
    path.write_text(text)
    return ServiceConfig.load(path, env=env or {})


def test_without_signaling_sections_the_process_is_neither_plane(tmp_path: Path) -> None:
    assert load(tmp_path, "[auth]\nenabled = true\n").signaling is None
    assert ServiceConfig.load(env={}).signaling is None


def test_a_data_plane_as_the_signaling_contract_shows_it(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        f"""
[dataplane]
id = "dp1"
controlplane_url = "http://127.0.0.1:8800/"
controlplane_token = "{DP_TOKEN}"
request_deadline = 30

[tokens.controlplane]
token = "{CP_TOKEN}"
scopes = ["signal"]
""",
    )
    assert config.signaling == Signaling(
        dataplane_id="dp1",
        controlplane=ControlPlaneRef("http://127.0.0.1:8800", DP_TOKEN),
        request_deadline=timedelta(seconds=30),
    )
    assert config.signaling.is_dataplane
    assert config.signaling.controlplane is not None
    assert config.signaling.controlplane.token == DP_TOKEN
    caller = config.authenticate(CP_TOKEN)
    assert caller is not None
    assert (caller.client, caller.scopes) == ("controlplane", frozenset({Scope.SIGNAL}))


def test_a_control_plane_with_its_data_planes_and_tokens_from_the_environment(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        f"""
[[dataplanes]]
id = "dp1"
url = "http://127.0.0.1:8801"
token = "{CP_TOKEN}"

[[dataplanes]]
id = "dp2"
url = "https://dp2.internal:8443"
token_env = "DP2_TOKEN"

[tokens.dp1]
token = "{DP_TOKEN}"
scopes = ["callback"]
""",
        env={"DP2_TOKEN": "t" * 20},
    )
    assert config.signaling is not None
    assert not config.signaling.is_dataplane
    assert config.signaling.dataplanes == (
        DataPlaneRef("dp1", "http://127.0.0.1:8801", CP_TOKEN),
        DataPlaneRef("dp2", "https://dp2.internal:8443", "t" * 20),
    )
    assert config.signaling.dataplane("dp2") is not None
    assert config.signaling.request_deadline == Signaling().request_deadline
    dp1 = config.authenticate(DP_TOKEN)
    assert dp1 is not None
    assert dp1.client == "dp1"


def test_the_default_request_deadline_and_the_token_from_the_environment(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[dataplane]\nid = "dp1"\ncontrolplane_url = "https://cp.internal"\ncontrolplane_token_env = "DP1"\n',
        env={"DP1": DP_TOKEN},
    )
    assert config.signaling is not None
    assert config.signaling.request_deadline == timedelta(seconds=60)
    assert config.signaling.controlplane == ControlPlaneRef("https://cp.internal", DP_TOKEN)


_PLANE = f'id = "dp1"\ncontrolplane_url = "http://127.0.0.1:8800"\ncontrolplane_token = "{DP_TOKEN}"\n'


#: A control plane's one data plane, as a configuration file lists it.
_ONE_PLANE = f'[[dataplanes]]\nid = "dp1"\nurl = "http://a:1"\ntoken = "{CP_TOKEN}"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[dataplane]\n" + _PLANE + "port = 1\n", "[dataplane]: unknown key(s) port; known: id, controlplane_url"),
        ("[dataplane]\n" + _PLANE.replace('id = "dp1"\n', ""), "[dataplane] id must be the data plane's id"),
        ("[dataplane]\n" + _PLANE.replace('"dp1"', '"dp:1"'), "without ':', ';' or newlines"),
        ("[dataplane]\n" + _PLANE.replace("http://127.0.0.1:8800", "ftp://x"), "controlplane_url must be"),
        ("[dataplane]\n" + _PLANE.replace("http://127.0.0.1:8800", "127.0.0.1:8800"), "an http:// or https:// URL"),
        ("[dataplane]\n" + _PLANE.replace(DP_TOKEN, "short"), "controlplane_token is too short"),
        (
            "[dataplane]\n" + _PLANE.replace(f'controlplane_token = "{DP_TOKEN}"', ""),
            "controlplane_token (or controlplane_token_env) is required",
        ),
        (
            "[dataplane]\n"
            + _PLANE.replace(f'controlplane_token = "{DP_TOKEN}"', 'controlplane_token_env = "NOT_SET"'),
            "controlplane_token_env names environment variable 'NOT_SET', which is not set",
        ),
        ("[dataplane]\n" + _PLANE + "request_deadline = 0\n", "request_deadline must be a number of seconds"),
        ("[dataplane]\n" + _PLANE + "request_deadline = true\n", "request_deadline must be a number of seconds"),
        ("[dataplane]\n" + _PLANE + 'request_deadline = "1m"\n', "request_deadline must be a number of seconds"),
        ("dataplane = 3\n", "[dataplane] must be a table"),
        ('[dataplanes]\nid = "dp1"\n', "dataplanes must be an array of tables ([[dataplanes]])"),
        (
            f'[[dataplanes]]\nid = "dp1"\nurl = "http://a:1"\ntoken = "{CP_TOKEN}"\n'
            f'[[dataplanes]]\nid = "dp1"\nurl = "http://b:1"\ntoken = "{CP_TOKEN}"\n',
            "dataplanes[1].id: data plane 'dp1' is configured twice; ids must be unique",
        ),
        (f'[[dataplanes]]\nid = "dp1"\ntoken = "{CP_TOKEN}"\n', "dataplanes[0].url must be the data plane's base URL"),
        ('[[dataplanes]]\nid = "dp1"\nurl = "http://a:1"\n', "dataplanes[0]: token (or token_env) is required"),
        (
            f'[[dataplanes]]\nid = "dp1"\nurl = "http://a:1"\ntoken = "{CP_TOKEN}"\ntoken_env = "X"\n',
            "give token or token_env, not both",
        ),
        (f'[[dataplanes]]\nid = "dp1"\nurl = "http://a:1"\nkey = "{CP_TOKEN}"\n', "unknown key(s) key; known: id, url"),
        ('[tokens.cp]\nclient = "other"\ntoken = "x"\nscopes = ["signal"]\n', "client must be left out or be 'cp'"),
        ("[tokens]\ncp = 3\n", "[tokens.cp] must be a table"),
        ("tokens = 3\n", "tokens must be an array of tables ([[tokens]]) or [tokens.<client>]"),
        (
            "[signalling]\n",
            "unknown section(s) signalling; known: auth, tokens, service, dataplane, dataplanes, signaling",
        ),
        (
            "[signaling]\nrequest_deadline = -1\n" + _ONE_PLANE,
            "[signaling] request_deadline must be a number of seconds",
        ),
        ("[signaling]\ndeadline = 5\n" + _ONE_PLANE, "[signaling]: unknown key(s) deadline"),
    ],
)
def test_a_wrong_signaling_setting_is_refused_naming_the_key_and_what_is_accepted(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert message in str(info.value)
    assert "tenure.toml" in str(info.value)
    assert DP_TOKEN not in str(info.value)
    assert CP_TOKEN not in str(info.value)


def test_a_control_planes_request_deadline_comes_from_the_signaling_section(tmp_path: Path) -> None:
    text = (
        f'[signaling]\nrequest_deadline = 7.5\n[[dataplanes]]\nid = "dp1"\nurl = "http://a:1"\ntoken = "{CP_TOKEN}"\n'
    )
    signaling = load(tmp_path, text).signaling
    assert signaling is not None
    assert signaling.request_deadline == timedelta(seconds=7.5)
    assert [p.id for p in signaling.dataplanes] == ["dp1"]


def test_a_control_plane_hands_out_its_public_callback_url_or_where_it_listens(tmp_path: Path) -> None:
    public = load(tmp_path, '[service]\npublic_url = "https://cp.example/"\n' + _ONE_PLANE)
    signaling = public.signaling_with_callbacks("http://127.0.0.1:8800")
    assert signaling is not None
    assert signaling.callback_url == "https://cp.example/v1/callbacks"

    bare = load(tmp_path, _ONE_PLANE)
    listening = bare.signaling_with_callbacks("http://127.0.0.1:8800")
    assert listening is not None
    assert listening.callback_url == "http://127.0.0.1:8800/v1/callbacks"
    with pytest.raises(ConfigError, match=r"needs \[service\] public_url"):
        bare.signaling_with_callbacks()  # a worker process listens nowhere


def test_a_signaling_section_on_its_own_is_refused_as_having_no_effect(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[signaling\] has no effect without \[dataplane\]"):
        load(tmp_path, "[signaling]\nrequest_deadline = 5\n")
