"""Tokens in the index: the admin token that several instances make at once."""

from __future__ import annotations

import secrets
import threading

from tfstorage.domain.caller import SCOPES
from tfstorage.index import ObjectIndex
from tfstorage.index.access import AccessIndex


def _ensure(tokens: AccessIndex, secret_hash: str) -> tuple[str, bool]:
    token, made = tokens.ensure_token(
        name="admin (ADMIN_TOKEN)", owner="admin", secret_hash=secret_hash, scopes=list(SCOPES)
    )
    return token.id, made


def test_ensure_token_makes_it_once_and_then_finds_it(index: ObjectIndex) -> None:
    tokens = AccessIndex(index.engine)
    secret_hash = secrets.token_hex(32)  # tokens outlive a test on the shared PostgreSQL
    first, made = _ensure(tokens, secret_hash)
    assert made
    again, made_again = _ensure(tokens, secret_hash)
    assert (again, made_again) == (first, False)
    found = tokens.token_by_hash(secret_hash)
    assert found is not None and found.id == first
    assert found.buckets == ("*",) and set(found.scopes) == set(SCOPES)
    assert [t.id for t in tokens.list_tokens() if t.id == first] == [first]


def test_instances_ensuring_one_token_at_once_all_succeed(index: ObjectIndex) -> None:
    """Each thread its own connection and transaction, released together: on PostgreSQL
    the losers' INSERTs wait on the winner's row and then do nothing (a plain INSERT
    failed their start-up with a unique violation)."""
    tokens = AccessIndex(index.engine)
    secret_hash = secrets.token_hex(32)
    start = threading.Barrier(4)
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def instance() -> None:
        start.wait()
        try:
            results.append(_ensure(tokens, secret_hash))
        except BaseException as exc:  # reported below, with the others' results
            errors.append(exc)

    threads = [threading.Thread(target=instance) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({token_id for token_id, _ in results}) == 1
    assert sorted(made for _, made in results) == [False, False, False, True]
