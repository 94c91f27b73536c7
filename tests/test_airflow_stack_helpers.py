"""The e2e stack's helpers against a stand-in HTTP server: marking a run failed survives the API
server's transient 500 (seen in CI while the scheduler started that run) and, when the 500s do not
stop, fails with the API server's traceback instead of a bare status."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from airflow_stack import mark_failed


@pytest.fixture
def api(tmp_path):
    answers: list[int] = []
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PATCH(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.path)
            self.send_response(answers.pop(0) if answers else 200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "api-server.log").write_text(
        "startup\nTraceback (most recent call last):\n  psycopg2.errors.DeadlockDetected: deadlock detected\n"
    )
    stack = {"headers": {}, "home": tmp_path}
    yield stack, f"http://127.0.0.1:{server.server_port}/api/v2/dags/d/dagRuns/r", answers, seen
    server.shutdown()


def test_marking_a_run_failed_asks_again_after_a_server_error(api):
    stack, url, answers, seen = api
    answers += [500, 500]
    mark_failed(stack, url)
    assert len(seen) == 3


def test_marking_a_run_failed_gives_up_after_its_attempts_with_the_servers_traceback(api):
    stack, url, answers, seen = api
    answers += [500] * 100
    with pytest.raises(AssertionError, match="(?s)answered 500 3 times.*DeadlockDetected"):
        mark_failed(stack, url, attempts=2)
    assert len(seen) == 3


def test_marking_a_run_failed_does_not_retry_a_client_error(api):
    stack, url, answers, seen = api
    answers += [404]
    with pytest.raises(Exception, match="404"):
        mark_failed(stack, url)
    assert len(seen) == 1
