"""Simulated liveness subjects: test tooling, never imported by a service (import-linter checks it).

* :mod:`faceproof.testing.scripted_subject`: a subject answering challenges from its own recorded
  video or still image (:class:`~faceproof.testing.scripted_subject.ScriptedSubject`, ``Media``)
* :mod:`faceproof.testing.webrtc_subject`: the same subject joining a session over real WebRTC, as
  the hosted page does
* :mod:`faceproof.testing.annotate`: finds the video segments that answer each challenge and
  writes ``video_segments.json`` (shipped beside it); ``load_video_segments`` reads it back

Used by the tests, ``faceproof eval liveness`` (:mod:`faceproof.evaluation`) and ``faceproof bench
soak``. See docs/architecture.md.
"""
