"""The Jupyter Server extension, through a real ``jupyter server`` subprocess (token auth, free
port, its own QUANTLAB_HOME) and a real QuantLab worker: every endpoint, authentication and
XSRF, validation messages, paging, and the event WebSocket with its resume after a reconnect."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import websocket  # websocket-client

from quantlab.server.handlers import jupyter_username
from tests.support.procs import wait_for
from tests.support.server import ROOT, JupyterProcess, Worker, quantlab_env

API = "/quantlab/api"
CONFIG = {"strategy": "sma_crossover", "symbols": ["AAA"], "params": {"fast": 10, "slow": 50}}


class Lab(SimpleNamespace):
    server: JupyterProcess
    home: Path

    def registry(self) -> Any:
        from quantlab.registry import open_registry

        return open_registry()

    def events(self) -> Any:
        from quantlab.events import open_events

        return open_events()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One server + worker for the module, over a home with the sample data installed."""
    base = tmp_path_factory.mktemp("server")
    home, root = base / "home", base / "root"
    root.mkdir()
    env = quantlab_env(home, base / "jupyter")
    with pytest.MonkeyPatch.context() as mp:
        for key in ("QUANTLAB_HOME", "QUANTLAB_USER", "QUANTLAB_REDIS_URL", "QUANTLAB_MONGO_URL",
                    "QUANTLAB_QUEUE_MAX"):
            if key in env:
                mp.setenv(key, env[key])
            else:
                mp.delenv(key, raising=False)
        import quantlab as ql

        ql.data.sample()
        worker = Worker(env, base / "worker.log")
        server = JupyterProcess(env, root, base / "server.log")
        try:
            worker.wait_alive(home)
            server.wait_ready()
            yield Lab(server=server, home=home, root=root)
        finally:
            server.stop()
            worker.stop()


def insert_run(lab: Lab, **fields: Any) -> str:
    """A run document written straight to the registry (as a worker would have left it)."""
    from quantlab.jobs.orchestrator import new_run_id

    doc = {"id": new_run_id(), "name": "inserted", "user": "tester", "status": "completed",
           "strategy": "sma_crossover", "symbols": ["AAA"], "config": dict(CONFIG),
           "queued_at": time.time(), **fields}
    lab.registry().insert_run(doc)
    return str(doc["id"])


def wait_status(lab: Lab, run_id: str, statuses: tuple[str, ...], timeout: float = 120) -> dict:
    def record_if_there() -> dict | None:
        status, record = lab.server.request("GET", f"{API}/runs/{run_id}")
        assert status == 200, record
        return dict(record) if record["status"] in statuses else None

    return dict(wait_for(record_if_there, timeout, f"run {run_id} to be {statuses}",
                         interval=0.1,
                         detail=lambda: (lab.home / "worker.log").read_text()[-2000:]))


# -- installation ---------------------------------------------------------------------------


