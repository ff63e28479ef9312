"""Benchmarks behind `faceproof bench ...`: measurements that print numbers, not tests.

* :mod:`faceproof.bench.matcher`: in-process latency of each face stage and pipeline throughput.
* :mod:`faceproof.bench.compare`: end-to-end ``POST /v1/compare`` through gateway, RabbitMQ and matchers.
* :mod:`faceproof.bench.peers`: accuracy and speed beside face_recognition and deepface (own venv).

Shared pieces: :mod:`~faceproof.bench.stats` (percentiles), :mod:`~faceproof.bench.environment`
(machine description, where the shared data and models are), :mod:`~faceproof.bench.stack` (start
and stop a throw-away stack), :mod:`~faceproof.bench.load` (bounded HTTP load on 127.0.0.1 only).
"""
