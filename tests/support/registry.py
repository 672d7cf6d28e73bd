"""The MongoDB registry of the contract tests (a real server or mongomock)."""

from __future__ import annotations

import os

from quantlab.registry import Registry

MONGO_URL = os.environ.get("QUANTLAB_TEST_MONGO_URL")


def make_mongo_registry(db_name: str) -> Registry:
    from quantlab.registry.mongo import MongoRegistry

    if MONGO_URL:
        return MongoRegistry(MONGO_URL, db_name)
    import mongomock
    import mongomock.gridfs

    mongomock.gridfs.enable_gridfs_integration()
    return MongoRegistry(client=mongomock.MongoClient(), db_name=db_name)
