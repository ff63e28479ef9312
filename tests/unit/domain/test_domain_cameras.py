"""The virtual-camera rule: the labels virtual and fake camera drivers give themselves are named,
the labels of real webcams are not."""

from __future__ import annotations

import pytest

from domain.cameras import virtual_camera


@pytest.mark.parametrize(
    ("label", "found"),
    [
        ("OBS Virtual Camera", "OBS"),
        ("ManyCam Virtual Webcam", "ManyCam"),
        ("XSplit VCam", "XSplit"),
        ("Snap Camera", "Snap Camera"),
        ("e2eSoft VCam", "e2eSoft"),
        ("CyberLink YouCam 10 virtual camera", "virtual"),
        ("Dummy video device (0x0000)", "Dummy video device"),
        ("fake_device_0", "fake_device"),
        ("Fake Default", "Fake Default"),
    ],
)
def test_virtual_and_fake_cameras_are_named(label: str, found: str) -> None:
    assert virtual_camera(label) == found


@pytest.mark.parametrize(
    "label",
    [
        "FaceTime HD Camera (Built-in)",
        "Integrated Camera (04f2:b6d9)",
        "Logitech BRIO (046d:085e)",
        "HD Pro Webcam C920 (046d:082d)",
        "Front Camera",
        "camera2 1, facing front",
        "Jobs Webcam",
        "",
    ],
)
def test_real_cameras_are_not(label: str) -> None:
    assert virtual_camera(label) is None
