"""--scheduler pointing at a TCP service that is not Dask fails fast with one line (issue 14, 11).

The services are loopback servers run by the test, each answering a bounded number of connections.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from lsmap.errors import InputError
from lsmap.map.regional.run import probe_scheduler


def _server(reply: bytes | None, close: bool = True, connections: int = 2):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(10)

    def serve():
        for _ in range(connections):
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            if reply is not None:
                conn.sendall(reply)
            if close:
                conn.close()
            else:
                time.sleep(3)
                conn.close()
        srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return f"tcp://127.0.0.1:{srv.getsockname()[1]}", t


@pytest.mark.parametrize(("reply", "close", "needle"), [
    (b"HTTP/1.1 400 Bad Request\r\n\r\n" + b"\xff" * 64, True, "does not speak Dask's protocol"),
    (b"", True, "closed the connection"),
    (None, False, "sent nothing"),
])
def test_non_dask_services_fail_within_the_timeout(reply, close, needle):
    address, _ = _server(reply, close)
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=needle) as e:
        probe_scheduler(address, timeout=1.0)
    assert time.perf_counter() - t0 < 5
    assert "\n" not in str(e.value) and address in str(e.value)


def test_nothing_listening_is_one_line():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(InputError, match="cannot reach"):
        probe_scheduler(f"tcp://127.0.0.1:{port}", timeout=1.0)


def test_detect_many_with_a_garbage_scheduler_fails_fast(tmp_path, rng):
    pytest.importorskip("distributed")
    from click.testing import CliRunner

    from lsmap.cli import main
    from tests.detect_fixtures import smooth_scene, tiny_checkpoint, write_scene

    a = write_scene(tmp_path / "a.tif", smooth_scene(rng, h=32, w=32))
    b = write_scene(tmp_path / "b.tif", smooth_scene(rng, h=32, w=32))
    model = tiny_checkpoint(tmp_path / "m")
    address, _ = _server(b"\xff" * 64, True)
    t0 = time.perf_counter()
    res = CliRunner().invoke(main, ["detect", str(a), str(b), "-o", str(tmp_path / "ev"), "--model", str(model),
                                    "--scheduler", address])
    assert res.exit_code == 1 and "not a Dask scheduler" in res.output and "Traceback" not in res.output
    assert time.perf_counter() - t0 < 15


def test_a_real_dask_scheduler_passes_the_probe():
    distributed = pytest.importorskip("distributed")
    import asyncio

    async def run():
        s = await distributed.Scheduler(host="127.0.0.1", port=0, dashboard=False)
        try:
            await asyncio.get_running_loop().run_in_executor(None, probe_scheduler, s.address, 5.0)
        finally:
            await s.close()

    asyncio.run(run())
