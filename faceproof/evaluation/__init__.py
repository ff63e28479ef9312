"""Offline evaluations behind ``faceproof eval``, outside the services (no service imports them).

* :mod:`faceproof.evaluation.liveness`: presentation-attack evaluation (APCER per attack type,
  BPCER) of the liveness analysis with a scripted subject (:mod:`faceproof.testing`)

The face-verification maths lives in :mod:`faces.evaluation`. See docs/architecture.md.
"""
