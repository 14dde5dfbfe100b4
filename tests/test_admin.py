"""Admin: every list works, transcripts show the images, and model output cannot run in staff browsers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from conversations import replies, services
from conversations.admin import transcript_html
from conversations.models import Attachment, Conversation, Feedback, Message, Ticket
from tests import factories
from tests.factories import attachment_for

pytestmark = pytest.mark.django_db

# factory-boy's types name the factory, not the row it saves.
ArticleFactory: Any = factories.ArticleFactory
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
    replies.reply_finish(
        reply_id=posted.reply.pk,
        text="很抱歉，我们会为您补发。",
        outcome=replies.ReplyOutcome.COMPLETE,
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
    ArticleFactory(title="Returns within 30 days", body="You can return **anything**.")
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
    article = ArticleFactory(title="Shipping", body="Two days.")
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
    assert message_html(transcript, "customer") == ["<p>包裹破损了</p>"]
    assert message_html(transcript, "assistant") == ["<p>很抱歉，我们会为您补发。</p>\n"]
    assert message_html(transcript, "system") == ["<p>已为您转接人工客服，请稍候。</p>"]
    assert (
        "qwen2.5-vl-7b · 812 prompt tokens, 14 reply tokens · first token 350 ms · total 900 ms" in transcript
    )
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
    # A customer's text is shown as the widget shows it: plain text, not Markdown.
    assert message_html(transcript, "customer") == [
        "<p>&lt;script&gt;alert(&#x27;customer&#x27;)&lt;/script&gt; **help**</p>"
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


def test_it_keeps_the_line_breaks_the_widget_shows(admin_client: Client) -> None:
    conversation = ConversationFactory()
    MessageFactory(conversation=conversation, text="Order 4821\nDamaged box\n\nCan you help?")
    MessageFactory(
        conversation=conversation, role=Message.Role.ASSISTANT, text="Sorry!\nWe will:\n\n- resend it"
    )
    MessageFactory(conversation=conversation, role=Message.Role.AGENT, text="Hi, I am Li.\nLooking now.")

    transcript = transcript_of(admin_client.get(change_url(conversation)).content.decode())

    assert message_html(transcript, "customer") == [
        "<p>Order 4821<br>Damaged box</p>\n\n<p>Can you help?</p>"
    ]
    assert message_html(transcript, "assistant") == [
        "<p>Sorry!<br>\nWe will:</p>\n<ul>\n<li>resend it</li>\n</ul>\n"
    ]
    assert message_html(transcript, "agent") == ["<p>Hi, I am Li.<br>Looking now.</p>"]


@pytest.mark.parametrize(
    ("prompt_tokens", "completion_tokens", "shown"),
    [
        (812, 14, "812 prompt tokens, 14 reply tokens"),
        (None, 200, "prompt unknown, 200 reply tokens"),
        (300, None, "300 prompt tokens, reply unknown"),
    ],
)
def test_it_shows_unreported_token_counts_as_unknown_not_zero(
    admin_client: Client, prompt_tokens: int | None, completion_tokens: int | None, shown: str
) -> None:
    conversation = ConversationFactory()
    MessageFactory(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        text="Hello",
        model="qwen",
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )

    transcript = transcript_of(admin_client.get(change_url(conversation)).content.decode())

    assert f"qwen · {shown}</div>" in transcript
    assert " 0 prompt" not in transcript
    assert " 0 reply" not in transcript


def test_it_shows_a_completion_count_made_from_the_stream_as_an_estimate(admin_client: Client) -> None:
    conversation = ConversationFactory()
    MessageFactory(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        text="Hello",
        model="qwen",
        completion_tokens=200,
        completion_tokens_counted=True,
    )

    transcript = transcript_of(admin_client.get(change_url(conversation)).content.decode())

    assert "qwen · prompt unknown, ≈200 reply tokens (counted from the stream)</div>" in transcript


def test_it_shows_no_token_count_when_neither_was_reported(admin_client: Client) -> None:
    conversation = ConversationFactory()
    MessageFactory(conversation=conversation, role=Message.Role.ASSISTANT, text="Hello", model="qwen")

    transcript = transcript_of(admin_client.get(change_url(conversation)).content.decode())

    assert "tokens" not in transcript
    assert "qwen</div>" in transcript


def test_it_lists_prompt_and_reply_tokens_in_two_columns_with_a_count_marked_as_an_estimate(
    admin_client: Client,
) -> None:
    conversation = ConversationFactory()
    MessageFactory(
        conversation=conversation, role=Message.Role.ASSISTANT, prompt_tokens=812, completion_tokens=14
    )
    MessageFactory(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        completion_tokens=200,
        completion_tokens_counted=True,
    )

    page = admin_client.get("/admin/conversations/message/?o=1").content.decode()

    assert re.findall(r'<td class="field-prompt_token_count">(.*?)</td>', page) == ["812", "—"]
    assert re.findall(r'<td class="field-reply_token_count">(.*?)</td>', page) == [
        "14",
        '<span title="The server reported no usage: counted from the streamed reply, an estimate.">'
        "≈200</span>",
    ]
    assert '<th scope="col" class="sortable column-prompt_token_count">' in page
    assert "Reply tokens" in page
    assert "unknown+" not in page


def markers_of(transcript: str) -> list[str]:
    return re.findall(r'<div class="transcript-marker (transcript-\w+)"[^>]*>(.*?)</div>', transcript)


def test_it_marks_a_reply_cut_short_at_the_token_limit_in_the_transcript(admin_client: Client) -> None:
    conversation = ConversationFactory()
    MessageFactory(
        conversation=conversation, role=Message.Role.ASSISTANT, text="Returns take", truncated=True
    )
    MessageFactory(conversation=conversation, role=Message.Role.ASSISTANT, text="Whole answer.")

    transcript = transcript_of(admin_client.get(change_url(conversation)).content.decode())

    assert markers_of(transcript) == [("transcript-truncated", "⚠ cut short (max tokens)")]


def test_it_shows_why_a_reply_failed_and_what_the_customer_was_told(admin_client: Client) -> None:
    conversation = ConversationFactory(locale="zh-Hans")
    posted = services.message_post(conversation=conversation, text="你好")
    assert posted.reply is not None
    replies.reply_fail(reply_id=posted.reply.pk, code="inference_unavailable")

    transcript = transcript_of(admin_client.get(change_url(conversation)).content.decode())

    assert markers_of(transcript) == [
        (
            "transcript-error",
            "<strong>Failed: the assistant was unavailable</strong> (inference_unavailable). "
            "The customer was told: “智能助手暂时无法使用，请稍后重试，或转接人工客服。”",
        )
    ]


def test_it_shows_the_ticket_reason_in_words_and_read_only_on_the_conversation_page(
    admin_client: Client,
) -> None:
    asked = ConversationFactory()
    services.handoff_request(conversation=asked, reason="customer_request")
    after_error = ConversationFactory()
    services.handoff_request(conversation=after_error, reason="reply_error:inference_timeout")

    asked_page = admin_client.get(change_url(asked)).content.decode()
    after_error_page = admin_client.get(change_url(after_error)).content.decode()

    assert 'name="tickets-0-reason"' not in asked_page
    assert "customer_request" not in asked_page
    assert re.findall(r'<td class="field-reason_label">\s*<p>(.*?)</p>\s*</td>', asked_page) == [
        "The customer asked for a person"
    ]
    assert re.findall(r'<td class="field-reason_label">\s*<p>(.*?)</p>\s*</td>', after_error_page) == [
        "The customer asked for a person after a failed reply (the assistant took too long)"
    ]
    assert list(Ticket.objects.order_by("pk").values_list("reason", flat=True)) == [
        "customer_request",
        "reply_error:inference_timeout",
    ]


def satisfaction_of(page: str) -> str:
    match = re.search(
        r'<div class="form-row field-satisfaction">.*?<div class="readonly">(.*?)</div>', page, re.DOTALL
    )
    assert match is not None
    return match.group(1)


def test_it_shows_the_csat_score_and_comment_on_the_conversation_page(admin_client: Client) -> None:
    rated = ConversationFactory()
    services.csat_record(conversation=rated, score=2, comment="Not <b>resolved</b> yet")
    rated_without_comment = ConversationFactory()
    services.csat_record(conversation=rated_without_comment, score=5)
    unrated = ConversationFactory()

    assert satisfaction_of(admin_client.get(change_url(rated)).content.decode()) == (
        "2/5: “Not &lt;b&gt;resolved&lt;/b&gt; yet”"
    )
    assert satisfaction_of(admin_client.get(change_url(rated_without_comment)).content.decode()) == (
        "5/5, no comment"
    )
    assert satisfaction_of(admin_client.get(change_url(unrated)).content.decode()) == "Not rated"


def conversation_with_replies(count: int) -> Conversation:
    """`count` exchanges, each reply rated and each customer message carrying an image."""
    conversation = ConversationFactory()
    for number in range(count):
        question = MessageFactory(conversation=conversation, text=f"Question {number}")
        Attachment.objects.filter(pk=attachment_for(conversation).pk).update(message=question)
        reply = MessageFactory(
            conversation=conversation, role=Message.Role.ASSISTANT, text=f"Answer {number}", reply_to=question
        )
        Feedback.objects.create(message=reply, rating=Feedback.Rating.UP, comment=f"Thanks {number}")
    return conversation


@pytest.mark.parametrize("reply_count", [1, 50])
def test_it_reads_the_transcript_in_two_queries_however_long(
    reply_count: int, django_assert_num_queries: Any
) -> None:
    conversation = conversation_with_replies(reply_count)

    # The messages with their feedback, then every message's attachments.
    with django_assert_num_queries(2):
        html = transcript_html(conversation)

    assert html.count("rated helpful: Thanks") == reply_count
    assert html.count("<img src=") == reply_count


def test_it_opens_a_long_conversation_with_as_many_queries_as_a_short_one(admin_client: Client) -> None:
    short, long = conversation_with_replies(2), conversation_with_replies(50)
    admin_client.get(change_url(short))  # the session and the user are cached from here on

    with CaptureQueriesContext(connection) as short_queries:
        assert admin_client.get(change_url(short)).status_code == 200
    with CaptureQueriesContext(connection) as long_queries:
        assert admin_client.get(change_url(long)).status_code == 200

    assert len(long_queries) == len(short_queries)


# --- status changes go through the services: admin actions -----------------------------------------------


def run_action(client: Client, model: str, action: str, *rows: Any) -> Any:
    response: Any = client.post(
        f"/admin/conversations/{model}/",
        {"action": action, "_selected_action": [str(row.pk) for row in rows]},
        follow=True,
    )
    assert response.status_code == 200
    return response


def test_it_shows_a_conversations_and_a_tickets_status_read_only(admin_client: Client) -> None:
    rows = a_conversation_with_everything()

    conversation_page = admin_client.get(change_url(rows["conversation"])).content.decode()
    ticket_page = admin_client.get(
        f"/admin/conversations/ticket/{rows['ticket'].pk}/change/"
    ).content.decode()

    assert 'name="status"' not in conversation_page
    assert 'name="tickets-0-status"' not in conversation_page
    assert 'name="status"' not in ticket_page
    assert 'name="conversation"' not in ticket_page
    assert 'name="reason"' in ticket_page


def test_it_ignores_a_status_posted_to_the_ticket_form(admin_client: Client) -> None:
    rows = a_conversation_with_everything()
    ticket: Ticket = rows["ticket"]

    response = admin_client.post(
        f"/admin/conversations/ticket/{ticket.pk}/change/",
        {"status": "resolved", "reason": "Refund, photo attached", "assignee": ""},
    )

    assert response.status_code == 302
    ticket.refresh_from_db()
    assert (ticket.status, ticket.reason, ticket.resolved_at) == ("open", "Refund, photo attached", None)
    assert Conversation.objects.get(pk=ticket.conversation_id).status == "handed_off"


def test_it_offers_no_way_to_add_or_delete_a_ticket_by_hand(admin_client: Client) -> None:
    rows = a_conversation_with_everything()

    assert admin_client.get("/admin/conversations/ticket/add/").status_code == 403
    assert admin_client.get(f"/admin/conversations/ticket/{rows['ticket'].pk}/delete/").status_code == 403
    assert Ticket.objects.count() == 1


def test_it_resolves_a_ticket_from_the_admin_and_the_assistant_answers_again(admin_client: Client) -> None:
    rows = a_conversation_with_everything()
    conversation: Conversation = rows["conversation"]
    assert services.message_post(conversation=conversation, text="还在吗？").reply is None

    response = run_action(admin_client, "ticket", "resolve_tickets", rows["ticket"])

    assert "1 ticket resolved." in response.content.decode()
    ticket = Ticket.objects.get()
    assert ticket.status == "resolved"
    assert ticket.resolved_at is not None
    conversation.refresh_from_db()
    assert conversation.status == "open"
    assert list(conversation.messages.filter(role="system").values_list("text", flat=True)) == [
        "已为您转接人工客服，请稍候。",
        "人工客服已处理完毕，智能助手将继续为您服务。",
    ]
    posted = services.message_post(conversation=conversation, text="谢谢")
    assert posted.reply is not None


def test_it_reports_a_ticket_already_resolved_and_changes_nothing(admin_client: Client) -> None:
    rows = a_conversation_with_everything()
    services.ticket_resolve(ticket=rows["ticket"])
    resolved_at = Ticket.objects.get().resolved_at
    message_count = Message.objects.count()

    response = run_action(admin_client, "ticket", "resolve_tickets", rows["ticket"])

    assert "0 tickets resolved. 1 left as they were (already resolved)." in response.content.decode()
    assert Ticket.objects.get().resolved_at == resolved_at
    assert Message.objects.count() == message_count


def test_it_closes_and_reopens_conversations_from_the_admin(admin_client: Client) -> None:
    rows = a_conversation_with_everything()
    conversation: Conversation = rows["conversation"]
    other = ConversationFactory()

    closed = run_action(admin_client, "conversation", "close_conversations", conversation, other)

    assert "2 conversations closed." in closed.content.decode()
    assert set(Conversation.objects.values_list("status", flat=True)) == {"closed"}
    assert Ticket.objects.get().status == "resolved"

    reopened = run_action(admin_client, "conversation", "reopen_conversations", conversation)

    assert "1 conversation reopened." in reopened.content.decode()
    conversation.refresh_from_db()
    other.refresh_from_db()
    assert (conversation.status, other.status) == ("open", "closed")
    assert list(conversation.messages.filter(role="system").values_list("text", flat=True)) == [
        "已为您转接人工客服，请稍候。",
        "本次会话已结束。",
        "本次会话已重新开启，智能助手将继续为您服务。",
    ]


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


# --- list pages fit 1280 px ------------------------------------------------------------------------------


def test_it_shows_long_text_on_one_line_with_all_of_it_on_hover(admin_client: Client) -> None:
    text = "My parcel arrived damaged and the tracking page says it was delivered elsewhere. " * 5
    message = MessageFactory(conversation=ConversationFactory(), text=text)

    page = admin_client.get("/admin/conversations/message/").content.decode()

    [cell] = re.findall(r'<td class="field-short_text">(.*?)</td>', page, re.DOTALL)
    assert cell == f'<span class="cs-one-line" title="{text}">{text[:300]}</span>'
    assert f'<td class="field-in_conversation"><a href="{change_url(message.conversation)}">' in page


def test_it_loads_the_admin_styles_and_names_the_icon_without_the_navigation_sidebar(
    admin_client: Client,
) -> None:
    page = admin_client.get("/admin/conversations/conversation/").content.decode()

    assert '<link rel="stylesheet" href="/static/cs_admin/admin.css">' in page
    assert '<link rel="icon" href="/favicon.ico" sizes="16x16 32x32 48x48">' in page
    assert 'id="nav-sidebar"' not in page
    assert (Path(__file__).parent.parent / "static" / "cs_admin" / "admin.css").is_file()
