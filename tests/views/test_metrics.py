"""GET /metrics: scraped with the token or by staff, hidden from everyone else;
its counters move with real replies through the consumer and the fake upstream."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from tests import factories
from tests.realtime.test_consumer import start

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_loop_state")]

TOKEN = "metrics-token-for-tests"


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, of a scrape."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def scrape(client: Client | None = None, token: str | None = TOKEN) -> dict:
    client = client or Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    answer = client.get("/metrics", **headers)
    assert answer.status_code == 200, answer.status_code
    assert answer["Content-Type"].startswith("text/plain")
    return samples(answer.content.decode())


@pytest.fixture
def token(settings):
    settings.CHATSITE_METRICS = True
    settings.CHATSITE_METRICS_TOKEN = TOKEN


def test_the_right_token_reads_the_metrics_and_a_wrong_one_or_none_gets_the_plain_404(token):
    text = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()
    assert "# TYPE chatsite_websocket_connections gauge" in text
    assert "chatsite_stop_to_upstream_close_seconds" in text
    for headers in ({"HTTP_AUTHORIZATION": "Bearer wrong"}, {"HTTP_AUTHORIZATION": TOKEN}, {}):
        answer = Client().get("/metrics", **headers)
        assert answer.status_code == 404
        assert b"chatsite_" not in answer.content


def test_staff_read_the_metrics_without_a_token_and_other_users_do_not(settings):
    settings.CHATSITE_METRICS = True
    settings.CHATSITE_METRICS_TOKEN = ""
    alice = factories.user("alice")
    assert factories.logged_in(alice).get("/metrics").status_code == 404
    get_user_model().objects.filter(pk=alice.pk).update(is_staff=True)
    assert factories.logged_in(alice).get("/metrics").status_code == 200


def test_with_metrics_off_even_the_token_gets_a_404(settings):
    settings.CHATSITE_METRICS = False
    settings.CHATSITE_METRICS_TOKEN = TOKEN
    assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 404


async def test_a_reply_moves_the_counters_the_histograms_and_the_socket_gauge(
    token, connect, alice, upstream
):
    model = "fake?tokens=12&rate=0"
    labels = (("model", model), ("provider", "openai"))
    ended = (
        "chatsite_replies_ended_total",
        (("error_kind", ""), *labels[:1], ("provider", "openai"), ("status", "complete")),
    )
    before = await sync_to_async(scrape)()
    socket = await connect(alice)
    after_open = await sync_to_async(scrape)()
    assert (
        after_open[("chatsite_websocket_connections", ())]
        == before.get(("chatsite_websocket_connections", ()), 0) + 1
    )
    await start(socket, model=f"openai/{model}")
    await socket.recv_until("reply_finished")
    after = await sync_to_async(scrape)()

    def moved(key):
        return after.get(key, 0) - before.get(key, 0)

    assert moved(("chatsite_replies_started_total", labels)) == 1
    assert moved(ended) == 1
    assert moved(("chatsite_completion_tokens_total", labels)) == 12
    assert moved(("chatsite_time_to_first_token_seconds_count", labels)) == 1
    assert moved(("chatsite_tokens_per_second_count", labels)) == 1
    await socket.close()
    closed = await sync_to_async(scrape)()
    assert closed[("chatsite_websocket_connections", ())] == before.get(
        ("chatsite_websocket_connections", ()), 0
    )


async def test_a_stop_leaves_a_sample_of_its_latency_to_the_upstreams_close(token, connect, alice, upstream):
    before = await sync_to_async(scrape)()
    socket = await connect(alice)
    _, started = await start(socket, model="openai/fake?fault=drip&rate=100")
    await socket.recv_until("delta")
    await socket.send(type="stop", reply=started["reply"])
    frames = await socket.recv_until("reply_finished")
    assert frames[-1]["status"] == "stopped"
    assert await upstream.requests[-1].wait_disconnected_async(2.0)
    after = await sync_to_async(scrape)()
    key = ("chatsite_stop_to_upstream_close_seconds_count", ())
    assert after[key] == before.get(key, 0) + 1
    stopped = [k for k in after if k[0] == "chatsite_replies_ended_total" and ("status", "stopped") in k[1]]
    assert stopped and sum(after[k] - before.get(k, 0) for k in stopped) == 1


async def test_upstream_errors_are_counted_by_kind(token, connect, alice, upstream, settings):
    settings.CHATSITE_RETRY_ATTEMPTS = 1
    before = await sync_to_async(scrape)()
    socket = await connect(alice)
    await start(socket, model="openai/fake?fault=reset&after=2")
    frames = await socket.recv_until("reply_finished")
    kind = frames[-1]["error_kind"]
    assert kind
    after = await sync_to_async(scrape)()
    key = ("chatsite_upstream_errors_total", (("kind", kind), ("provider", "openai")))
    assert after[key] == before.get(key, 0) + 1


def test_model_labels_are_bounded_past_which_models_count_as_other(token, monkeypatch):
    from conversations import metrics

    monkeypatch.setattr(metrics, "_models", set())
    monkeypatch.setattr(metrics, "MAX_MODELS", 2)
    for name in ("a", "b", "c", "d", "a"):
        metrics.reply_started(provider="bounded", model=name)
    found = {k[1]: v for k, v in scrape().items() if k[0] == "chatsite_replies_started_total"}
    assert found[(("model", "a"), ("provider", "bounded"))] == 2
    assert found[(("model", "b"), ("provider", "bounded"))] == 1
    assert found[(("model", "other"), ("provider", "bounded"))] == 2
    assert (("model", "c"), ("provider", "bounded")) not in found


async def test_the_queue_gauge_counts_the_replies_waiting_for_a_slot(
    token, connect, alice, bob, upstream, settings
):
    settings.CHATSITE_PROVIDERS = {"openai": {**settings.CHATSITE_PROVIDERS["openai"], "CAPACITY": 1}}
    settings.CHATSITE_AUTO_TITLES = False
    key = ("chatsite_queue_length", ())
    assert (await sync_to_async(scrape)())[key] == 0
    first, second = await connect(alice), await connect(bob)
    _, running = await start(first, model="openai/fake?fault=drip&rate=50")
    await first.recv_until("delta")
    await start(second, model="openai/fake?tokens=2&rate=0")
    assert (await second.recv())["type"] == "reply_queued"
    assert (await sync_to_async(scrape)())[key] == 1
    await first.send(type="stop", reply=running["reply"])
    await second.recv_until("reply_finished")
    assert (await sync_to_async(scrape)())[key] == 0
