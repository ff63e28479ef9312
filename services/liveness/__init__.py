"""Liveness worker: per-frame face analysis and the challenge engine (pure analysis, no I/O).

* :mod:`services.liveness.analysis`: :class:`~services.liveness.analysis.FrameAnalyzer` (detect,
  track, face mesh, measures) and :class:`~services.liveness.analysis.FrameAnalysis`
* :mod:`services.liveness.landmarks`: MediaPipe face mesh (468 points) and iris/eyelid model
* :mod:`services.liveness.measures`: head pose, eye and mouth aspect ratios, nose position
* :mod:`services.liveness.antispoof`: MiniFASNet passive anti-spoofing ``real_score``
* :mod:`services.liveness.challenges`: drawing challenges, judging frame streams, reason codes
* :mod:`services.liveness.annotate`: the video segments that answer each challenge (tests' subject)
* :mod:`services.liveness.bench`: per-stage timings

See docs/liveness.md.
"""
