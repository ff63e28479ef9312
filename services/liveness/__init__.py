"""Liveness worker: per-frame face analysis and the challenge engine (pure analysis, no I/O).

* :mod:`services.liveness.analysis`: :class:`~services.liveness.analysis.FrameAnalyzer` (detect,
  track, face mesh, measures) and :class:`~services.liveness.analysis.FrameAnalysis`
* :mod:`services.liveness.landmarks`: MediaPipe face mesh (468 points) and iris/eyelid model
* :mod:`services.liveness.measures`: head pose, eye and mouth aspect ratios, nose position
* :mod:`services.liveness.antispoof`: MiniFASNet passive anti-spoofing ``real_score``
* :mod:`services.liveness.challenges`: drawing challenges, judging frame streams, reason codes
* :mod:`services.liveness.decision`, :mod:`services.liveness.replay`: the decision, replaying stored frames
* :mod:`services.liveness.frames`, :mod:`services.liveness.session_models`: per-frame work, shared models
* :mod:`services.liveness.handlers`, :mod:`services.liveness.main`: the worker's handlers and composition root

The simulated subjects, the offline evaluation and the per-stage timings are tooling, not part
of the worker: :mod:`faceproof.testing`, :mod:`faceproof.evaluation`, :mod:`faceproof.bench`.

See docs/liveness.md.
"""
