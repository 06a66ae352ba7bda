"""Pure functions the load benchmark computes its figures with (no processes, no I/O).

Kept apart so that each definition is stated once, tested
(``tests/test_benchmarks_metrics.py``) and named in the report as it is
computed here:

* **gaps**: once the app coalesces tokens into frames, a per-token delay is
  meaningless (k tokens in one frame give k - 1 gaps of 0 ms). What a reader
  sees is the time between *arrivals*: :func:`gaps` of the frame times (every
  frame of the reply's stream) and of the text times (the arrivals that grew
  the visible text), each compared with the upstream's own gaps between the
  tokens it wrote, in the same run (:func:`gap_ratio`);
* **the whole phase**: CPU per 1,000 tokens from the first send to the last
  reply's end, starts and ends included (:func:`phase_bounds`), as the peers'
  figures are; the steady window is a detail;
* **saturation**: a baseline is only a floor when the client measuring it had
  CPU to spare (:func:`saturation`);
* **stops and saved text**: :func:`tokens_after` and :func:`text_check`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

#: A client process using this much of one core (or more) over a phase is saturated:
#: its own clock of arrivals then measures itself, not the server.
SATURATED_CORE_SHARE = 0.85
#: ... as is one whose event loop woke this late (p99, ms) from a 10 ms sleep.
SATURATED_LOOP_LAG_P99_MS = 20.0
#: ... and a machine this busy (both CPUs) leaves no process CPU to spare.
SATURATED_MACHINE_BUSY = 0.97


def gaps(times: Sequence[float]) -> list[float]:
    """The gaps between consecutive arrival times (sorted as they came)."""
    return [b - a for a, b in itertools.pairwise(times)]


def all_gaps(series: Iterable[Sequence[float]]) -> list[float]:
    """:func:`gaps` of each series (one per reply), together: never across two replies."""
    return [gap for times in series for gap in gaps(times)]


def gap_ratio(client_p99: float, upstream_p99: float) -> float:
    """The client's gap p99 over the upstream's own (NaN when either is unknown)."""
    if not upstream_p99 or math.isnan(upstream_p99) or math.isnan(client_p99):
        return math.nan
    return client_p99 / upstream_p99


def phase_bounds(chats: Sequence[dict]) -> tuple[float, float] | None:
    """(first send, last end) of a phase: the span the whole-phase CPU is taken over.

    A chat ends at its last frame of any kind (``finished``, else its last
    arrival); chats that never sent do not count.
    """
    starts = [c["sent"] for c in chats if c.get("sent") is not None]
    ends = [
        end
        for c in chats
        if (end := c.get("finished") or max(c.get("frame_times") or c.get("times") or [0.0], default=0.0))
    ]
    if not starts or not ends:
        return None
    return min(starts), max(ends)


def bracket(samples: Sequence[Any], start: float, end: float) -> tuple[Any, Any] | None:
    """The last sample at or before ``start`` and the first at or after ``end`` (samples have ``.t``).

    Counters read at those two samples cover the whole span (plus at most one
    sampling interval at each end), never less of it.
    """
    before = [s for s in samples if s.t <= start]
    after = [s for s in samples if s.t >= end]
    a = before[-1] if before else (samples[0] if samples else None)
    b = after[0] if after else (samples[-1] if samples else None)
    if a is None or b is None or b.t <= a.t:
        return None
    return a, b


def saturation(*, core_shares: Sequence[float], loop_lag_p99_ms: Sequence[float], machine_busy: float) -> str:
    """Why a client (of one or more processes) was saturated over a phase, or "" if it was not."""
    reasons = []
    busiest = max((s for s in core_shares if not math.isnan(s)), default=math.nan)
    if busiest >= SATURATED_CORE_SHARE:
        reasons.append(f"a client process used {busiest:.2f} of a core")
    laggiest = max((v for v in loop_lag_p99_ms if v is not None and not math.isnan(v)), default=math.nan)
    if laggiest >= SATURATED_LOOP_LAG_P99_MS:
        reasons.append(f"a client process's loop lag p99 was {laggiest:.0f} ms")
    if not math.isnan(machine_busy) and machine_busy >= SATURATED_MACHINE_BUSY:
        reasons.append(f"the machine was {100 * machine_busy:.0f} % busy")
    return "; ".join(reasons)


def procs_for(chats: int, *, per_process: int, least: int = 1, most: int = 16) -> int:
    """Client processes for ``chats`` concurrent streams at ``per_process`` streams each."""
    return max(least, min(most, math.ceil(chats / max(1, per_process))))


def tokens_after(token_times: Sequence[float], moment: float | None) -> int:
    """Tokens the upstream wrote strictly after ``moment`` (0 when the moment is unknown)."""
    if moment is None:
        return 0
    return sum(1 for t in token_times if t > moment)


def text_check(seen: dict[str, dict], saved: dict[str, dict]) -> dict[str, Any]:
    """Compare what each client saw of a reply with the reply as saved.

    ``seen``: reply id -> {"text", "status"} as the client received them;
    ``saved``: reply id -> {"content", "status"} read back from the database.
    Returns counts (``checked``, ``equal``, ``missing``, ``text_differs``,
    ``status_differs``) and up to three ``examples`` of a difference.
    """
    out: dict[str, Any] = {
        "checked": len(seen),
        "equal": 0,
        "missing": 0,
        "text_differs": 0,
        "status_differs": 0,
    }
    examples: list[str] = []
    for reply, client in seen.items():
        row = saved.get(reply)
        if row is None:
            out["missing"] += 1
            examples.append(f"{reply}: not in the database")
            continue
        same_text = row["content"] == client["text"]
        same_status = row["status"] == client["status"]
        out["text_differs"] += not same_text
        out["status_differs"] += not same_status
        if same_text and same_status:
            out["equal"] += 1
        elif not same_text:
            examples.append(
                f"{reply}: saved {len(row['content'])} characters, the client saw {len(client['text'])}"
            )
        else:
            examples.append(f"{reply}: saved status {row['status']}, the client saw {client['status']}")
    out["examples"] = examples[:3]
    return out


def seq_faults(seqs: Sequence[int]) -> int:
    """How many of a reply's delta ``seq`` numbers did not rise by exactly one (frame order)."""
    faults = 0
    expected = 1
    for seq in seqs:
        if seq != expected:
            faults += 1
        expected = seq + 1
    return faults


def stop_indices(streams: int, stops: int) -> list[int]:
    """Which of ``streams`` chats to stop: ``stops`` of them, evenly spread over the start order."""
    stops = max(0, min(stops, streams))
    return sorted({(i * streams) // stops for i in range(stops)}) if stops else []
