"""Intake: the use cases every door shares (the HTTP gateway, the public broker ingress).

Creating a liveness session (:mod:`~services.intake.sessions`: lockout, reference image), starting
a video-call flow (:mod:`~services.intake.calls`: room address precheck, language), decoding image
fields (:mod:`~services.intake.images`). They raise :mod:`~services.intake.errors`, which each door
translates once (problem+json, CommandRejected), and reach storage and the broker only through
:mod:`~services.intake.ports`. Intake imports no other service; every service may import it.
"""
