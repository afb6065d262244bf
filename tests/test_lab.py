"""`make lab` works as a new reader would use it: the JupyterLab server starts on
127.0.0.1, serves a chapter and the JupyterLab page with the ipywidgets extension, and a
kernel there builds a widget (the explorers' protocol). The server is started exactly as
`make lab` starts it (tools/lab.py), on a free port, and stopped at the end."""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from localhost import free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from lab import lab_command

del sys.path[0]
pytestmark = pytest.mark.slow
CHAPTER = "chapters/01_neural_networks.ipynb"



@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """(base URL, token) of a running JupyterLab; stopped after the tests."""
    tmp = tmp_path_factory.mktemp("lab")
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
           "JUPYTER_CONFIG_DIR": str(tmp / "config")}  # nothing from this machine's settings
    log = open(tmp / "lab.log", "w+")  # noqa: SIM115 (closed below, after the server)
    proc = subprocess.Popen(
        lab_command("--no-browser", f"--port={port}", "--port-retries=0",
                    f"--IdentityProvider.token={token}"),
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{log.read()[-3000:]}")
            try:
                _get(base, token, "/api/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail(f"jupyter lab did not answer in 90 s:\n{log.read()[-3000:]}")
                time.sleep(0.5)
        yield base, token
    finally:
        if proc.poll() is None:  # the server and its kernels: their own process group
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def _get(base, token, path, method="GET", body=None):
    request = urllib.request.Request(base + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status in (200, 201, 204), (path, response.status)
        return response.read().decode()


def test_lab_serves_a_chapter(lab):
    base, token = lab
    model = json.loads(_get(base, token, f"/api/contents/{CHAPTER}?content=1"))
    assert model["type"] == "notebook" and model["path"] == CHAPTER
    assert model["content"]["cells"][0]["source"].startswith("# ")
    specs = json.loads(_get(base, token, "/api/kernelspecs"))
    assert "python3" in specs["kernelspecs"]


def test_lab_page_has_the_widgets_extension(lab):
    base, token = lab
    page = _get(base, token, "/lab/tree/chapters")
    config = json.loads(re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                                  page, re.DOTALL).group(1))
    extensions = {e["name"]: e for e in config.get("federated_extensions", [])}
    assert "@jupyter-widgets/jupyterlab-manager" in extensions, sorted(extensions)
    manager = extensions["@jupyter-widgets/jupyterlab-manager"]
    script = _get(base, token, f"{config['fullLabextensionsUrl']}/{manager['name']}/{manager['load']}")
    assert len(script) > 1000  # the extension's code is served


def test_a_kernel_in_lab_builds_a_widget(lab):
    """Runs `ipywidgets.IntSlider()` in a kernel of this server and waits for the comm that
    draws it in JupyterLab (target jupyter.widget, model IntSliderModel)."""
    websocket = pytest.importorskip("websocket")
    base, token = lab
    kernel = json.loads(_get(base, token, "/api/kernels", "POST", {"name": "python3"}))
    try:
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{base.rsplit(':', 1)[1]}/api/kernels/{kernel['id']}/channels",
            header=[f"Authorization: token {token}"], timeout=60)
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                       "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": "import ipywidgets\nw = ipywidgets.IntSlider(value=3)\nw",
                        "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        seen, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            seen.append(msg["msg_type"])
            content = msg["content"]
            if msg["msg_type"] == "error":
                pytest.fail("\n".join(content["traceback"]))
            if msg["msg_type"] == "comm_open" and content["target_name"] == "jupyter.widget" \
                    and content["data"]["state"].get("_model_name") == "IntSliderModel":
                assert content["data"]["state"]["value"] == 3
                break
        else:
            pytest.fail(f"no widget comm from the kernel; messages: {seen}")
        ws.close()
    finally:
        _get(base, token, f"/api/kernels/{kernel['id']}", "DELETE")
