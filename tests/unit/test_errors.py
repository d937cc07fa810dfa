"""The one exception hierarchy: every error is a TenureError whose message carries its facts.

The errors form one tree under a few groups (what a caller catches); the tree is pinned here and
drawn in the docstring of :mod:`tenure.errors`, which must show exactly this tree.
"""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Callable
from typing import Any

import pytest

import tenure.errors as errors_module
from tenure.errors import (
    AlreadyExists,
    ApiError,
    ClaimLost,
    ConfigError,
    Conflict,
    DuplicateKind,
    FlowActionNotAllowed,
    FlowChanged,
    FlowError,
    FlowFailed,
    FlowRunNotFound,
    IdempotencyKeyReused,
    InputError,
    InUse,
    InvalidArgument,
    InvalidDatabaseURL,
    InvalidFlow,
    InvalidKind,
    InvalidSpec,
    InvalidSteps,
    InvalidUsage,
    KindError,
    ModuleNotImportable,
    NoKindFound,
    NotSharable,
    QuotaError,
    QuotaExceeded,
    QuotaNotFound,
    ResourceNotFound,
    RetryNotAllowed,
    SchemaNotMigrated,
    SchemaTooNew,
    ServerFailed,
    ServerUnreachable,
    ServiceError,
    StoreError,
    StoreUnavailable,
    SubscriptionNotFound,
    TeardownStarted,
    TenureError,
    TooLarge,
    TransitionNotAllowed,
    UnknownEvent,
    UnknownKind,
    UnknownState,
    UseNotYours,
    WriteConflict,
)

#: One sample per error class: the keyword arguments it is built from, which are also its facts.
SAMPLES: dict[type[TenureError], dict[str, Any]] = {
    InvalidKind: {"kind": "shop", "problems": ("state 'x' is unreachable", "duplicate state code 3")},
    UnknownKind: {"kind": "ghost", "known": ("image", "volume"), "version": None},
    UnknownState: {"kind": "image", "state": "flying", "known": ("queued", "active")},
    UnknownEvent: {"kind": "image", "event": "fly", "known": ("upload", "delete")},
    TransitionNotAllowed: {
        "kind": "image",
        "state": "active",
        "event": "upload",
        "allowed": ("deactivate", "delete"),
        "resource_id": "img-7",
        "reason": "guard is_owner refused it",
    },
    InvalidSpec: {"kind": "image", "problems": (("name", "Field required"), ("size_bytes", "must be >= 0"))},
    InvalidArgument: {"field": "limit", "constraint": "must be between 1 and 1000", "got": 5000},
    ResourceNotFound: {"resource_id": "r-404"},
    Conflict: {
        "resource_id": "r-1",
        "expected_version": 3,
        "actual_version": 5,
        "actual_state": "active",
        "recreated": True,
    },
    ClaimLost: {
        "resource_id": "r-1",
        "expected_version": 3,
        "actual_version": 4,
        "actual_state": "provisioning",
        "claimed_by": "host:12:ab",
    },
    InvalidSteps: {"problems": ("transfer/started is a rest state; steps run only in work states",)},
    IdempotencyKeyReused: {"key": "k-1", "resource_id": "r-2", "difference": "spec.name differs"},
    InvalidDatabaseURL: {"url": "mysql://x", "reason": "unsupported scheme 'mysql'"},
    StoreUnavailable: {"target": "postgresql://db/tenure", "reason": "connection refused"},
    SchemaNotMigrated: {"target": "sqlite:///t.db", "current": 0, "required": 1},
    SchemaTooNew: {"target": "sqlite:///t.db", "current": 9, "known": 1},
    InvalidFlow: {"flow": "create_volume", "problems": ("task 'a' needs 'size' and nothing provides it",)},
    FlowFailed: {"flow": "create_volume", "run_id": "run-9", "state": "reverted", "failures": {"Boom": "no room"}},
    FlowChanged: {"run_id": "run-1", "stored": "volume v1 (abc)", "current": "volume v2 (def)"},
    QuotaExceeded: {"project": "p1", "resource": "gigabytes", "requested": 80, "available": 70, "hard_limit": 100},
    QuotaNotFound: {"what": "p1/gigabytes"},
    NotSharable: {"resource_id": "r1", "party": "tag:a,2026:x", "refused": "tag:b,2026:y"},
    InUse: {"resource_id": "r1", "event": "undeploy", "parties": ("tag:a,2026:x",)},
    TeardownStarted: {"resource_id": "r1", "state": "undeploying", "usable": ("deployed",)},
    UseNotYours: {"resource_id": "r1", "party": "tag:a,2026:x", "owner": "ci", "client": "bob"},
    RetryNotAllowed: {
        "resource_id": "r1",
        "kind": "job",
        "state": "pending",
        "role": "work",
        "reason": "its next attempt is due already (since 2030-01-02T03:04:05+00:00)",
    },
    AlreadyExists: {"what": "resource", "key": "r-1"},
    DuplicateKind: {"kind": "image", "version": None},
    ModuleNotImportable: {"module": "mypkg.kinds", "reason": "No module named 'mypkg'", "what": "steps"},
    NoKindFound: {"module": "mypkg.kinds", "name": "volume"},
    InvalidUsage: {"problem": "give --server or --database, not both"},
    FlowRunNotFound: {"run_id": "run-404"},
    SubscriptionNotFound: {"subscription_id": "sub-404"},
    TooLarge: {"what": "the data", "size": 5000000, "limit": 4194304},
    ServerUnreachable: {"url": "http://127.0.0.1:8080", "reason": "connection refused"},
    ApiError: {
        "status": 409,
        "type": "urn:tenure:problem:conflict",
        "title": "Conflict",
        "detail": "resource r1 is at version 3, not 2 as If-Match says",
        "extensions": {"resourceId": "r1", "actualVersion": 3},
        "instance": "/v1/resources/r1/events",
    },
    FlowActionNotAllowed: {
        "run_id": "run-2",
        "state": "reverted",
        "action": "be resolved",
        "required": "revert_failed",
    },
}

