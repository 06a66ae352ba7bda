"""The load benchmark's definitions (benchmarks/metrics.py): what each reported figure counts."""

from __future__ import annotations

import math
from types import SimpleNamespace

from benchmarks import _harness
from benchmarks.metrics import (
    all_gaps,
    bracket,
    gap_ratio,
    gaps,
    phase_bounds,
    procs_for,
    saturation,
    seq_faults,
    stop_indices,
    text_check,
    tokens_after,
)


def test_gaps_are_between_arrivals_of_one_reply_never_across_replies():
    assert gaps([1.0, 1.05, 1.2]) == [0.050000000000000044, 0.1499999999999999]
    # Two replies: the gap from the end of one to the start of the other is not a gap.
    assert len(all_gaps([[0.0, 0.05], [10.0, 10.05, 10.1]])) == 3
    assert max(all_gaps([[0.0, 0.05], [10.0, 10.05, 10.1]])) < 0.06


def test_a_coalesced_frame_is_one_arrival_not_k_gaps_of_zero():
    # Three frames carrying 1, 3 and 2 tokens: the client saw three arrivals, so two gaps, none of 0 ms.
    frames = [0.0, 0.06, 0.12]
    assert gaps(frames) == [0.06, 0.06]
    assert min(gaps(frames)) > 0


def test_gap_ratio_is_client_over_upstream_and_unknown_without_an_upstream():
    assert gap_ratio(60.0, 50.0) == 1.2
    assert math.isnan(gap_ratio(60.0, math.nan))
    assert math.isnan(gap_ratio(60.0, 0.0))


def test_the_whole_phase_runs_from_the_first_send_to_the_last_end():
    chats = [
        {"sent": 10.0, "finished": 15.0, "frame_times": [10.1, 14.9]},
        {"sent": 11.0, "finished": None, "frame_times": [11.1, 17.0]},  # ended without reply_finished
        {"sent": None, "finished": None, "frame_times": []},  # never sent
    ]
    assert phase_bounds(chats) == (10.0, 17.0)
    assert phase_bounds([]) is None


def test_bracket_takes_samples_that_cover_the_whole_span():
    samples = [SimpleNamespace(t=t) for t in (9.0, 9.9, 10.1, 16.9, 17.2, 18.0)]
    a, b = bracket(samples, 10.0, 17.0)
    assert (a.t, b.t) == (9.9, 17.2)
    assert bracket(samples[:1], 10.0, 17.0) is None


def test_a_client_is_saturated_by_its_core_its_loop_or_the_machine():
    assert saturation(core_shares=[0.3, 0.4], loop_lag_p99_ms=[2.0, 3.0], machine_busy=0.6) == ""
    assert "core" in saturation(core_shares=[0.3, 0.9], loop_lag_p99_ms=[2.0], machine_busy=0.6)
    assert "loop lag" in saturation(core_shares=[0.3], loop_lag_p99_ms=[45.0], machine_busy=0.6)
    assert "busy" in saturation(core_shares=[0.3], loop_lag_p99_ms=[2.0], machine_busy=0.99)


def test_direct_processes_follow_the_chat_count_within_bounds():
    assert procs_for(50, per_process=100, least=2) == 2
    assert procs_for(500, per_process=100, least=2) == 5
    assert procs_for(1000, per_process=100, least=2, most=8) == 8


def test_tokens_after_a_moment_count_only_later_writes():
    written = [1.0, 1.05, 1.10, 1.15]
    assert tokens_after(written, 1.07) == 2
    assert tokens_after(written, 1.15) == 0
    assert tokens_after(written, None) == 0


def test_stops_are_spread_over_the_chats():
    picked = stop_indices(500, 50)
    assert len(picked) == 50 and picked[0] == 0 and picked[-1] == 490
    assert stop_indices(5, 10) == [0, 1, 2, 3, 4]
    assert stop_indices(10, 0) == []


