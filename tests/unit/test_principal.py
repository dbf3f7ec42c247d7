"""Authorization rules of app.domain.principal: wallet reach and scope levels."""

from __future__ import annotations

import dataclasses

import pytest

from app.domain.principal import Principal, is_org_code, is_user_id


def user(sub: str = "kp_alice", org: str | None = None, *scopes: str) -> Principal:
    return Principal(
        subject=sub, org_code=org, scopes=frozenset(scopes), is_machine=False, client_id="fe"
    )


def machine(org: str | None = None, *scopes: str) -> Principal:
    return Principal(
        subject=None, org_code=org, scopes=frozenset(scopes), is_machine=True, client_id="m2m"
    )


REACH = [
    # (principal, wallet, expected)
    (user("kp_alice"), "kp_alice", True),
    (user("kp_alice"), "kp_bob", False),
    (user("kp_alice"), "org_1", False),
    (user("kp_alice", "org_1"), "org_1", True),
    (user("kp_alice", "org_1"), "kp_alice", True),
    (user("kp_alice", "org_1"), "org_2", False),
    (user("kp_alice", "org_1"), "", False),
    # A user's scopes never widen reach.
    (user("kp_alice", None, "credits:admin"), "kp_bob", False),
    (machine("org_1"), "org_1", True),
    (machine("org_1"), "org_2", False),
    (machine("org_1"), "kp_alice", False),
    (machine(None), "org_2", True),
    (machine(None), "kp_anyone", True),
    (machine(None), "", False),
    # A present but malformed org_code confines a machine to nothing (issue 9), never to
    # everything, and never reaches a user wallet whose id it happens to spell.
    (machine(""), "kp_anyone", False),
    (machine(""), "org_1", False),
    (machine("kp_bob"), "kp_bob", False),
    (machine("acme"), "acme", False),
    (machine("org_"), "org_", False),
    (machine("org_1 "), "org_1 ", False),
    (user("kp_alice", "kp_bob"), "kp_bob", False),
    (user("kp_alice", "kp_bob"), "kp_alice", True),
    (user("kp_alice", ""), "kp_alice", True),
    (user("kp_alice", "acme"), "acme", False),
    # A malformed user subject reaches nothing, not even the wallet it spells.
    (user("kp_"), "kp_", False),
    (user("kp_a b"), "kp_a b", False),
    (user("kp_a", "org_1"), "org_1", True),
    # Not a machine and not a kp_ subject: fail closed.
    (Principal("client_abc", None, frozenset(), False, None), "client_abc", False),
    (Principal(None, "org_1", frozenset(), False, None), "org_1", False),
]


@pytest.mark.parametrize(("principal", "wallet", "expected"), REACH)
def test_can_reach_wallet(principal: Principal, wallet: str, expected: bool) -> None:
    assert principal.can_reach_wallet(wallet) is expected


LEVELS = [
    # (held scopes, required, expected)
    ((), "credits:read", False),
    (("credits:read",), "credits:read", True),
    (("credits:read",), "credits:write", False),
    (("credits:read",), "credits:admin", False),
    (("credits:write",), "credits:read", True),
    (("credits:write",), "credits:write", True),
    (("credits:write",), "credits:admin", False),
    (("credits:admin",), "credits:read", True),
    (("credits:admin",), "credits:write", True),
    (("credits:admin",), "credits:admin", True),
    (("openid", "profile"), "credits:read", False),
    (("credits:readx", "credits"), "credits:read", False),
    # Non-credits scopes only match exactly.
    (("openid",), "openid", True),
    (("credits:admin",), "openid", False),
]


@pytest.mark.parametrize(("held", "required", "expected"), LEVELS)
def test_has_scope_levels(held: tuple[str, ...], required: str, expected: bool) -> None:
    assert machine(None, *held).has_scope(required) is expected
    assert user("kp_a", None, *held).has_scope(required) is expected


ACTIONS = [
    # (principal, action, expected)
    (user(), "read", True),  # users read without scope
    (user(), "write", False),
    (user(), "admin", False),
    (user("kp_a", None, "credits:write"), "write", True),
    (user("kp_a", None, "credits:write"), "admin", False),
    (user("kp_a", None, "credits:admin"), "admin", True),
    (machine(), "read", False),  # machines always need the scope
    (machine(None, "credits:read"), "read", True),
    (machine(None, "credits:read"), "write", False),
    (machine(None, "credits:write"), "read", True),
    (machine(None, "credits:write"), "write", True),
    (machine(None, "credits:write"), "admin", False),
    (machine(None, "credits:admin"), "admin", True),
    (Principal("weird", None, frozenset(), False, None), "read", False),
]


@pytest.mark.parametrize(("principal", "action", "expected"), ACTIONS)
def test_required_scope_met(principal: Principal, action: str, expected: bool) -> None:
    assert principal.required_scope_met(action) is expected  # type: ignore[arg-type]


def test_unknown_action_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        user().required_scope_met("delete")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("principal", "action", "wallet", "expected"),
    [
        (user("kp_a"), "read", "kp_a", True),
        (user("kp_a"), "read", "kp_b", False),
        (user("kp_a"), "write", "kp_a", False),
        (user("kp_a", "org_1", "credits:write"), "write", "org_1", True),
        (machine("org_1", "credits:write"), "write", "org_1", True),
        (machine("org_1", "credits:admin"), "write", "org_2", False),
        (machine(None, "credits:read"), "write", "org_2", False),
        (machine(None, "credits:admin"), "admin", "kp_x", True),
    ],
)
def test_may_combines_reach_and_scope(
    principal: Principal, action: str, wallet: str, expected: bool
) -> None:
    assert principal.may(action, wallet) is expected  # type: ignore[arg-type]


def test_principal_is_frozen_and_hashable() -> None:
    p = user()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.subject = "kp_other"  # type: ignore[misc]
    assert hash(p) == hash(user())


@pytest.mark.parametrize(
    ("value", "user_id", "org_code"),
    [
        ("kp_65b2aa", True, False),
        ("org_590d7f1a86a", False, True),
        ("kp_a-B_9", True, False),
        ("kp_", False, False),
        ("org_", False, False),
        ("", False, False),
        (None, False, False),
        (42, False, False),
        ("KP_a", False, False),
        ("kp_a/b", False, False),
        ("kp_" + "a" * 61, True, False),
        ("kp_" + "a" * 62, False, False),
        ("org_" + "a" * 61, False, False),
        ("kp_a\n", False, False),
    ],
)
def test_kinde_id_shapes(value: object, user_id: bool, org_code: bool) -> None:
    assert is_user_id(value) is user_id
    assert is_org_code(value) is org_code
