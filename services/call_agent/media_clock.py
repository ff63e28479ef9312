"""The stream's media clock against the agent's own: a pure function of frame times.

A camera's frames carry their capture time (the RTP timestamp, ``frame.time``), and none can
arrive before it was taken: from one frame to the next, the media clock advances by what the
agent's clock advances, give or take the change in delay. Summed over a connection, the media
clock can run ahead of the agent's by at most the delay of the connection's first frame (later
frames that arrive faster). A stream whose media clock keeps running ahead (a recording pushed
faster than it was taken, timestamps that jump forward) is not a live camera.

:class:`MediaClock` sums, over consecutive frames, how much further the media clock moved than the
agent's: ``lead``. A media clock that goes back (a new track, a timestamp wrap) is a break: that
pair is not counted, and what was summed stays, so a stream cannot clear its lead by jumping back.
A new connection (a reconnect, in a room or on the hosted page, where it may reach another agent)
starts its own lead at 0: the liveness worker adds up the connections' largest leads and decides
on the sum (``services/liveness/replay.py``, ``services/liveness/stream.py``), so a reconnect
clears nothing either.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MediaClock"]


@dataclass
class MediaClock:
    """The lead of one stream's media clock over the agent's, in seconds (see the module)."""

    lead: float = 0.0
    #: The largest lead so far, over every connection (what the agent logs when the session finishes).
    most: float = 0.0
    _last: tuple[float, float] | None = None

    def tick(self, media_s: float | None, wall_s: float) -> float | None:
        """A frame with media time ``media_s`` arrived at ``wall_s`` (the agent's monotonic
        clock): the lead so far (None: a frame without a media time, which tells nothing)."""
        if media_s is None:
            return None
        last = self._last
        if last is not None and media_s >= last[0]:
            self.lead += (media_s - last[0]) - (wall_s - last[1])
            self.most = max(self.most, self.lead)
        self._last = (media_s, wall_s)
        return self.lead

    def restart(self) -> None:
        """A new connection: its first frame follows no other (its clock has its own origin), and
        its lead starts at 0 (the liveness worker adds the connections' leads up)."""
        self._last = None
        self.lead = 0.0