#: The groups: they classify and take only an optional message (no facts of their own).
GROUPS = (KindError, InputError, WriteConflict, QuotaError, FlowError, StoreError, ServiceError)
#: Classes that take only an optional message (no facts of their own).
PLAIN = (TenureError, *GROUPS, ConfigError, ServerFailed)
#: Errors whose message is another party's text: the server's problem ``detail`` (its facts are the
#: problem document's members, kept as attributes, and the CLI prints the server's words as they are).
MESSAGE_FROM_ELSEWHERE = {ApiError}

#: The tree: each class and its one direct base. A class may gain a group, never lose a base.
BASE: dict[type[TenureError], type[Exception]] = {
    TenureError: Exception,
    KindError: TenureError,
    InvalidKind: KindError,
    InvalidSteps: KindError,
    DuplicateKind: KindError,
    ModuleNotImportable: KindError,
    NoKindFound: KindError,
    UnknownKind: KindError,
    UnknownState: KindError,
    UnknownEvent: KindError,
    InputError: TenureError,
    InvalidArgument: InputError,
    InvalidSpec: InputError,
    InvalidUsage: InputError,
    TooLarge: InputError,
    ResourceNotFound: TenureError,
    SubscriptionNotFound: TenureError,
    WriteConflict: TenureError,
    TransitionNotAllowed: WriteConflict,
    Conflict: WriteConflict,
    ClaimLost: Conflict,
    AlreadyExists: WriteConflict,
    IdempotencyKeyReused: WriteConflict,
    NotSharable: WriteConflict,
    InUse: WriteConflict,
    TeardownStarted: WriteConflict,
    UseNotYours: WriteConflict,
    RetryNotAllowed: WriteConflict,
    QuotaError: TenureError,
    QuotaExceeded: QuotaError,
    QuotaNotFound: QuotaError,
    FlowError: TenureError,
    InvalidFlow: FlowError,
    FlowFailed: FlowError,
    FlowChanged: FlowError,
    FlowRunNotFound: FlowError,
    FlowActionNotAllowed: FlowError,
    StoreError: TenureError,
    InvalidDatabaseURL: StoreError,
    StoreUnavailable: StoreError,
    SchemaNotMigrated: StoreError,
    SchemaTooNew: StoreError,
    ServiceError: TenureError,
    ConfigError: ServiceError,
    ServerFailed: ServiceError,
    ApiError: ServiceError,
    ServerUnreachable: ServiceError,
}


