"""Joining a controller's mediasoup room (protoo signalling, pymediasoup) for a video-call flow.

See docs/rooms.md. ``protoo`` speaks the signalling, ``mediasoup`` joins a room as a peer,
``call`` runs one call (frames, instructions, failures) and ``handler`` is what the call agent's
broker wiring registers.
"""
