"""MongoDB registry specifics: schema migration, unreachable server, too-new store.

Runs against a real server when ``QUANTLAB_TEST_MONGO_URL`` is set, else mongomock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from quantlab.errors import QuantlabError, SchemaError, ServerUnreachable
from quantlab.registry.mongo import MongoRegistry, redact
from tests.support.procs import free_port
from tests.support.registry import MONGO_URL, make_mongo_registry


@pytest.fixture
def mongo_db() -> Iterator[tuple[Any, str]]:
    """(client, database name) of an empty database."""
    name = f"quantlab_test_{uuid.uuid4().hex[:12]}"
    if MONGO_URL:
        import pymongo

        client: Any = pymongo.MongoClient(MONGO_URL)
    else:
        import mongomock
        import mongomock.gridfs

        mongomock.gridfs.enable_gridfs_integration()
        client = mongomock.MongoClient()
    yield client, name
    client.drop_database(name)
    client.close()


def test_v1_store_is_migrated_with_indexes_and_defaults(mongo_db: tuple[Any, str]) -> None:
    client, name = mongo_db
    client[name]["runs"].insert_many([  # schema 1: bare documents, no meta, no indexes
        {"_id": "old1", "name": "legacy", "status": "completed", "symbols": ["AAA"],
         "metrics": {"sharpe": 1.5}, "queued_at": 1e9},
        {"_id": "old2", "name": "legacy 2", "status": "failed", "symbols": ["BBB"],
         "metrics": {"sharpe": 0.1}, "queued_at": 1e9 + 1},
    ])
    reg = MongoRegistry(client=client, db_name=name, auto_migrate=False)
    assert reg.schema_version() == 1
    assert reg.migrate() == (1, 2)
    assert [d["id"] for d in reg.find_runs(symbol="AAA")] == ["old1"]
    assert [d["id"] for d in reg.find_runs(sort="-sharpe")] == ["old1", "old2"]
    assert reg.get_run("old2")["cancel_requested"] is False
    index_keys = [list(ix["key"].keys()) for ix in reg.runs.list_indexes()]
    assert ["symbols"] in index_keys and ["metrics.$**"] in index_keys
    assert ["status", "queued_at"] in index_keys


def test_newer_store_says_upgrade(mongo_db: tuple[Any, str]) -> None:
    client, name = mongo_db
    client[name]["meta"].insert_one({"_id": "schema", "version": 7})
    with pytest.raises(SchemaError, match="has schema 7, newer than this QuantLab understands"):
        MongoRegistry(client=client, db_name=name)


def test_unreachable_server_names_the_url_and_the_fix() -> None:
    url = f"mongodb://analyst:s3cret@127.0.0.1:{free_port()}"
    with pytest.raises(QuantlabError) as info:
        MongoRegistry(url, "quantlab", server_selection_timeout_ms=300)
    message = str(info.value)
    assert message.startswith("cannot reach MongoDB at mongodb://analyst:***@127.0.0.1:")
    assert "s3cret" not in message
    assert "unset QUANTLAB_MONGO_URL to use the local SQLite registry" in message


def test_redact_hides_only_the_password() -> None:
    assert redact("mongodb://u:pw@h:1/db") == "mongodb://u:***@h:1/db"
    assert redact("mongodb://h:1") == "mongodb://h:1"


def test_two_registry_objects_see_each_others_writes() -> None:
    name = f"quantlab_test_{uuid.uuid4().hex[:12]}"
    if MONGO_URL:
        a: MongoRegistry = make_mongo_registry(name)  # type: ignore[assignment]
        b = MongoRegistry(MONGO_URL, name)
    else:
        a = make_mongo_registry(name)  # type: ignore[assignment]
        b = MongoRegistry(client=a.client, db_name=name)
    a.insert_run({"id": "shared", "status": "running"})
    assert b.update_run("shared", {"status": "completed"}, expect_status=["running"]) is True
    assert a.update_run("shared", {"status": "completed"}, expect_status=["running"]) is False
    assert a.get_run("shared")["status"] == "completed"
    a.client.drop_database(name)


def test_a_connection_lost_after_opening_is_a_quantlab_error_naming_the_url(
        mongo_db: tuple[Any, str]) -> None:
    """MongoDB going away under an open registry: every call says which server and what to do,
    not pymongo's traceback (a real client to a port where nothing listens)."""
    import pymongo

    client, name = mongo_db
    registry = MongoRegistry(client=client, db_name=name)
    run_id = "R1"
    registry.insert_run({"id": run_id, "status": "queued", "queued_at": 1.0})
    url = f"mongodb://analyst:s3cret@127.0.0.1:{free_port()}"
    dead: Any = pymongo.MongoClient(url, serverSelectionTimeoutMS=200)
    registry.runs = dead["quantlab"]["runs"]
    registry._url, registry.location = redact(url), redact(url)
    for call in (lambda: registry.get_run(run_id), lambda: registry.find_runs(status="queued"),
                 lambda: registry.update_run(run_id, {"step": "x"})):
        with pytest.raises(ServerUnreachable) as info:
            call()
        message = str(info.value)
        assert message.startswith("cannot reach MongoDB at mongodb://analyst:***@127.0.0.1:")
        assert "s3cret" not in message and info.value.fields["url"] == redact(url)
        assert "unset QUANTLAB_MONGO_URL to use the local SQLite registry" in message
    dead.close()