def error_classes() -> list[type[BaseException]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors_module, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == errors_module.__name__
    ]


def build(cls: type[TenureError], facts: dict[str, Any]) -> TenureError:
    factory: Callable[..., TenureError] = cls
    return factory(**facts)


def fact_texts(value: Any) -> list[str]:
    """The bits of a fact value that the message must show (a flag shows in the wording, not as True)."""
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, tuple):
        return [text for item in value for text in fact_texts(item)]
    if isinstance(value, dict):
        return [f"{k}: {v}" for k, v in value.items()]
    return [str(value)]


def test_every_error_class_has_a_sample() -> None:
    classes = set(error_classes())
    assert classes == set(SAMPLES) | set(PLAIN), "add a sample for every new error class"


def test_every_error_class_is_exported() -> None:
    assert {cls.__name__ for cls in error_classes()} == set(errors_module.__all__)


@pytest.mark.parametrize("cls", error_classes(), ids=lambda c: c.__name__)
def test_every_error_is_a_tenure_error_with_its_own_default_message(cls: type[BaseException]) -> None:
    assert issubclass(cls, TenureError)
    assert "default_message" in vars(cls), f"{cls.__name__} must define its own default_message"
    default = cls.default_message
    assert isinstance(default, str)
    assert default.strip()
    if cls is not TenureError:
        assert default != TenureError.default_message


@pytest.mark.parametrize("cls", [c for c in SAMPLES if c not in MESSAGE_FROM_ELSEWHERE], ids=lambda c: c.__name__)
def test_message_contains_the_facts(cls: type[TenureError]) -> None:
    facts = SAMPLES[cls]
    err = build(cls, facts)
    message = str(err)
    assert err.message == message
    assert message != cls.default_message
    for name, value in facts.items():
        for text in fact_texts(value):
            assert text in message, f"{cls.__name__} message {message!r} lacks {name}={text!r}"


def test_a_conflict_with_a_resource_created_again_says_so() -> None:
    plain = Conflict(resource_id="r-1", expected_version=3, actual_version=3)
    again = Conflict(resource_id="r-1", expected_version=3, actual_version=3, recreated=True)
    assert "changed concurrently" in str(plain)
    assert "recreated" not in plain.facts()
    assert str(again) == "resource r-1 was deleted and created again since version 3 was read: found version 3"
    assert again.facts()["recreated"] is True


def test_an_api_error_says_what_the_server_said() -> None:
    err = build(ApiError, SAMPLES[ApiError])
    assert str(err) == SAMPLES[ApiError]["detail"]
    assert str(ApiError(500, "about:blank", "Internal Server Error", "")) == "Internal Server Error"


@pytest.mark.parametrize("cls", list(SAMPLES), ids=lambda c: c.__name__)
def test_facts_returns_the_attributes(cls: type[TenureError]) -> None:
    facts = SAMPLES[cls]
    err = build(cls, facts)
    assert err.facts() == facts
    for name, value in facts.items():
        assert getattr(err, name) == value
    assert "message" not in err.facts()