def test_text_check_counts_missing_differing_and_equal_replies():
    seen = {
        "r1": {"text": "w0 w1 ", "status": "complete"},
        "r2": {"text": "w0 ", "status": "stopped"},
        "r3": {"text": "w0 w1 ", "status": "complete"},
        "r4": {"text": "w0 ", "status": "complete"},
    }
    saved = {
        "r1": {"content": "w0 w1 ", "status": "complete"},
        "r2": {"content": "w0 w1 ", "status": "stopped"},  # one token more saved than shown
        "r4": {"content": "w0 ", "status": "error"},
    }
    out = text_check(seen, saved)
    assert (out["checked"], out["equal"], out["missing"]) == (4, 1, 1)
    assert (out["text_differs"], out["status_differs"]) == (1, 1)
    assert len(out["examples"]) == 3


def test_seq_faults_count_deltas_that_do_not_follow_their_predecessor():
    assert seq_faults([1, 2, 3]) == 0
    assert seq_faults([1, 3, 4]) == 1
    assert seq_faults([2, 1]) == 2


def test_a_dirty_tree_is_refused_and_marked(monkeypatch):
    class Refused(Exception):
        pass

    class Parser:
        def error(self, message):
            raise Refused(message)

    monkeypatch.setattr(_harness, "git_revision", lambda: "abc1234-dirty")
    try:
        _harness.check_tree_for_doc(Parser(), write_doc=True, allow_dirty=False)
    except Refused as exc:
        assert "--allow-dirty" in str(exc)
    else:
        raise AssertionError("a dirty tree was not refused")
    assert _harness.check_tree_for_doc(Parser(), write_doc=False, allow_dirty=False) == "abc1234-dirty"
    assert _harness.check_tree_for_doc(Parser(), write_doc=True, allow_dirty=True) == "abc1234-dirty"
    marked = _harness.mark_dirty("## Load\n\ntext\n", "abc1234-dirty")
    assert marked.startswith("## Load\n\n> **Not a result:**") and marked.endswith("text\n")
    assert _harness.mark_dirty("## Load\n\ntext\n", "abc1234") == "## Load\n\ntext\n"


class _ServerSocket:
    """A socket whose "server" answers each send with its frames, reply_started before the ack."""

    def __init__(self) -> None:
        import asyncio

        self.frames: asyncio.Queue[str] = asyncio.Queue()
        self.sent: list[dict] = []

    async def send(self, raw: str) -> None:
        import json

        frame = json.loads(raw)
        self.sent.append(frame)
        if frame["type"] != "send":
            return
        n = len([f for f in self.sent if f["type"] == "send"])
        conv, reply = f"conv{n}", f"reply{n}"
        tokens = int(frame["model"].split("tokens=")[1].split("&")[0])
        out = [
            {"type": "reply_started", "conversation": conv, "reply": reply},  # before the ack
            {"type": "delta", "reply": reply, "seq": 1, "text": "w0 "},  # also before the ack
            {"type": "ack", "client_id": frame["client_id"], "conversation": conv},
            {"type": "delta", "reply": reply, "seq": 2, "text": "".join(f"w{i} " for i in range(1, tokens))},
            {"type": "pong"},  # someone else's frame on the same socket
            {"type": "reply_finished", "reply": reply, "status": "complete", "error_kind": None},
        ]
        for item in out:
            self.frames.put_nowait(json.dumps(item))

    async def recv(self) -> str:
        return await self.frames.get()


def test_one_socket_matches_every_frame_to_its_chat_whatever_order_the_ack_comes_in():
    import asyncio

    from benchmarks._harness import now
    from benchmarks.load import ClientWorker

    async def run() -> list[dict]:
        at = now()
        chats = [
            {"key": f"k{i}", "model": f"fake?tokens={3 + i}&rate=20&key=k{i}", "tokens": 3 + i, "at": at}
            for i in range(3)
        ]
        return await ClientWorker()._socket_chats(_ServerSocket(), chats, now() + 5)

    results = asyncio.run(run())
    assert [r["err"] for r in results] == [None, None, None]
    assert [r["tokens"] for r in results] == [3, 4, 5]
    assert [r["seqs"] for r in results] == [[1, 2]] * 3
    assert all(r["ack"] is not None and r["status"] == "complete" for r in results)
