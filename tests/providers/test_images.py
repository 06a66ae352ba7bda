"""Images in each API's own shape, sent to the fake upstream, which judges them strictly."""

from __future__ import annotations

import base64

import httpx
import pytest

from conversations.prompt import IMAGE_TOKENS, ChatMessage, ImagePart
from conversations.providers.anthropic import AnthropicProvider
from conversations.providers.base import CommonOptions
from conversations.providers.local import LocalProvider
from conversations.providers.openai import OpenAIProvider
from tests import files

from .streaming import collect

PNG = files.png(8, 8)
B64 = base64.b64encode(PNG).decode()
ASKED = [
    ChatMessage("system", "Be brief."),
    ChatMessage("user", "Describe it", (ImagePart("image/png", PNG),)),
]


def openai(fake, **common) -> OpenAIProvider:
    return OpenAIProvider(
        "openai",
        {"BASE_URL": fake.openai_base_url, "API_KEY": "sk-test", "MODELS": []},
        CommonOptions(**common),
    )


def anthropic(fake, **common) -> AnthropicProvider:
    return AnthropicProvider(
        "anthropic",
        {"BASE_URL": fake.anthropic_base_url, "API_KEY": "sk-ant-test", "MODELS": []},
        CommonOptions(**common),
    )


async def test_openai_gets_image_url_parts_with_a_data_url(fake):
    pieces, result, error = await collect(openai(fake), "fake-vision?tokens=3&rate=0", ASKED)

    assert error is None and "".join(pieces) == "w0 w1 w2 "
    (record,) = fake.wait_for_requests(1)
    assert record.status == 200
    assert record.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe it"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{B64}"}},
            ],
        },
    ]
    assert record.images == [("image/png", PNG)]


async def test_anthropic_gets_base64_image_blocks_before_the_text(fake):
    pieces, result, error = await collect(anthropic(fake), "fake-vision?tokens=3&rate=0", ASKED)

    assert error is None and "".join(pieces) == "w0 w1 w2 "
    (record,) = fake.wait_for_requests(1)
    assert record.status == 200
    assert record.body["system"] == "Be brief."
    assert record.body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": B64}},
                {"type": "text", "text": "Describe it"},
            ],
        }
    ]
    assert record.images == [("image/png", PNG)]


async def test_an_image_alone_is_sent_without_an_empty_text_block(fake):
    only = [ChatMessage("user", "", (ImagePart("image/png", PNG),))]
    _, _, error = await collect(anthropic(fake), "fake-vision?tokens=1&rate=0", only)
    assert error is None
    assert [b["type"] for b in fake.requests[-1].body["messages"][0]["content"]] == ["image"]
    _, _, error = await collect(openai(fake), "fake-vision?tokens=1&rate=0", only)
    assert error is None
    assert [p["type"] for p in fake.requests[-1].body["messages"][0]["content"]] == ["image_url"]


async def test_both_fakes_refuse_an_image_for_a_model_that_cannot_see(fake):
    for provider in (openai(fake), anthropic(fake)):
        _, _, error = await collect(provider, "fake?tokens=1", ASKED)
        assert error is not None and error.status_code == 400
        assert fake.requests[-1].status == 400


def _openai_post(fake, content, *, model="fake-vision", role="user"):
    body = {"model": model, "messages": [{"role": role, "content": content}]}
    return httpx.post(f"{fake.openai_base_url}/chat/completions", json=body, timeout=10)


def _anthropic_post(fake, content, *, model="fake-vision", role="user"):
    body = {"model": model, "max_tokens": 10, "messages": [{"role": role, "content": content}]}
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    return httpx.post(f"{fake.anthropic_base_url}/v1/messages", json=body, headers=headers, timeout=10)