@pytest.mark.parametrize("cls", list(SAMPLES), ids=lambda c: c.__name__)
def test_errors_survive_pickling_with_their_facts(cls: type[TenureError]) -> None:
    err = build(cls, SAMPLES[cls])
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is cls
    assert str(copy) == str(err)
    assert copy.facts() == err.facts()


@pytest.mark.parametrize("cls", list(SAMPLES), ids=lambda c: c.__name__)
def test_sequence_facts_are_stored_as_tuples(cls: type[TenureError]) -> None:
    facts = {k: list(v) if isinstance(v, tuple) else v for k, v in SAMPLES[cls].items()}
    err = build(cls, facts)
    for name, value in SAMPLES[cls].items():
        assert getattr(err, name) == value


@pytest.mark.parametrize("cls", PLAIN, ids=lambda c: c.__name__)
def test_plain_errors_use_their_default_message(cls: type[TenureError]) -> None:
    err = cls()
    assert str(err) == cls.default_message
    assert err.message == cls.default_message
    assert err.facts() == {}
    custom = cls("something broke")
    assert str(custom) == "something broke"


def test_store_errors_share_a_base() -> None:
    for cls in (InvalidDatabaseURL, StoreUnavailable, SchemaNotMigrated, SchemaTooNew):
        assert issubclass(cls, StoreError)


# --- the tree ------------------------------------------------------------------------------------


def test_the_tree_covers_every_error_class() -> None:
    assert set(BASE) == set(error_classes())


@pytest.mark.parametrize("cls", list(BASE), ids=lambda c: c.__name__)
def test_each_class_has_its_one_base(cls: type[TenureError]) -> None:
    assert cls.__bases__ == (BASE[cls],)


def test_groups_derive_from_the_root_and_take_no_facts() -> None:
    for group in GROUPS:
        assert BASE[group] is TenureError
        assert "__init__" not in vars(group), f"{group.__name__} must add no facts"
        assert any(BASE[cls] is group for cls in BASE), f"{group.__name__} has no member"


def test_the_relations_callers_rely_on_still_hold() -> None:
    assert issubclass(ClaimLost, Conflict)
    for cls in (TransitionNotAllowed, Conflict, ClaimLost, AlreadyExists, IdempotencyKeyReused, NotSharable):
        assert issubclass(cls, WriteConflict)
    for cls in (InvalidArgument, InvalidSpec):
        assert issubclass(cls, InputError)
    for cls in (InvalidKind, UnknownKind, UnknownState, UnknownEvent):
        assert issubclass(cls, KindError)
    with pytest.raises(WriteConflict):
        raise ClaimLost(resource_id="r", expected_version=1, actual_version=2)


def drawn_tree() -> dict[str, str]:
    """Each class drawn in the module docstring, with the class drawn as its parent."""
    doc = errors_module.__doc__ or ""
    lines = doc[doc.index("    TenureError\n") :].split("\n\n", 1)[0].splitlines()
    parents: dict[str, str] = {}
    stack: list[str] = []
    for line in lines:
        body = line[4:]  # the drawing is indented by four spaces
        name = body.lstrip("│├└─ ")
        depth = (len(body) - len(name)) // 4
        del stack[depth:]
        if stack:
            parents[name] = stack[-1]
        stack.append(name)
    return parents


def test_the_docstring_draws_exactly_this_tree() -> None:
    expected = {cls.__name__: BASE[cls].__name__ for cls in BASE if cls is not TenureError}
    assert drawn_tree() == expected


def test_the_docstring_says_what_each_group_is_for() -> None:
    doc = errors_module.__doc__ or ""
    for group in GROUPS:
        assert f"``{group.__name__}``\n    " in doc


# --- raising -------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", PLAIN, ids=lambda c: c.__name__)
def test_plain_errors_can_be_raised_with_no_arguments(cls: type[TenureError]) -> None:
    with pytest.raises(cls) as info:
        raise cls()
    assert str(info.value).strip()
    assert str(info.value) == cls.default_message


