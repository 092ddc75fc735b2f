"""`ProbeTab`: a viewer tab without a browser, for load tests: it speaks viser's websocket protocol.

A headless Chromium page costs a software-WebGL renderer per tab (most of two cores for one splat scene), so
eight of them measure the browser, not the server. A probe reports a viewport, moves its camera and the GUI's
controls as a page would, and counts what the server sends it; it draws nothing.

The protocol (viser's, the version installed): a tab sends single msgpack messages; the server sends batches,
each an 8-byte length of the msgpack payload, an 8-byte length of its zstd compression, the compressed payload
({"messages": [...]}), then any binary arrays the messages refer to.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time

import msgspec.msgpack
import viser
import zstandard
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from npga.viewer.camera import ViewportPose


class ProbeTab:
    """One tab of the viewer at `url` (ws://host:port), its viewport `width` x `height` pixels at `pose`."""

    def __init__(self, url: str, pose: ViewportPose, width: int = 320, height: int = 240) -> None:
        self.width, self.height = width, height
        self.received: collections.Counter[str] = collections.Counter()  # message type -> how many
        # time.monotonic() of: each background image (a server-rendered frame), each splat buffer (a node's
        # creation or update), each camera message sent and each GUI value set
        self.images: list[float] = []
        self.splats: list[float] = []
        self.moves: list[float] = []
        self.sets: list[float] = []
        self.controls: dict[str, str] = {}  # GUI label -> uuid, of the controls this tab was sent
        self.values: dict[str, object] = {}  # GUI label -> the value this tab shows
        self._lock = threading.Lock()
        self._socket = connect(url, subprotocols=[f"viser-v{viser.__version__}"], max_size=None)  # type: ignore[list-item]
        self._receiver = threading.Thread(target=self._receive, name="npga-probe-tab", daemon=True)
        self._receiver.start()
        self.move(pose)  # viser counts a tab as connected from its first camera message

    def _receive(self) -> None:
        with contextlib.suppress(ConnectionClosed, OSError):
            for batch in self._socket:
                assert isinstance(batch, bytes)
                size, packed = int.from_bytes(batch[:8], "little"), int.from_bytes(batch[8:16], "little")
                payload = zstandard.ZstdDecompressor().decompress(batch[16 : 16 + packed], max_output_size=size)
                now = time.monotonic()
                with self._lock:
                    for message in msgspec.msgpack.decode(payload)["messages"]:
                        kind = message["type"]
                        self.received[kind] += 1
                        if kind == "BackgroundImageMessage":
                            self.images.append(now)
                        elif kind == "GaussianSplatsMessage" or (
                            kind == "SceneNodeUpdateMessage" and "buffer" in message["updates"]
                        ):
                            self.splats.append(now)
                        elif kind.startswith("Gui") and "label" in message.get("props", {}):
                            self.controls[message["props"]["label"]] = message["uuid"]
                            self.values[message["props"]["label"]] = message.get("value")
                        elif kind == "GuiUpdateMessage" and "value" in message["updates"]:
                            label = next((k for k, v in self.controls.items() if v == message["uuid"]), None)
                            if label is not None:
                                self.values[label] = message["updates"]["value"]

    def _send(self, message: dict) -> None:
        self._socket.send(msgspec.msgpack.encode(message))

    def move(self, pose: ViewportPose) -> None:
        """Report the viewport at `pose`, as a page does while its camera is dragged."""
        self.moves.append(time.monotonic())
        self._send(
            {
                "type": "ViewerCameraMessage",
                "wxyz": [float(v) for v in pose.wxyz],
                "position": [float(v) for v in pose.position],
                "fov": float(pose.fov),
                "near": 0.01,
                "far": 1000.0,
                "image_height": self.height,
                "image_width": self.width,
                "look_at": [float(v) for v in pose.look_at],
                "up_direction": [float(v) for v in pose.up_direction],
            }
        )

    def set(self, label: str, value: object) -> None:
        """Set the GUI control labelled `label` (a slider, drop-down, checkbox) as a page does."""
        with self._lock:
            uuid = self.controls[label]
        self.sets.append(time.monotonic())
        self._send({"type": "GuiUpdateMessage", "uuid": uuid, "updates": {"value": value}})
        with self._lock:
            self.values[label] = value

    def wait_for(self, label: str, timeout: float = 30.0) -> None:
        """Until the GUI control `label` has reached this tab."""
        deadline = time.monotonic() + timeout
        while label not in self.controls:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no GUI control {label!r} reached the tab within {timeout} s")
            time.sleep(0.02)

    def close(self) -> None:
        """Drop the connection at once, as a closing tab does (whatever the server is sending)."""
        self._socket.close()
        self._receiver.join(timeout=10)
