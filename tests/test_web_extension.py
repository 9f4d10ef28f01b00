"""The frontend extension loads in Node.js against a stand-in of ComfyUI's app module and colours every socket."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from stylebridge.nodes import sockets

ROOT = Path(__file__).resolve().parents[1]

HARNESS = """
import { registered } from "./scripts/app.js";
globalThis.LGraphCanvas = { link_type_colors: {} };
const module = await import("./extensions/stylebridge/stylebridge.js");
for (const extension of registered) { await extension.setup(); }
console.log(JSON.stringify({
  names: registered.map((e) => e.name),
  canvas: (await import("./scripts/app.js")).app.canvas.default_connection_color_byType,
  links: globalThis.LGraphCanvas.link_type_colors,
  exported: module.SOCKET_COLORS,
}));
"""

APP_STAND_IN = """
export const registered = [];
export const app = {
  canvas: { default_connection_color_byType: {} },
  registerExtension(extension) { registered.push(extension); },
};
"""


@pytest.fixture
def extension_output(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "app.js").write_text(APP_STAND_IN)
    target = tmp_path / "extensions" / "stylebridge"
    target.mkdir(parents=True)
    shutil.copy(ROOT / "web" / "stylebridge.js", target / "stylebridge.js")
    (tmp_path / "harness.mjs").write_text(HARNESS)
    result = subprocess.run([node, "harness.mjs"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_extension_registers_once(extension_output):
    assert extension_output["names"] == ["StyleBridge.SocketColors"]


# Every StyleBridge socket type declared in nodes/sockets.py; IMAGE is ComfyUI's own and keeps its colour.
STYLEBRIDGE_SOCKETS = sorted(value for name, value in vars(sockets).items()
                             if name.isupper() and isinstance(value, str) and value not in ("IMAGE", sockets.CATEGORY))


@pytest.mark.parametrize("socket", STYLEBRIDGE_SOCKETS)
def test_extension_colours_socket(socket, extension_output):
    assert extension_output["canvas"][socket].startswith("#")
    assert extension_output["links"][socket] == extension_output["canvas"][socket]


def test_extension_colours_are_distinct(extension_output):
    colours = list(extension_output["exported"].values())
    assert len(set(colours)) == len(colours)