def _jupyter(*commands: tuple[str, ...]) -> list[str]:
    """Run jupyter commands at once (each takes seconds to import); their uncoloured output."""
    procs = [subprocess.Popen([sys.executable, "-m", "jupyter", *args], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for args in commands]
    return [re.sub(r"\x1b\[[0-9;]*m", "", proc.communicate(timeout=120)[0]) for proc in procs]


def test_jupyter_lists_both_extensions_enabled_and_ok() -> None:
    assert (ROOT / "quantlab" / "labextension" / "package.json").exists(), (
        "the Lab extension is not built: run bash scripts/build-extension.sh")
    labext, server = _jupyter(("labextension", "list"), ("server", "extension", "list"))
    assert re.search(r"quantlab v0\.1\.0 enabled\s+OK", labext), labext
    assert re.search(r"quantlab enabled", server), server
    assert re.search(r"quantlab 0\.1\.0 OK", server), server


@pytest.mark.slow
def test_the_wheel_ships_the_lab_extension_and_the_server_config(tmp_path: Path) -> None:
    import zipfile

    assert (ROOT / "quantlab" / "labextension" / "package.json").exists(), (
        "the Lab extension is not built: run bash scripts/build-extension.sh")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True, timeout=300,
                   capture_output=True)
    (wheel,) = tmp_path.glob("quantlab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = "quantlab-0.1.0.data/data/"
    assert "quantlab/labextension/package.json" in names
    assert f"{data}share/jupyter/labextensions/quantlab/package.json" in names
    assert f"{data}share/jupyter/labextensions/quantlab/schemas/quantlab/plugin.json" in names
    assert any(n.startswith(f"{data}share/jupyter/labextensions/quantlab/static/remoteEntry.")
               for n in names)
    config = f"{data}etc/jupyter/jupyter_server_config.d/quantlab.json"
    assert json.loads(zipfile.ZipFile(wheel).read(config)) == {
        "ServerApp": {"jpserver_extensions": {"quantlab": True}}}


def test_the_server_loads_the_extension(lab: Lab) -> None:
    assert "quantlab | extension was successfully loaded" in lab.server.log_text()


# -- authentication and XSRF -----------------------------------------------------------------

ENDPOINTS = [
    ("GET", "/runs"), ("POST", "/runs"), ("GET", "/runs/X1"), ("POST", "/runs/X1/cancel"),
    ("POST", "/runs/X1/rerun"), ("POST", "/runs/X1/report"), ("GET", "/runs/X1/report"),
    ("GET", "/compare?ids=X1,X2"), ("GET", "/notifications"), ("POST", "/notifications/N1/read"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_endpoint_refuses_a_request_without_login(lab: Lab, method: str, path: str) -> None:
    body = {"config": CONFIG} if method == "POST" else None
    before = lab.registry().count_runs()
    status, reply = lab.server.request(method, API + path, body, token=False)
    assert status in (401, 403)
    assert "not logged in to Jupyter" in reply["message"]
    assert "Authorization: token <token>" in reply["message"]
    assert lab.registry().count_runs() == before
    status, _ = lab.server.request(method, API + path, body,
                                   headers={"Authorization": "token wrong-token"}, token=False)
    assert status in (401, 403)


def _cookie_session(lab: Lab) -> tuple[str, str]:
    """Log in like a browser (token in the URL once) and return (Cookie header, _xsrf)."""
    import http.cookiejar
    import urllib.request

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    # Any page sets the _xsrf cookie (jupyter_server alone has no /tree: its 404 page does too);
    # the token in the URL sets the login cookie.
    with contextlib.suppress(urllib.error.HTTPError):
        opener.open(f"{lab.server.base}/login?token={lab.server.token}", timeout=30).close()
    cookies = {c.name: c.value for c in jar}
    assert "_xsrf" in cookies, cookies
    header = "; ".join(f"{k}={v}" for k, v in cookies.items())
    return header, str(cookies["_xsrf"])


def test_cookie_login_needs_the_xsrf_token_for_a_post(lab: Lab) -> None:
    cookie, xsrf = _cookie_session(lab)
    status, page = lab.server.request("GET", f"{API}/runs", token=False,
                                      headers={"Cookie": cookie})
    assert status == 200 and "runs" in page
    run_id = insert_run(lab, status="queued", name="xsrf target")
    status, reply = lab.server.request("POST", f"{API}/runs/{run_id}/cancel", token=False,
                                       headers={"Cookie": cookie})
    assert status == 403
    assert "'_xsrf' argument missing" in reply["message"]
    assert "X-XSRFToken header" in reply["message"]
    assert lab.registry().get_run(run_id)["status"] == "queued"
    status, record = lab.server.request("POST", f"{API}/runs/{run_id}/cancel", token=False,
                                        headers={"Cookie": cookie, "X-XSRFToken": xsrf})
    assert status == 200
    assert record["status"] == "cancelled"


def test_a_run_submitted_with_a_token_only_is_recorded_under_the_server_account() -> None:
    anonymous = SimpleNamespace(username="9f" * 16, name="Anonymous Io")
    assert jupyter_username(anonymous) == os.environ.get("QUANTLAB_USER", jupyter_username(None))
    named = SimpleNamespace(username="alice", name="Alice Liddell")
    assert jupyter_username(named) == "alice"


# -- submit and validation -------------------------------------------------------------------


def test_submit_queues_a_run_that_the_worker_completes(lab: Lab) -> None:
    status, record = lab.server.request("POST", f"{API}/runs", {
        "config": CONFIG, "name": "via the API", "tags": ["api"], "cache": False})
    assert status == 201, record
    assert record["status"] in ("queued", "running", "completed")
    assert record["name"] == "via the API" and record["tags"] == ["api"]
    assert record["user"] == "tester"  # token login: the server's account (QUANTLAB_USER)
    done = wait_status(lab, record["id"], ("completed", "failed"))
    assert done["status"] == "completed", done.get("error")
    assert done["progress"] == 1.0
    assert isinstance(done["metrics"]["sharpe"], float)
    assert done["config"]["params"] == {"fast": 10, "slow": 50}


def test_submit_accepts_the_text_of_a_backtest_cell(lab: Lab) -> None:
    text = "strategy: sma_crossover\nsymbols: [BBB]\nparams: {fast: 5..15:5, slow: 60}\n"
    status, record = lab.server.request("POST", f"{API}/runs", {"config": text})
    assert status == 201, record
    assert record["config"]["params"]["fast"] == [5, 10, 15]
    assert record["symbols"] == ["BBB"]


BAD_SUBMISSIONS = [
    ({"config": {**CONFIG, "comission": 0.001}},
     "unknown key 'comission' — did you mean 'commission'?", "comission"),
    ({"config": {**CONFIG, "symbols": ["ZZZZ"]}}, "ZZZZ", "symbols"),
    ({"config": "strategy: sma_crossover\nsymbols: [AAA\n"}, "line", None),
    ({"config": CONFIG, "user": "mallory"}, "recorded under your Jupyter login", "user"),
    ({"config": CONFIG, "priorty": 1}, "did you mean 'priority'?", "priorty"),
    ({"name": "no config"}, "the request has no config", "config"),
    ({"config": 42}, "'config' must be an object or YAML text", "config"),
    ({"config": CONFIG, "priority": "high"}, "priority must be a whole number", "priority"),
    # values out of what the system can hold: refused before anything is allocated or written
    ({"config": {**CONFIG, "end": "9999-12-31"}}, "end: 9999-12-31 is outside the dates", "end"),
    ({"config": CONFIG, "priority": 10**30}, "priority must be between -1,000,000 and 1,000,000",
     "priority"),
    ({"config": {**CONFIG, "symbols": ["S" * 300]}}, "is 300 characters long; a symbol has at "
     "most 64", "symbols"),
    ({"config": "strategy: sma_crossover\nsymbols: [AAA]\nparams: {fast: 1..30000, "
                "slow: 2..30001}\n"},
     "the sweep spans 900,000,000 combinations (30,000 fast x 30,000 slow)", "params"),
    ({"config": {**CONFIG, "params": {"fast": 10, "slow": 5000}}},
     "no signal can form: slow=5,000 > ", "params.slow"),
    ({"config": "strategy: sma_crossover\nsymbols: [AAA]\nparams: {fast: 5, fast: 8}\n"},
     "duplicate key 'params.fast'", "params.fast"),
]


@pytest.mark.parametrize(("body", "message", "field"), BAD_SUBMISSIONS)
def test_a_bad_submission_is_a_400_with_the_magics_message(lab: Lab, body: dict, message: str,
                                                          field: str | None) -> None:
    before = lab.registry().count_runs()
    status, reply = lab.server.request("POST", f"{API}/runs", body)
    assert status == 400, reply
    assert message in reply["message"]
    assert reply["type"] in ("ConfigError", "DataError")
    if field is not None:
        assert reply["field"] == field
    assert lab.registry().count_runs() == before  # nothing was created


def test_the_api_says_the_same_as_the_notebook(lab: Lab) -> None:
    import quantlab as ql

    bad = {**CONFIG, "slow": 50}
    with pytest.raises(ql.ConfigError) as raised:
        ql.submit(bad)
    status, reply = lab.server.request("POST", f"{API}/runs", {"config": bad})
    assert status == 400
    assert reply["message"] == str(raised.value)


def test_a_body_that_is_not_json_is_a_400_that_shows_an_example(lab: Lab) -> None:
    status, reply = lab.server.request("POST", f"{API}/runs", b"{strategy: oops")
    assert status == 400
    assert "not valid JSON" in reply["message"] and '"config"' in reply["message"]


# -- listing, paging, one run ------------------------------------------------------------------


def test_listing_pages_through_a_search_newest_first(lab: Lab) -> None:
    tag = f"page-{time.time_ns()}"
    now = time.time()
    ids = [insert_run(lab, name=f"paged {i}", tags=[tag], queued_at=now - 100 + i,
                      metrics={"sharpe": 0.5 * i}) for i in range(7)]
    newest_first = ids[::-1]
    seen: list[str] = []
    for offset in range(0, 7, 3):
        status, page = lab.server.request("GET", f"{API}/runs?tag={tag}&limit=3&offset={offset}")
        assert status == 200, page
        assert page["total"] == 7 and page["limit"] == 3 and page["offset"] == offset
        assert "config" not in page["runs"][0]  # listings stay small
        seen += [r["id"] for r in page["runs"]]
    assert seen == newest_first
    status, page = lab.server.request(
        "GET", f"{API}/runs?tag={tag}&where={urllib.parse.quote('sharpe>1.2')}&sort=-sharpe")
    assert [r["id"] for r in page["runs"]] == [ids[6], ids[5], ids[4], ids[3]]
    assert page["total"] == 4
    status, page = lab.server.request("GET", f"{API}/runs?tag={tag}&text=PAGED%203")
    assert [r["id"] for r in page["runs"]] == [ids[3]]
    status, page = lab.server.request(
        "GET", f"{API}/runs?tag={tag}&since={now - 100 + 4.5}&until={now - 100 + 5.5}")
    assert [r["id"] for r in page["runs"]] == [ids[5]]
    iso = dt.datetime.fromtimestamp(now - 100 + 5.5, dt.UTC).isoformat()  # ...+00:00
    status, page = lab.server.request(
        "GET", f"{API}/runs?tag={tag}&since={urllib.parse.quote(iso)}")
    assert status == 200, page
    assert [r["id"] for r in page["runs"]] == [ids[6]]


def test_listing_filters_take_several_values(lab: Lab) -> None:
    tag = f"multi-{time.time_ns()}"
    queued = insert_run(lab, tags=[tag], status="queued")
    failed = insert_run(lab, tags=[tag], status="failed", error="boom")
    insert_run(lab, tags=[tag], status="completed")
    for query in ("status=queued,failed", "status=queued&status=failed"):
        status, page = lab.server.request("GET", f"{API}/runs?tag={tag}&{query}")
        assert status == 200
        assert {r["id"] for r in page["runs"]} == {queued, failed}


def test_the_listing_tells_the_event_seq_it_is_current_to(lab: Lab) -> None:
    run_id = insert_run(lab, status="running")
    event = lab.events().publish(run_id, "progress", {"percent": 10.0})
    _status, page = lab.server.request("GET", f"{API}/runs?limit=1")
    assert page["seq"] >= event.seq


BAD_QUERIES = [
    ("stauts=queued", "unknown query parameter 'stauts'", "did you mean 'status'?"),
    ("limit=abc", "'limit' must be a whole number between 0 and 500", "'abc'"),
    ("limit=100000", "'limit' must be a whole number between 0 and 500", "'100000'"),
    ("offset=-1", "'offset' must be a whole number >= 0", "'-1'"),
    ("status=runing", "runing", "running"),
    ("where=sharpe%3E%3Dabc", "threshold", "sharpe"),
    ("sort=-sharp", "sort", "sharp"),
    ("strategy=sma_crosover", "no run has strategy 'sma_crosover'",
     "did you mean 'sma_crossover'?"),
    ("where=sharpe%3E%3E1", "unknown comparison '>>'", "did you mean '>'?"),
    ("where=sharpee%3E1", "no run records the metric 'sharpee'", "did you mean 'sharpe'?"),
]


def test_a_search_that_finds_nothing_with_known_values_is_just_empty(lab: Lab) -> None:
    insert_run(lab, metrics={"sharpe": 1.0})
    status, page = lab.server.request(
        "GET", f"{API}/runs?strategy=sma_crossover&text=no-such-name-at-all&where=sharpe%3E1")
    assert status == 200, page
    assert page["total"] == 0 and page["runs"] == []


@pytest.mark.parametrize(("query", "message", "hint"), BAD_QUERIES)
def test_a_bad_search_is_a_400_that_names_the_fix(lab: Lab, query: str, message: str,
                                                  hint: str) -> None:
    insert_run(lab, metrics={"sharpe": 1.0})  # so that metric names are known to the sort
    status, reply = lab.server.request("GET", f"{API}/runs?{query}")
    assert status == 400, reply
    assert message in reply["message"] and hint in reply["message"]


def test_an_empty_search_never_denies_a_value_older_runs_have(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The did-you-mean scan reads recent runs only; a tag on an older run is looked up
    before the search is refused with "no run has tag …"."""
    from quantlab.errors import ConfigError
    from quantlab.registry import open_registry
    from quantlab.server import handlers

    monkeypatch.setenv("QUANTLAB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("QUANTLAB_MONGO_URL", raising=False)
    registry = open_registry()
    for n, tags in enumerate((["old-idea"], [], [])):
        registry.insert_run({"id": f"R{n}", "status": "completed", "queued_at": float(n),
                             "strategy": "sma_crossover", "tags": tags})
    monkeypatch.setattr(handlers, "EXPLAIN_SCAN", 2)  # the two newest: neither has the tag
    handlers.explain_empty_search({"tag": ["old-idea"], "status": ["failed"]})  # no refusal
    with pytest.raises(ConfigError, match="no run has tag 'old-ide'; filter by one of"):
        handlers.explain_empty_search({"tag": ["old-ide"]})


def test_one_run_has_its_config_and_an_unknown_one_is_a_404(lab: Lab) -> None:
    run_id = insert_run(lab, name="single")
    status, record = lab.server.request("GET", f"{API}/runs/{run_id}")
    assert status == 200
    assert record["name"] == "single" and record["config"] == CONFIG
    status, reply = lab.server.request("GET", f"{API}/runs/01NOSUCHRUN")
    assert status == 404
    assert "01NOSUCHRUN" in reply["message"] and reply["type"] == "RunNotFound"


def test_an_unknown_endpoint_lists_the_api(lab: Lab) -> None:
    status, reply = lab.server.request("GET", f"{API}/rnus")
    assert status == 404
    assert "GET runs" in reply["message"] and "rnus" in reply["message"]


# -- cancel, rerun ---------------------------------------------------------------------------------


def test_cancel_a_queued_run(lab: Lab) -> None:
    run_id = insert_run(lab, status="queued", name="to cancel")
    after = lab.events().last_seq()
    status, record = lab.server.request("POST", f"{API}/runs/{run_id}/cancel")
    assert status == 200
    assert record["status"] == "cancelled"
    assert [e.type for e in lab.events().read(run_id, after)] == ["cancelled"]
    status, reply = lab.server.request("POST", f"{API}/runs/01NOSUCHRUN/cancel")
    assert status == 404 and "01NOSUCHRUN" in reply["message"]


def test_cancelling_a_finished_run_leaves_it_as_it_was(lab: Lab) -> None:
    run_id = insert_run(lab, status="completed", metrics={"sharpe": 2.0})
    status, record = lab.server.request("POST", f"{API}/runs/{run_id}/cancel")
    assert status == 200
    assert record["status"] == "completed" and record["metrics"] == {"sharpe": 2.0}


def test_only_the_owner_may_cancel_and_a_rerun_is_the_callers(lab: Lab) -> None:
    # the server's login is "tester" (token auth: QUANTLAB_USER), no QUANTLAB_ADMINS
    theirs = insert_run(lab, status="queued", user="alice", name="alice's run")
    after = lab.events().last_seq(theirs)
    status, reply = lab.server.request("POST", f"{API}/runs/{theirs}/cancel")
    assert status == 403, reply
    assert reply["message"] == (f"run {theirs} belongs to alice: only alice or an admin "
                                f"(QUANTLAB_ADMINS) can cancel it; you are tester")
    assert reply["type"] == "NotOwner" and reply["owner"] == "alice" and reply["user"] == "tester"
    assert lab.registry().get_run(theirs)["status"] == "queued"
    assert not lab.registry().get_run(theirs).get("cancel_requested")
    assert list(lab.events().read(theirs, after)) == []
    lab.registry().update_run(theirs, {"status": "completed"}, expect_status=("queued",))
    # a rerun of another user's run is a new run of the caller's
    status, again = lab.server.request("POST", f"{API}/runs/{theirs}/rerun")
    assert status == 201, again
    assert again["user"] == "tester" and again["rerun_of"] == theirs
    status, record = lab.server.request("POST", f"{API}/runs/{again['id']}/cancel")
    assert status == 200 and record["user"] == "tester"


def test_another_users_notification_cannot_be_marked_read(lab: Lab) -> None:
    registry = lab.registry()
    theirs = registry.add_notification({"user": "alice", "run_id": "R1", "kind": "completed",
                                        "title": "run completed", "body": "sharpe 1.2"})
    status, reply = lab.server.request("POST", f"{API}/notifications/{theirs}/read")
    assert status == 403, reply
    assert reply["message"] == (f"notification {theirs} belongs to alice: only alice or an "
                                f"admin (QUANTLAB_ADMINS) can mark it read; you are tester")
    assert registry.get_notification(theirs)["read"] is False


def test_rerun_submits_the_stored_config_again_without_the_cache(lab: Lab) -> None:
    status, first = lab.server.request("POST", f"{API}/runs", {"config": CONFIG})
    assert status == 201
    done = wait_status(lab, first["id"], ("completed", "failed"))
    assert done["status"] == "completed"
    status, again = lab.server.request("POST", f"{API}/runs/{first['id']}/rerun")
    assert status == 201, again
    assert again["id"] != first["id"]
    assert again["config_hash"] == done["config_hash"]  # the same backtest (name, tags aside)
    assert again["cached_from"] is None  # cache=False: really executed again
    # marked as `quantlab rerun` marks it, so the list tells it from its original
    assert again["rerun_of"] == first["id"] and "rerun" in again["tags"]
    assert again["name"] == f"rerun of {done.get('name') or first['id']}"
    redone = wait_status(lab, again["id"], ("completed", "failed"))
    assert redone["metrics"]["sharpe"] == pytest.approx(done["metrics"]["sharpe"])
    status, _reply = lab.server.request("POST", f"{API}/runs/01NOSUCHRUN/rerun")
    assert status == 404


# -- compare, report --------------------------------------------------------------------------------


def test_compare_two_completed_runs(lab: Lab) -> None:
    ids = []
    for symbol in ("CCC", "DDD"):
        status, record = lab.server.request("POST", f"{API}/runs", {
            "config": {**CONFIG, "symbols": [symbol]}, "name": f"cmp {symbol}"})
        assert status == 201
        ids.append(record["id"])
    records = [wait_status(lab, run_id, ("completed", "failed")) for run_id in ids]
    status, reply = lab.server.request("GET", f"{API}/compare?ids={','.join(ids)}")
    assert status == 200, reply
    assert reply["run_ids"] == ids
    for record in records:
        assert reply["metrics"][record["id"]]["sharpe"] == pytest.approx(
            record["metrics"]["sharpe"])
    assert reply["labels"] == {ids[0]: "cmp CCC", ids[1]: "cmp DDD"}
    assert reply["id"] and f"comparison={reply['id']}" in reply["dashboard_url"]
    saved = lab.registry().get_document("comparisons", reply["id"])
    assert saved["run_ids"] == ids
    # comparing them again reuses the saved comparison instead of adding another
    status, again = lab.server.request("GET", f"{API}/compare?ids={','.join(ids)}")
    assert status == 200 and again["id"] == reply["id"]
    assert [d["id"] for d in lab.registry().list_documents("comparisons")
            if d["run_ids"] == ids] == [reply["id"]]


@pytest.mark.parametrize(("query", "status", "message"), [
    ("ids=ONLYONE", 400, "compare needs 2 to 5 run ids, got 1"),
    ("idz=A,B", 400, "unknown query parameter 'idz'"),
    ("ids=01NOSUCHRUN,01NOSUCHRUN2", 404, "01NOSUCHRUN"),
])
def test_a_bad_comparison_says_why(lab: Lab, query: str, status: int, message: str) -> None:
    got, reply = lab.server.request("GET", f"{API}/compare?{query}")
    assert got == status, reply
    assert message in reply["message"]


def test_comparing_an_unfinished_run_is_a_conflict_that_says_to_wait(lab: Lab) -> None:
    done = insert_run(lab, status="completed")
    queued = insert_run(lab, status="queued")
    status, reply = lab.server.request("GET", f"{API}/compare?ids={queued},{done}")
    assert status == 409
    assert "queued" in reply["message"] and "wait" in reply["message"]


def test_report_of_an_unknown_run_is_a_404(lab: Lab) -> None:
    status, reply = lab.server.request("POST", f"{API}/runs/01NOSUCHRUN/report")
    assert status == 404 and "01NOSUCHRUN" in reply["message"]
    status, reply = lab.server.request("GET", f"{API}/runs/01NOSUCHRUN/report")
    assert status == 404 and "01NOSUCHRUN" in reply["message"]


def test_a_run_without_a_report_says_how_to_make_one(lab: Lab) -> None:
    run_id = insert_run(lab)
    status, reply = lab.server.request("GET", f"{API}/runs/{run_id}/report")
    assert status == 404
    assert "has no report yet" in reply["message"] and f"runs/{run_id}/report" in reply["message"]


def test_a_report_of_a_queued_run_is_a_conflict_that_says_to_wait(lab: Lab) -> None:
    run_id = insert_run(lab, status="queued")
    status, reply = lab.server.request("POST", f"{API}/runs/{run_id}/report")
    assert status == 409
    assert "queued" in reply["message"] and "wait" in reply["message"]


@pytest.mark.slow
def test_a_report_is_executed_kept_and_shown_as_a_page(lab: Lab) -> None:
    status, record = lab.server.request("POST", f"{API}/runs", {
        "config": {**CONFIG, "symbols": ["FFF"]}, "name": "reported run"})
    assert status == 201
    wait_status(lab, record["id"], ("completed",))
    status, report = lab.server.request("POST", f"{API}/runs/{record['id']}/report")
    assert status == 201, report
    notebook = Path(report["notebook"])
    assert notebook.exists() and notebook.suffix == ".ipynb"
    assert report["lab_path"] is None  # kept under QUANTLAB_HOME, outside the server's root
    assert report["url"] == f"quantlab/api/runs/{record['id']}/report"
    assert lab.registry().get_run(record["id"])["report_ref"] == report["report_ref"]
    status, page = lab.server.request("GET", "/" + report["url"])
    assert status == 200
    assert page.lstrip().lower().startswith("<!doctype html") and record["id"] in page


REPORT_PAGE = ("<!DOCTYPE html><html><head><style>body { color: rgb(1, 2, 3); }</style>"
               "<script src=\"https://cdn.example.com/evil.js\"></script></head><body>"
               "<div style=\"color: red\">x</div><script>document.title = 'ok';</script>"
               "<style type=\"text/css\">p { margin: 0 }</style></body></html>")


def test_the_report_page_allows_exactly_its_own_inline_css_and_scripts(lab: Lab) -> None:
    run_id = insert_run(lab, report_ref="runs/csp/report.html")
    lab.registry().put_blob("runs/csp/report.html", REPORT_PAGE.encode())
    req = urllib.request.Request(f"{lab.server.base}{API}/runs/{run_id}/report")
    req.add_header("Authorization", f"token {lab.server.token}")
    pages, policies = [], []
    for _ in range(2):
        with urllib.request.urlopen(req, timeout=60) as resp:
            pages.append(resp.read().decode())
            policies.append(resp.headers["Content-Security-Policy"])
    nonce = re.search(r"script-src 'nonce-([^']+)'", policies[0])
    assert nonce, policies[0]
    page = pages[0]
    # every inline element carries this response's nonce; the CDN script none
    assert page.count(f'nonce="{nonce[1]}"') == 4  # and the shim's own script
    assert '<script src="https://cdn.example.com/evil.js">' in page
    assert f"style-src 'nonce-{nonce[1]}'" in policies[0]
    assert "default-src 'none'" in policies[0] and "https:" not in policies[0]
    # the style attribute by its hash, nothing else inline
    digest = base64.b64encode(hashlib.sha256(b"color: red").digest()).decode()
    assert f"style-src-attr 'unsafe-hashes' 'sha256-{digest}'" in policies[0]
    assert "unsafe-inline" not in policies[0]
    # a fresh nonce per response
    assert nonce[1] not in policies[1]


# -- notifications ----------------------------------------------------------------------------------


def test_notifications_are_the_users_and_can_be_marked_read(lab: Lab) -> None:
    registry = lab.registry()
    run_id = insert_run(lab)
    first = registry.add_notification({"user": "tester", "run_id": run_id, "kind": "completed",
                                       "title": "run completed", "body": "sharpe 1.2"})
    second = registry.add_notification({"user": "tester", "run_id": run_id, "kind": "failed",
                                        "title": "run failed", "body": "boom"})
    registry.add_notification({"user": "somebody-else", "run_id": run_id, "kind": "completed",
                               "title": "not yours", "body": ""})
    status, reply = lab.server.request("GET", f"{API}/notifications?unread_only=true")
    assert status == 200
    assert reply["user"] == "tester"
    unread = [n["id"] for n in reply["notifications"]]
    assert second in unread and first in unread
    assert all(n["user"] == "tester" for n in reply["notifications"])
    status, reply = lab.server.request("POST", f"{API}/notifications/{first}/read")
    assert status == 200 and reply == {"id": first, "read": True}
    status, reply = lab.server.request("GET", f"{API}/notifications?unread_only=1")
    assert first not in [n["id"] for n in reply["notifications"]]
    status, reply = lab.server.request("GET", f"{API}/notifications")
    assert {n["id"]: n["read"] for n in reply["notifications"]}[first] is True
    status, reply = lab.server.request("POST", f"{API}/notifications/nope/read")
    assert status == 404 and "no notification 'nope'" in reply["message"]
    status, reply = lab.server.request("GET", f"{API}/notifications?unread_only=maybe")
    assert status == 400 and "'unread_only' must be true or false" in reply["message"]


# -- the events WebSocket ---------------------------------------------------------------------------


def ws_url(lab: Lab, query: str = "", token: bool = True) -> str:
    params = [p for p in (query, f"token={lab.server.token}" if token else "") if p]
    return f"ws://127.0.0.1:{lab.server.port}{API}/events?{'&'.join(params)}"


def receive(ws: websocket.WebSocket, count: int, timeout: float = 30,
            run_id: str | None = None) -> list[dict[str, Any]]:
    """The next ``count`` messages; with ``run_id``, of that run only: an all-runs socket of the
    module's shared server also carries other tests' runs (the reaper re-queues the runs they
    inserted as running once their heartbeat is 10 s old)."""
    ws.settimeout(timeout)
    got: list[dict[str, Any]] = []
    while len(got) < count:
        message = json.loads(ws.recv())
        if run_id is None or message["run_id"] == run_id:
            got.append(message)
    return got


def nothing_more(ws: websocket.WebSocket, within: float = 0.5, run_id: str | None = None
                 ) -> bool:
    """True if no message (of ``run_id``, if given) arrives within ``within`` seconds."""
    try:
        extra = receive(ws, 1, timeout=within, run_id=run_id)
    except websocket.WebSocketTimeoutException:
        return True
    print("unexpected message:", extra)
    return False


def test_the_socket_streams_new_events_and_resumes_after_a_reconnect(lab: Lab) -> None:
    events = lab.events()
    run_id = insert_run(lab, status="running")
    start = events.last_seq()
    ws = websocket.create_connection(ws_url(lab, f"after={start}"), timeout=30)
    try:
        sent = [events.publish(run_id, "progress", {"percent": p, "step": "simulating"})
                for p in (10.0, 20.0)]
        got = receive(ws, 2, run_id=run_id)
        assert [m["seq"] for m in got] == [e.seq for e in sent]
        assert got[0] == {"seq": sent[0].seq, "run_id": run_id, "type": "progress",
                          "ts": sent[0].ts, "data": {"percent": 10.0, "step": "simulating"}}
    finally:
        ws.close()
    last_seen = got[-1]["seq"]
    # While the client is away, the run goes on.
    missed = [events.publish(run_id, "progress", {"percent": p}) for p in (30.0, 40.0)]
    missed.append(events.publish(run_id, "completed", {"metrics": {"sharpe": 1.1}}))
    ws = websocket.create_connection(ws_url(lab, f"after={last_seen}"), timeout=30)
    try:
        got = receive(ws, 3, run_id=run_id)
        assert [m["seq"] for m in got] == [e.seq for e in missed]  # no gap, no repeat
        assert [m["type"] for m in got] == ["progress", "progress", "completed"]
        live = events.publish(run_id, "log", {"message": "after the replay"})
        assert receive(ws, 1, run_id=run_id)[0]["seq"] == live.seq
        assert nothing_more(ws, run_id=run_id)
    finally:
        ws.close()


def test_without_after_the_socket_starts_from_now(lab: Lab) -> None:
    events = lab.events()
    run_id = insert_run(lab, status="running")
    history = events.publish(run_id, "progress", {"percent": 1.0})
    ws = websocket.create_connection(ws_url(lab), timeout=30)
    try:
        # The server subscribes once it has opened the socket: publish until something comes.
        published: list[int] = []
        received: dict[str, Any] | None = None
        for attempt in range(50):
            published.append(events.publish(run_id, "progress", {"percent": 2.0 + attempt}).seq)
            try:
                received = receive(ws, 1, timeout=0.2, run_id=run_id)[0]
                break
            except websocket.WebSocketTimeoutException:
                continue
        assert received is not None, "no live event arrived"
        assert received["seq"] in published and received["seq"] > history.seq
    finally:
        ws.close()


def test_a_socket_for_one_run_gets_only_that_runs_events(lab: Lab) -> None:
    events = lab.events()
    mine, other = insert_run(lab, status="running"), insert_run(lab, status="running")
    start = events.last_seq()
    ws = websocket.create_connection(ws_url(lab, f"after={start}&run_id={mine}"), timeout=30)
    try:
        events.publish(other, "progress", {"percent": 5.0})
        wanted = events.publish(mine, "progress", {"percent": 6.0})
        events.publish(other, "progress", {"percent": 7.0})
        got = receive(ws, 1)
        assert got[0]["seq"] == wanted.seq and got[0]["run_id"] == mine
        assert nothing_more(ws)
    finally:
        ws.close()


def test_the_socket_follows_a_submitted_run_to_its_end(lab: Lab) -> None:
    after = lab.events().last_seq()
    status, record = lab.server.request("POST", f"{API}/runs", {
        "config": {**CONFIG, "symbols": ["EEE"]}, "cache": False})
    assert status == 201
    ws = websocket.create_connection(ws_url(lab, f"after={after}&run_id={record['id']}"),
                                     timeout=30)
    try:
        types: list[str] = []
        ws.settimeout(120)
        while not types or types[-1] not in ("completed", "failed", "cancelled"):
            message = json.loads(ws.recv())
            assert message["run_id"] == record["id"]
            types.append(message["type"])
    finally:
        ws.close()
    assert types[0] == "queued" and "started" in types and types[-1] == "completed"
    assert types.index("started") < len(types) - 1


def test_the_socket_refuses_a_client_without_login(lab: Lab) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(ws_url(lab, token=False), timeout=30)
    assert refused.value.status_code in (401, 403)


def test_the_socket_refuses_a_bad_after(lab: Lab) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(ws_url(lab, "after=yesterday"), timeout=30)
    assert refused.value.status_code == 400
    assert b"'after' must be the seq of the last event" in (refused.value.resp_body or b"")


def test_the_hub_stops_following_when_the_last_socket_closes(tmp_path: Path) -> None:
    """The hub of a server process: one follower while sockets listen, none after."""
    import asyncio

    from quantlab.server.events import EventHub, Subscriber

    async def scenario() -> tuple[bool, bool]:
        hub = EventHub()
        subscriber = Subscriber(None)
        hub.subscribe(subscriber, 0)
        following = hub.following
        hub.unsubscribe(subscriber)
        for _ in range(100):  # the follower notices within one wait (1 s)
            if not hub.following:
                break
            await asyncio.sleep(0.05)
        return following, hub.following

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUANTLAB_HOME", str(tmp_path / "home"))
        started, still = asyncio.run(scenario())
    assert started is True and still is False


@pytest.mark.redis
def test_the_socket_resumes_over_redis_streams_in_team_mode(
        tmp_path: Path, redis_url: str) -> None:
    """Team mode: events are Redis Streams; the same socket contract holds."""
    env = quantlab_env(tmp_path / "home", tmp_path / "jupyter",
                       {"QUANTLAB_REDIS_URL": redis_url})
    (tmp_path / "root").mkdir()
    server = JupyterProcess(env, tmp_path / "root", tmp_path / "server.log")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUANTLAB_HOME", str(tmp_path / "home"))
        mp.setenv("QUANTLAB_REDIS_URL", redis_url)
        from quantlab.events import open_events

        events = open_events()
        team = Lab(server=server, home=tmp_path / "home")
        try:
            server.wait_ready()
            first = events.publish("RUN1", "started", {"worker": "w1"})
            ws = websocket.create_connection(ws_url(team, f"after={first.seq - 1}"), timeout=30)
            try:
                got = receive(ws, 1)
                assert got[0]["seq"] == first.seq and got[0]["type"] == "started"
                live = events.publish("RUN1", "progress", {"percent": 50.0})
                assert receive(ws, 1)[0]["seq"] == live.seq
            finally:
                ws.close()
            missed = [events.publish("RUN1", "progress", {"percent": 75.0}),
                      events.publish("RUN1", "completed", {"metrics": {}})]
            ws = websocket.create_connection(ws_url(team, f"after={live.seq}"), timeout=30)
            try:
                assert [m["seq"] for m in receive(ws, 2)] == [e.seq for e in missed]
                assert nothing_more(ws)
            finally:
                ws.close()
        finally:
            server.stop()


# -- Prometheus metrics ---------------------------------------------------------------------------

def test_metrics_need_login_and_report_the_registry_and_the_lab_stream(lab: Lab) -> None:
    status, reply = lab.server.request("GET", "/quantlab/metrics", token=False)
    assert status == 403
    assert "QUANTLAB_METRICS_PUBLIC=1" in reply["message"]
    # a live event streamed to a Lab client is a delivery whose latency is measured
    events, run_id = lab.events(), insert_run(lab, status="running")
    ws = websocket.create_connection(ws_url(lab), timeout=30)
    try:
        ws.settimeout(0.2)
        for _ in range(50):  # until the server has subscribed (as in the test above)
            events.publish(run_id, "log", {"message": "hello"})
            with contextlib.suppress(websocket.WebSocketTimeoutException):
                ws.recv()
                break
        # the socket is now streaming live: this one goes through the hub, not the backlog
        sent = events.publish(run_id, "log", {"message": "live"})
        ws.settimeout(30)
        while json.loads(ws.recv())["seq"] != sent.seq:
            pass
    finally:
        ws.close()
    before = lab.registry().count_runs(status="queued")
    status, body = lab.server.request("GET", "/quantlab/metrics")
    after = lab.registry().count_runs(status="queued")  # the worker may take runs meanwhile
    assert status == 200
    queued = float(body.split("\nbacktest_queue_size ")[1].split()[0])
    assert min(before, after) <= queued <= max(before, after)
    assert "active_backtests_count" in body
    assert 'quantlab_event_latency_seconds_count{client="lab"}' in body
    count = float(body.split('quantlab_event_latency_seconds_count{client="lab"} ')[1].split()[0])
    assert count >= 1


def test_a_token_in_the_url_is_authentication_not_a_filter(lab: Lab) -> None:
    insert_run(lab, name="token in the url")
    status, reply = lab.server.request(
        "GET", f"{API}/runs?text=token+in+the+url&token={lab.server.token}", token=False)
    assert status == 200, reply
    assert [r["name"] for r in reply["runs"]] == ["token in the url"]
