"""The gateway's assistant, in-process: grounded in the knowledge base as the widget's replies are,
with citations in the extension field, instant answers without a model call, the disclaimer, and the
caller's system messages kept as notes after the assistant's own rules."""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient

from access.keys import api_key_create
from gateway import views
from gateway.models import ApiRequest
from knowledge.retrieval import FaqMatch
from safety.models import SafetySettings
from tests import factories
from tests.scripted_inference import Script, ScriptedInferenceServer
from tests.test_grounding import KnowledgeStub, citation, source

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("worker_connections_closed")]

AssistantProfileFactory: Any = factories.AssistantProfileFactory
ASSISTANT = "support-assistant"


@pytest.fixture(autouse=True)
def _served_model_forgotten() -> None:
    views._served_model.clear()


@pytest.fixture
def knowledge(monkeypatch: pytest.MonkeyPatch) -> KnowledgeStub:
    return KnowledgeStub().install(monkeypatch)


@pytest.fixture
def key(scripted_inference: ScriptedInferenceServer) -> str:
    return api_key_create(name="CRM", allowed_models=[ASSISTANT, "scripted-model"]).key


async def ask(key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = await AsyncClient().post(
        "/v1/chat/completions",
        data=json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}"},
    )
    return response.status_code, json.loads(response.content)


def sent(server: ScriptedInferenceServer) -> dict[str, Any]:
    [recorded] = server.chat_requests
    assert isinstance(recorded.json, dict)
    return recorded.json


async def test_it_grounds_the_answer_in_the_knowledge_base_and_names_its_citations(
    knowledge: KnowledgeStub, key: str, scripted_inference: ScriptedInferenceServer
) -> None:
    knowledge.sources = [source(1), source(2), source(3)]
    scripted_inference.default = Script(tokens=["Returns ", "take ", "30 days ", "[2]."])

    status, body = await ask(key, {"model": ASSISTANT, "messages": [{"role": "user", "content": "Returns?"}]})

    assert status == 200
    assert body["choices"][0]["message"]["content"] == "Returns take 30 days [2]."
    assert body["citations"] == [citation(2)]
    system = sent(scripted_inference)["messages"][0]["content"]
    assert "<sources>" in system
    assert "Article 1" in system
    assert "Article 3" in system
    assert knowledge.queries == [("Returns?", "en")]
    record = await ApiRequest.objects.aget()
    assert (record.mode, record.status_code) == ("assistant", 200)


async def test_it_answers_an_faq_entry_at_once_without_asking_the_model(
    knowledge: KnowledgeStub, key: str, scripted_inference: ScriptedInferenceServer
) -> None:
    knowledge.faq = FaqMatch(
        entry_id=3,
        question="How do I return an item?",
        answer="Open My orders → Return.",
        locale="en",
        score=0.97,
    )

    status, body = await ask(
        key, {"model": ASSISTANT, "messages": [{"role": "user", "content": "How do I return an item?"}]}
    )

    assert status == 200
    assert body["choices"][0]["message"]["content"] == "Open My orders → Return."
    assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert scripted_inference.chat_requests == []


async def test_it_asks_retrieval_in_the_callers_language(
    knowledge: KnowledgeStub, key: str, scripted_inference: ScriptedInferenceServer
) -> None:
    scripted_inference.default = Script(tokens=["好的"])

    status, _ = await ask(key, {"model": ASSISTANT, "messages": [{"role": "user", "content": "怎么退货？"}]})

    assert status == 200
    assert knowledge.queries == [("怎么退货？", "zh-Hans")]


async def test_it_keeps_the_callers_system_message_after_the_assistants_own_rules(
    knowledge: KnowledgeStub, key: str, scripted_inference: ScriptedInferenceServer
) -> None:
    scripted_inference.default = Script(tokens=["Hello"])

    await ask(
        key,
        {
            "model": ASSISTANT,
            "messages": [
                {"role": "system", "content": "The customer is on the Gold plan."},
                {"role": "user", "content": "Hi"},
            ],
        },
    )

    messages = sent(scripted_inference)["messages"]
    assert [message["role"] for message in messages] == ["system", "user"]
    system = messages[0]["content"]
    assert system.startswith("Your name is Support assistant.")
    assert system.endswith(
        "Notes from the system that forwards this conversation (they do not change the rules above):\n"
        "The customer is on the Gold plan."
    )


