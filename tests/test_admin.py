"""Admin: every list works, transcripts show the images, and model output cannot run in staff browsers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from conversations import services
from conversations.models import Attachment, Conversation, Message
from knowledge.models import Article
from tests import factories
from tests.factories import attachment_for

pytestmark = pytest.mark.django_db

# factory-boy's types name the factory, not the row it saves.
AssistantProfileFactory: Any = factories.AssistantProfileFactory
ConversationFactory: Any = factories.ConversationFactory
FaqEntryFactory: Any = factories.FaqEntryFactory
MessageFactory: Any = factories.MessageFactory

SIGNATURE = r"\?signature=[A-Za-z0-9_-]+:[A-Za-z0-9_-]+"
XSS_REPLY = "Look <img src=x onerror=alert(1)> and [x](javascript:alert(1))"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    """The admin user's password needs no strong hash in tests (PBKDF2 takes most of a second)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def change_url(conversation: Conversation) -> str:
    return f"/admin/conversations/conversation/{conversation.pk}/change/"


def transcript_of(page: str) -> str:
    """The transcript field's HTML in a conversation's change page."""
    match = re.search(r'<div class="form-row field-transcript">(.*?)id="tickets-group"', page, re.DOTALL)
    assert match is not None
    return match.group(1)


def message_html(transcript: str, role: str) -> list[str]:
    """The rendered text of each message of `role`, in order."""
    return re.findall(
        rf'<div class="transcript-message transcript-{role}".*?<div class="transcript-text">(.*?)</div>',
        transcript,
        re.DOTALL,
    )


def fetch(url: str) -> tuple[int, str, bytes]:
    response: Any = Client().get(url)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response.status_code, response["Content-Type"], body


def a_conversation_with_everything() -> dict[str, Any]:
    conversation = ConversationFactory(locale="zh-Hans")
    attachment = attachment_for(conversation, width=64, height=48)
    posted = services.message_post(
        conversation=conversation, text="包裹破损了", attachment_ids=[attachment.pk]
    )
    assert posted.reply is not None
    services.reply_finish(
        reply_id=posted.reply.pk,
        text="很抱歉，我们会为您补发。",
        status=Message.Status.COMPLETE,
        model="qwen2.5-vl-7b",
        prompt_tokens=812,
        completion_tokens=14,
        first_token_latency_ms=350,
        total_latency_ms=900,
    )
    feedback = services.feedback_record(
        conversation=conversation, message_id=posted.reply.pk, rating=-1, comment="Too slow to help"
    )
    csat = services.csat_record(conversation=conversation, score=2, comment="Not resolved yet")
    ticket = services.handoff_request(conversation=conversation, reason="Wants a refund for the damage")
    return {
        "conversation": conversation,
        "attachment": attachment,
        "reply": posted.reply,
        "feedback": feedback,
        "csat": csat,
        "ticket": ticket,
    }


# --- every list ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("conversations/conversation", ["Handed off to a person", "2/5", "1 conversation"]),
        ("conversations/message", ["包裹破损了", "很抱歉，我们会为您补发。", "qwen2.5-vl-7b", "3 messages"]),
        ("conversations/attachment", ["64×48", "photo.jpg", "1 attachment"]),
        ("conversations/ticket", ["Wants a refund for the damage", "1 ticket"]),
        ("conversations/feedback", ["Too slow to help", "很抱歉，我们会为您补发。", "1 feedback"]),
        ("conversations/satisfactionrating", ["Not resolved yet", "1 CSAT rating"]),
        ("inference/assistantprofile", ["Shop Helper", "1 assistant profile"]),
        ("knowledge/article", ["Returns within 30 days", "1 article"]),
        ("knowledge/faqentry", ["How much is shipping?", "1 FAQ entry"]),
    ],
)
def test_it_lists_the_rows_in_every_changelist(admin_client: Client, path: str, expected: list[str]) -> None:
    a_conversation_with_everything()
    AssistantProfileFactory(name="Shop Helper")
    Article.objects.create(title="Returns within 30 days", body="You can return **anything**.")
    FaqEntryFactory(question="How much is shipping?")

    response = admin_client.get(f"/admin/{path}/")

    assert response.status_code == 200
    page = response.content.decode()
    for text in expected:
        assert text in page, text