JPEG_AS_PNG = base64.b64encode(files.jpeg_with_gps()).decode()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (
            [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{JPEG_AS_PNG}"}}],
            "does not match",
        ),
        ([{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}], "base64 data URL"),
        ([{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}}], "not supported"),
        ([{"type": "image_url", "image_url": "data:image/png;base64,AAAA"}], "image_url part is"),
        ([{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{B64}", "x": 1}}], "unknown"),
        ([{"type": "image_url", "url": f"data:image/png;base64,{B64}"}], "image_url part is"),
        ([{"type": "image", "source": {}}], "Supported values"),
        ([{"type": "text", "text": 5}], "text part"),
        ([], "non-empty array"),
    ],
)
def test_the_openai_fake_refuses_a_malformed_image_part(fake, content, words):
    response = _openai_post(fake, content)
    assert response.status_code == 400
    assert words in response.json()["error"]["message"]


def test_the_openai_fake_takes_images_in_user_messages_only(fake):
    part = [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{B64}"}}]
    assert _openai_post(fake, part).status_code == 200
    assert (
        "only allowed in user messages"
        in _openai_post(fake, part, role="assistant").json()["error"]["message"]
    )
    assert (
        "only supported by certain models"
        in _openai_post(fake, part, model="fake").json()["error"]["message"]
    )


def _block(media_type="image/png", data=B64, **source):
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data, **source}}


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ([_block(data=JPEG_AS_PNG)], "does not match the provided media type image/png"),
        ([_block(data="not base64!")], "not valid base64"),
        ([_block(media_type="image/tiff")], "not supported"),
        ([_block(extra="x")], "an image source is"),
        (
            [{"type": "image", "source": {"type": "url", "url": "https://example.com/x.png"}}],
            "an image source is",
        ),
        ([{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{B64}"}}], "does not match any"),
        ([{"type": "text", "text": ""}], "must be non-empty"),
        ("", "must be non-empty"),
    ],
)
def test_the_anthropic_fake_refuses_a_malformed_image_block(fake, content, words):
    response = _anthropic_post(fake, content)
    assert response.status_code == 400
    assert words in response.json()["error"]["message"]


def test_the_anthropic_fake_takes_images_in_user_messages_of_a_vision_model_only(fake):
    assert _anthropic_post(fake, [_block(), {"type": "text", "text": "hi"}]).status_code == 200
    assert _anthropic_post(fake, [_block()], role="assistant").status_code == 400
    assert _anthropic_post(fake, [_block()], model="fake").status_code == 400


# --- which models take images ------------------------------------------------------


async def test_a_listing_that_names_image_input_marks_the_model(fake):
    provider = openai(fake)
    models = {m.name: m.vision for m in await provider.list_models()}
    assert models["fake-vision"] is True and models["fake"] is False
    assert provider.takes_images(model="fake-vision")
    assert (await provider.list_models())[0].as_dict()["vision"] is False


def test_claude_3_and_later_take_images_and_the_setting_names_the_others(fake):
    provider = anthropic(fake, vision_models=("anthropic/my-proxy-*",))
    assert provider.takes_images(model="claude-3-5-sonnet-latest")
    assert provider.takes_images(model="claude-sonnet-4-5")
    assert not provider.takes_images(model="claude-2.1")
    assert not provider.takes_images(model="claude-instant-1.2")
    assert provider.takes_images(model="my-proxy-model")
    assert not provider.takes_images(model="other")
    assert not openai(fake, vision_models=("openai/gpt-4o*",)).takes_images(model="llama3")
    assert openai(fake, vision_models=("openai/gpt-4o*",)).takes_images(model="gpt-4o-mini")


def test_the_bundled_model_is_text_only_whatever_the_setting_says():
    local = LocalProvider("local", {"MODEL_PATH": "/nonexistent.gguf"}, CommonOptions(vision_models=("*",)))
    assert not local.takes_images(model="SmolLM2-135M-Instruct")


async def test_an_image_counts_a_fixed_estimate_against_the_window(fake):
    provider = openai(fake)
    plain = await provider.count_prompt_tokens(model="m", messages=[ChatMessage("user", "Describe it")])
    seen = await provider.count_prompt_tokens(model="m", messages=ASKED[1:])
    assert seen.tokens - plain.tokens == IMAGE_TOKENS
