"""Where a resume's seek really landed: whether decoding from there loses nothing before `start` (DESIGN §5).

Why it is built this way:

- **A seek is only a request.** MP4 and Matroska land on the keyframe before the target, but MPEG-TS seeks
  by byte position and can land after it, mid-GOP, where the decoder drops every frame up to the next
  keyframe: seconds of the resumed stream lost without a word. So the packets after a seek are read ahead
  until each stream shows where decoding will really start (video: its first keyframe, since the decoder
  drops what comes before one; audio: its first packet). The decoder (`MediaDecoder`) retries from further
  back when this says the seek landed too late, and decodes the packets read ahead rather than dropping them.
- **Bounded.** B-frame reordering puts a few non-key packets slightly past the target (`LANDING_SLACK_S`), and
  a stream with no packet within `LANDING_HORIZON_S` of it (it ended before `start`) has nothing to lose.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import av
import av.error

__all__ = ["LANDING_HORIZON_S", "LANDING_SLACK_S", "TIME_EPS", "packet_time", "read_ahead"]

TIME_EPS = 1e-3
"""Seconds by which a frame may fall short of a sampling instant and still count as reaching it: containers
with a 1 ms clock round 30 fps frame times down to e.g. 0.999 s, and that frame is the one shown at 1 s."""

LANDING_SLACK_S = 1.0  # how far past `start` a non-key video packet may be before the seek counts as late
LANDING_HORIZON_S = 30.0  # how far past `start` packets are read ahead


def packet_time(packet: av.Packet, origin: float) -> float | None:
    """Stream time of a packet (pts, else dts) from the container's origin; None where it has none."""
    stamp = packet.pts if packet.pts is not None else packet.dts
    tb = packet.time_base or packet.stream.time_base
    if stamp is None or tb is None:
        return None
    return float(stamp * tb) - origin


def read_ahead(
    packets: Iterator[av.Packet], streams: list[Any], video: Any | None, start: float, origin: float
) -> tuple[list[av.Packet], bool]:
    """Packets read after a seek, and whether decoding them starts at or before `start` in every stream.

    `video` is the decoded video stream (None: audio only). A video packet more than `LANDING_SLACK_S` past
    `start` before any keyframe, or a keyframe or first audio packet past `start`, means the seek landed too
    late (False).
    """
    ahead: list[av.Packet] = []
    pending = {id(s) for s in streams}
    limit = start + TIME_EPS
    while pending:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except (av.error.FFmpegError, OSError):
            break  # the decode loop meets the error again and reports it
        ahead.append(packet)
        t = packet_time(packet, origin)
        key = id(packet.stream)
        if key not in pending or t is None:
            if t is not None and t > start + LANDING_HORIZON_S:
                break
            continue
        if packet.stream is video and not packet.is_keyframe:
            if t > start + LANDING_SLACK_S:
                return ahead, False
            continue
        if t > limit:  # a video keyframe, or the first audio packet
            return ahead, False
        pending.discard(key)
    return ahead, True