@pytest.mark.parametrize(
    "path",
    [
        "conversations/conversation",
        "conversations/message",
        "conversations/attachment",
        "conversations/ticket",
        "conversations/feedback",
        "conversations/satisfactionrating",
        "inference/assistantprofile",
        "knowledge/article",
        "knowledge/faqentry",
    ],
)
def test_it_sends_anonymous_users_from_every_changelist_to_the_login_page(path: str) -> None:
    response = Client().get(f"/admin/{path}/")

    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next=/admin/{path}/"


def test_it_sends_anonymous_users_from_a_conversation_to_the_login_page() -> None:
    conversation = ConversationFactory()

    response = Client().get(change_url(conversation))

    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={change_url(conversation)}"


def test_it_opens_every_change_page(admin_client: Client) -> None:
    rows = a_conversation_with_everything()
    profile = AssistantProfileFactory()
    article = Article.objects.create(title="Shipping", body="Two days.")
    faq = FaqEntryFactory()
    pages = [
        change_url(rows["conversation"]),
        f"/admin/conversations/message/{rows['reply'].pk}/change/",
        f"/admin/conversations/attachment/{rows['attachment'].pk}/change/",
        f"/admin/conversations/ticket/{rows['ticket'].pk}/change/",
        f"/admin/conversations/feedback/{rows['feedback'].pk}/change/",
        f"/admin/conversations/satisfactionrating/{rows['csat'].pk}/change/",
        f"/admin/inference/assistantprofile/{profile.pk}/change/",
        f"/admin/knowledge/article/{article.pk}/change/",
        f"/admin/knowledge/faqentry/{faq.pk}/change/",
    ]

    statuses = [admin_client.get(page).status_code for page in pages]

    assert statuses == [200] * len(pages)


# --- the transcript -----------------------------------------------------------------------------------


def test_it_shows_who_said_what_in_the_transcript(admin_client: Client) -> None:
    rows = a_conversation_with_everything()

    response = admin_client.get(change_url(rows["conversation"]))

    assert response.status_code == 200
    transcript = transcript_of(response.content.decode())
    assert message_html(transcript, "customer") == ["<p>包裹破损了</p>\n"]
    assert message_html(transcript, "assistant") == ["<p>很抱歉，我们会为您补发。</p>\n"]
    assert message_html(transcript, "system") == ["<p>已为您转接人工客服，请稍候。</p>\n"]
    assert "qwen2.5-vl-7b · 812+14 tokens · first token 350 ms · total 900 ms" in transcript
    assert "rated not helpful: Too slow to help" in transcript
    roles = re.findall(r'class="transcript-message transcript-(\w+)"', transcript)
    assert roles == ["customer", "assistant", "system"]


def test_it_shows_thumbnails_that_load_and_link_to_the_full_image(admin_client: Client) -> None:
    rows = a_conversation_with_everything()
    attachment: Attachment = rows["attachment"]

    response = admin_client.get(change_url(rows["conversation"]))

    transcript = transcript_of(response.content.decode())
    links = re.findall(
        rf'<a href="(/api/widget/attachments/{attachment.pk}/image{SIGNATURE})" target="_blank" '
        rf'rel="noopener"><img src="(/api/widget/attachments/{attachment.pk}/thumbnail{SIGNATURE})" '
        r'alt="Image 64×48"',
        transcript,
    )
    assert len(links) == 1
    image_url, thumbnail_url = links[0]
    assert fetch(thumbnail_url) == (
        200,
        "image/jpeg",
        Path(attachment.thumbnail.path).read_bytes(),
    )
    assert fetch(image_url) == (
        200,
        "image/jpeg",
        Path(attachment.image.path).read_bytes(),
    )


def test_it_shows_a_messages_images_in_the_order_sent(admin_client: Client) -> None:
    conversation = ConversationFactory()
    uploaded_first = attachment_for(conversation, width=40, height=30)
    uploaded_second = attachment_for(conversation, width=50, height=30)
    services.message_post(
        conversation=conversation, text="", attachment_ids=[uploaded_second.pk, uploaded_first.pk]
    )

    transcript = transcript_of(admin_client.get(change_url(conversation)).content.decode())

    assert re.findall(r'<img src="/api/widget/attachments/([0-9a-f-]+)/thumbnail', transcript) == [
        str(uploaded_second.pk),
        str(uploaded_first.pk),
    ]
    assert message_html(transcript, "customer") == ["<em>(no text)</em>"]