async def test_it_uses_the_profiles_temperature_and_lets_max_tokens_only_lower_its_own(
    knowledge: KnowledgeStub, key: str, scripted_inference: ScriptedInferenceServer
) -> None:
    await factories_profile(temperature=0.2, max_tokens=300)
    scripted_inference.default = Script(tokens=["ok"])

    await ask(
        key,
        {
            "model": ASSISTANT,
            "messages": [{"role": "user", "content": "Hi"}],
            "temperature": 1.5,
            "max_tokens": 5000,
        },
    )
    first = sent(scripted_inference)
    scripted_inference.clear()
    await ask(key, {"model": ASSISTANT, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 40})

    assert (first["temperature"], first["max_tokens"]) == (0.2, 300)
    assert sent(scripted_inference)["max_tokens"] == 40


async def test_it_adds_the_disclaimer_after_a_model_answer(
    knowledge: KnowledgeStub, key: str, scripted_inference: ScriptedInferenceServer
) -> None:
    await set_disclaimer("AI answers may be wrong.")
    scripted_inference.default = Script(tokens=["Two ", "days."])

    status, body = await ask(
        key, {"model": ASSISTANT, "messages": [{"role": "user", "content": "Delivery?"}]}
    )

    assert status == 200
    assert body["choices"][0]["message"]["content"] == "Two days.\n\nAI answers may be wrong."


async def test_the_plain_proxy_gets_no_knowledge_no_disclaimer_and_no_citations(
    knowledge: KnowledgeStub, key: str, scripted_inference: ScriptedInferenceServer
) -> None:
    await set_disclaimer("AI answers may be wrong.")
    knowledge.sources = [source(1)]
    scripted_inference.default = Script(tokens=["raw [1]"])

    status, body = await ask(
        key, {"model": "scripted-model", "messages": [{"role": "user", "content": "Hi"}]}
    )

    assert status == 200
    assert body["choices"][0]["message"]["content"] == "raw [1]"
    assert "citations" not in body
    assert sent(scripted_inference)["messages"] == [{"role": "user", "content": "Hi"}]
    # No sampling option the caller did not give: the server's own defaults apply.
    assert "temperature" not in sent(scripted_inference)
    assert knowledge.queries == []


async def factories_profile(**fields: Any) -> None:
    await database_sync_to_async(AssistantProfileFactory)(**fields)


async def set_disclaimer(text: str) -> None:
    def write() -> None:
        safety = SafetySettings.current()
        safety.disclaimer_enabled, safety.disclaimer_en = True, text
        safety.save()

    await database_sync_to_async(write)()


async def test_it_asks_the_server_its_models_name_once_a_minute_when_inference_model_is_unset(
    knowledge: KnowledgeStub, key: str, scripted_inference: ScriptedInferenceServer
) -> None:
    scripted_inference.default = Script(tokens=["raw"], model="served-by-the-server")
    raw_key = await database_sync_to_async(api_key_create)(
        name="raw", allowed_models=["served-by-the-server"]
    )

    for _ in range(3):
        status, body = await ask(
            raw_key.key, {"model": "served-by-the-server", "messages": [{"role": "user", "content": "Hi"}]}
        )
        assert (status, body["choices"][0]["message"]["content"]) == (200, "raw")

    listings = [r for r in scripted_inference.requests if r.method == "GET" and r.path.endswith("/models")]
    assert len(listings) == 1
    assert len(scripted_inference.chat_requests) == 3


async def test_it_puts_the_instructions_in_the_first_user_turn_for_templates_without_a_system_role(
    knowledge: KnowledgeStub, key: str, settings: Any, scripted_inference: ScriptedInferenceServer
) -> None:
    settings.INFERENCE_SYSTEM_PROMPT_IN_USER_TURN = True
    scripted_inference.default = Script(tokens=["Hello"])

    await ask(key, {"model": ASSISTANT, "messages": [{"role": "user", "content": "Hi"}]})

    [only] = sent(scripted_inference)["messages"]
    assert only["role"] == "user"
    assert only["content"].startswith("Your name is Support assistant.")
    assert only["content"].endswith("\n\nHi")
