"""Virtual cameras: the rule that a browser's camera label names a software or fake device.

Pure: the gateway asks it about the camera the hosted page reports with its offer
(``contracts.http.CameraReport``). A label is what the operating system calls the device; the
virtual-camera drivers below name themselves, so a stream they inject (a replayed video, a
deepfake, a still) is recognised when the attacker did not rename the device. A renamed driver,
or a hardware capture card (HDMI in) showing a replay, is not recognised (docs/liveness.md,
"Injected and replayed streams").
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["VIRTUAL_CAMERA", "VIRTUAL_CAMERA_LABELS", "virtual_camera"]

#: Reason code of a session whose camera names itself virtual.
VIRTUAL_CAMERA: Final = "VIRTUAL_CAMERA"

#: Label patterns (case-insensitive, anywhere in the label) of virtual and fake camera devices:
#: OBS, ManyCam, XSplit, Snap Camera, e2eSoft VCam, anything calling itself "virtual" (CyberLink,
#: Logi Capture's and most others' virtual devices), v4l2loopback's default name, Chromium's fake
#: capture device (``--use-fake-device-for-media-stream``: "fake_device_0", "Fake Default").
VIRTUAL_CAMERA_LABELS: Final = (
    r"\bOBS\b",
    r"ManyCam",
    r"XSplit",
    r"Snap Camera",
    r"e2eSoft",
    r"\bVCam\b",
    r"virtual",
    r"Dummy video device",
    r"v4l2loopback",
    r"fake_device",
    r"Fake Default",
)
_PATTERN: Final = re.compile("|".join(f"(?:{p})" for p in VIRTUAL_CAMERA_LABELS), re.IGNORECASE)


def virtual_camera(label: str) -> str | None:
    """The part of ``label`` that names a virtual or fake camera, or None for any other label."""
    found = _PATTERN.search(label)
    return found.group(0) if found else None