@pytest.mark.parametrize("cls", list(SAMPLES), ids=lambda c: c.__name__)
def test_errors_can_be_raised_with_their_documented_arguments(cls: type[TenureError]) -> None:
    signature = inspect.signature(cls)
    assert set(SAMPLES[cls]) == set(signature.parameters), "the sample must use every documented argument"
    with pytest.raises(cls) as info:
        raise build(cls, SAMPLES[cls])
    assert str(info.value).strip()
    assert isinstance(info.value, BASE[cls])


def test_a_resource_not_found_can_be_caught_as_a_tenure_error_and_as_an_exception() -> None:
    with pytest.raises(TenureError) as caught:
        raise ResourceNotFound("r")
    # What was caught is the ResourceNotFound itself, with its fact, not some other TenureError.
    assert type(caught.value) is ResourceNotFound
    assert caught.value.resource_id == "r"
    with pytest.raises(Exception, match="no resource with id 'r'") as as_exception:
        raise ResourceNotFound("r")
    assert type(as_exception.value) is ResourceNotFound


# --- wording of the messages a user reads --------------------------------------------------------


def test_transition_not_allowed_message() -> None:
    err = TransitionNotAllowed(kind="image", state="active", event="upload", allowed=["deactivate", "delete"])
    assert str(err) == (
        "event 'upload' is not allowed for kind 'image' in state 'active'; "
        "allowed events in 'active': deactivate, delete"
    )
    with_resource = TransitionNotAllowed(
        kind="image", state="deleted", event="delete", allowed=[], resource_id="img-1", reason="it is gone"
    )
    assert str(with_resource) == (
        "event 'delete' is not allowed for resource img-1 (image) in state 'deleted': it is gone; "
        "allowed events in 'deleted': none"
    )


def test_unknown_names_say_none_when_nothing_is_known() -> None:
    assert str(UnknownKind("x", [])) == "unknown kind 'x'; known kinds: none"


def test_conflict_message_without_state() -> None:
    err = Conflict(resource_id="r1", expected_version=3, actual_version=5)
    assert str(err) == "resource r1 was changed concurrently: expected version 3, found version 5"
    assert err.actual_state is None
    assert err.facts() == {"resource_id": "r1", "expected_version": 3, "actual_version": 5, "actual_state": None}


def test_invalid_spec_message_lists_field_and_constraint() -> None:
    err = InvalidSpec("image", [("name", "Field required"), ("size", "too big")])
    assert str(err) == "invalid spec for kind 'image': name: Field required; size: too big"


def test_invalid_kind_message_is_one_problem_per_line() -> None:
    err = InvalidKind("k", ["first", "second"])
    assert str(err) == "kind 'k' is invalid:\n  - first\n  - second"


def test_schema_not_migrated_tells_what_to_run() -> None:
    err = SchemaNotMigrated("sqlite:///t.db", 0, 1)
    assert "tenure migrate" in str(err)


def test_invalid_database_url_lists_accepted_forms() -> None:
    err = InvalidDatabaseURL("mysql://x", "unsupported")
    assert "sqlite:///" in str(err)
    assert "postgresql://" in str(err)


def test_kind_loading_messages_name_the_module() -> None:
    assert str(ModuleNotImportable("nope", "No module named 'nope'")) == (
        "cannot import kinds from 'nope': No module named 'nope'"
    )
    assert str(NoKindFound("pkg.kinds")) == "module 'pkg.kinds' defines no Kind at top level"
    assert str(NoKindFound("pkg.kinds", "lamp")) == (
        "'pkg.kinds:lamp' is not a Kind (module 'pkg.kinds' has no kind named 'lamp')"
    )


def test_flow_run_messages() -> None:
    assert str(FlowRunNotFound("ghost")) == "no flow run with id 'ghost'"
    refused = FlowActionNotAllowed("r1", state="resolved", action="retry its revert", required="revert_failed")
    assert str(refused) == "flow run r1 is resolved; only a revert_failed run can retry its revert"