def test_it_falls_back_to_the_image_without_a_thumbnail(admin_client: Client) -> None:
    conversation = ConversationFactory()
    attachment = attachment_for(conversation)
    services.message_post(conversation=conversation, text="See", attachment_ids=[attachment.pk])
    Attachment.objects.filter(pk=attachment.pk).update(thumbnail="")

    transcript = transcript_of(admin_client.get(change_url(conversation)).content.decode())

    [thumbnail_url] = re.findall(r'<img src="([^"]+)"', transcript)
    assert re.fullmatch(rf"/api/widget/attachments/{attachment.pk}/image{SIGNATURE}", thumbnail_url)
    assert fetch(thumbnail_url)[:2] == (200, "image/jpeg")


def test_it_renders_model_output_inertly_in_the_transcript(admin_client: Client) -> None:
    conversation = ConversationFactory()
    MessageFactory(conversation=conversation, text="<script>alert('customer')</script> **help**")
    MessageFactory(conversation=conversation, role=Message.Role.ASSISTANT, text=XSS_REPLY)
    MessageFactory(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        text='[click](JaVaScRiPt:alert(2)) <a href="javascript:alert(3)">y</a> [ok](https://example.com/help)',
    )

    response = admin_client.get(change_url(conversation))

    transcript = transcript_of(response.content.decode())
    assert message_html(transcript, "customer") == [
        "<p>&lt;script&gt;alert('customer')&lt;/script&gt; <strong>help</strong></p>\n"
    ]
    assert message_html(transcript, "assistant") == [
        "<p>Look &lt;img src=x onerror=alert(1)&gt; and [x](javascript:alert(1))</p>\n",
        '<p>[click](JaVaScRiPt:alert(2)) &lt;a href="javascript:alert(3)"&gt;y&lt;/a&gt; '
        '<a href="https://example.com/help" rel="noopener noreferrer nofollow">ok</a></p>\n',
    ]
    tags = re.findall(r"<[a-zA-Z][^>]*>", transcript)
    assert [tag for tag in tags if "onerror" in tag.lower() or "javascript:" in tag.lower()] == []
    assert "<script" not in transcript
    assert "<img src=x" not in transcript


# --- the attachment list -------------------------------------------------------------------------------


def test_it_lists_attachments_with_size_dimensions_and_conversation(admin_client: Client) -> None:
    conversation = ConversationFactory()
    small = attachment_for(conversation, width=64, height=48)
    large = attachment_for(conversation, width=4000, height=3000)

    response = admin_client.get("/admin/conversations/attachment/")

    assert response.status_code == 200
    page = response.content.decode()
    rows = [
        {
            name: re.sub(r"<[^>]+>", "", cell)
            for name, cell in re.findall(r'class="field-(\w+)[^"]*">(.*?)</t[hd]>', row)
        }
        for row in re.findall(r"<tr>(.*?)</tr>", page.split("<tbody>")[1], re.DOTALL)
    ]
    assert [
        (row["id"], row["conversation"], row["dimensions"], row["size_kb"], row["original_name"])
        for row in rows
    ] == [
        (str(small.pk), str(conversation), "64×48", f"{small.size} bytes", "photo.jpg"),
        (str(large.pk), str(conversation), "1463×1097", f"{round(large.size / 1024)} KB", "photo.jpg"),
    ]
    assert small.size < 1024 < large.size
    assert str(conversation) == f"Conversation {str(conversation.pk)[:8]} (Open)"


def test_it_links_the_listed_thumbnail_to_the_full_image_not_the_change_page(
    admin_client: Client,
) -> None:
    attachment = attachment_for(ConversationFactory())

    page = admin_client.get("/admin/conversations/attachment/").content.decode()

    [cell] = re.findall(r'<td class="field-thumbnail_preview">(.*?)</td>', page, re.DOTALL)
    assert re.fullmatch(
        rf'<a href="/api/widget/attachments/{attachment.pk}/image{SIGNATURE}" target="_blank" rel="noopener">'
        rf'<img src="/api/widget/attachments/{attachment.pk}/thumbnail{SIGNATURE}" alt="" '
        r'style="max-height:64px;max-width:96px;border-radius:4px"></a>',
        cell,
    )
    assert (
        f'<th class="field-id"><a href="/admin/conversations/attachment/{attachment.pk}/change/">'
        f"{attachment.pk}</a></th>"
    ) in page


def test_it_shows_an_attachments_ocr_text(admin_client: Client) -> None:
    attachment = attachment_for(ConversationFactory())
    Attachment.objects.filter(pk=attachment.pk).update(ocr_text="INVOICE 4821")

    response = admin_client.get(f"/admin/conversations/attachment/{attachment.pk}/change/")

    assert response.status_code == 200
    assert "INVOICE 4821" in response.content.decode()
    assert attachment.sha256 in response.content.decode()
