"""The review queue: filled by the customers' bad ratings once per conversation, reviewed in admin."""

from __future__ import annotations

import io
import re
import threading
import time
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from conversations import services
from conversations.models import Conversation, Feedback, Message, SatisfactionRating
from knowledge.models import Article, ArticleVersion, FaqEntry
from review import selectors
from review import services as review_services
from review.models import ReviewItem
from tests import factories
from tests.factories import make_user

pytestmark = pytest.mark.django_db

ConversationFactory: Any = factories.ConversationFactory
MessageFactory: Any = factories.MessageFactory
SHANGHAI = ZoneInfo("Asia/Shanghai")
QUEUE_URL = "/admin/review/reviewitem/"


def conversation_with_replies(
    *exchanges: tuple[str, str], locale: str = "en"
) -> tuple[Conversation, list[Message], list[Message]]:
    """A conversation of customer questions each answered by an assistant reply, in order."""
    conversation = ConversationFactory(locale=locale)
    questions, replies = [], []
    for question_text, reply_text in exchanges:
        question = MessageFactory(conversation=conversation, role=Message.Role.CUSTOMER, text=question_text)
        reply = MessageFactory(
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            source=Message.Source.MODEL,
            text=reply_text,
            reply_to=question,
        )
        questions.append(question)
        replies.append(reply)
    return conversation, questions, replies


def one_exchange(**kwargs: Any) -> tuple[Conversation, Message]:
    conversation, _, replies = conversation_with_replies(
        ("Where is my parcel?", "It left our warehouse yesterday."), **kwargs
    )
    return conversation, replies[0]


def thumbs_down(conversation: Conversation, reply: Message, comment: str = "") -> Feedback:
    return services.feedback_record(
        conversation=conversation, message_id=reply.pk, rating=Feedback.Rating.DOWN, comment=comment
    )


def staff_user(*permissions: str, username: str) -> User:
    """A staff user with exactly these permissions ("app_label.codename")."""
    user = make_user(None, username=username, is_staff=True)
    for permission in permissions:
        app_label, codename = permission.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


REVIEWER_PERMISSIONS = (
    "review.view_reviewitem",
    "review.change_reviewitem",
    "knowledge.add_article",
    "knowledge.change_article",
    "knowledge.add_faqentry",
    "knowledge.change_faqentry",
)


@pytest.fixture
def reviewer() -> User:
    return staff_user(*REVIEWER_PERMISSIONS, username="supervisor-lin")


@pytest.fixture
def reviewer_client(reviewer: User) -> Client:
    client = Client()
    client.force_login(reviewer)
    return client


@pytest.fixture
def manager_client() -> Client:
    client = Client()
    client.force_login(staff_user("review.view_reviewitem", username="manager-zhou"))
    return client


@pytest.fixture
def superuser_client() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser(username="boss", password="unused-password"))
    return client


# --- filling by itself ------------------------------------------------------------------------------


def test_a_thumbs_down_queues_the_conversation_with_that_reply() -> None:
    conversation, _, replies = conversation_with_replies(
        ("Where is my parcel?", "It left yesterday."), ("Can I change the address?", "No, never.")
    )

    thumbs_down(conversation, replies[0])

    item = ReviewItem.objects.get()
    assert (item.conversation_id, item.reason, item.latest_reason) == (
        conversation.pk,
        ReviewItem.Reason.THUMBS_DOWN,
        ReviewItem.Reason.THUMBS_DOWN,
    )
    # The reply the customer rated, not the conversation's last one.
    assert item.message_id == replies[0].pk
    assert item.is_open


@pytest.mark.parametrize("score", [1, 2])
def test_a_csat_of_1_or_2_queues_the_conversation_with_its_last_assistant_reply(score: int) -> None:
    conversation, _, replies = conversation_with_replies(
        ("Where is my parcel?", "It left yesterday."), ("Can I change the address?", "No, never.")
    )
    # A person wrote after the assistant: the CSAT still judges the assistant's last reply.
    MessageFactory(conversation=conversation, role=Message.Role.AGENT, text="Let me check that for you.")

    services.csat_record(conversation=conversation, score=score)

    item = ReviewItem.objects.get()
    assert (item.conversation_id, item.reason, item.message_id) == (
        conversation.pk,
        ReviewItem.Reason.CSAT_LOW,
        replies[1].pk,
    )


@pytest.mark.parametrize("score", [3, 4, 5])
def test_a_csat_of_3_to_5_queues_nothing(score: int) -> None:
    conversation, _ = one_exchange()

    services.csat_record(conversation=conversation, score=score)

    assert not ReviewItem.objects.exists()


def test_a_thumbs_up_queues_nothing() -> None:
    conversation, reply = one_exchange()

    services.feedback_record(conversation=conversation, message_id=reply.pk, rating=Feedback.Rating.UP)

    assert not ReviewItem.objects.exists()


def test_a_csat_changed_from_good_to_bad_queues_the_conversation() -> None:
    conversation, _ = one_exchange()
    services.csat_record(conversation=conversation, score=4)

    services.csat_record(conversation=conversation, score=2)

    assert ReviewItem.objects.get().conversation_id == conversation.pk


def test_a_csat_without_any_assistant_reply_is_queued_without_a_reply() -> None:
    conversation = ConversationFactory()
    MessageFactory(conversation=conversation, text="Hello?")

    services.csat_record(conversation=conversation, score=1)

    item = ReviewItem.objects.get()
    assert (item.reason, item.message_id) == (ReviewItem.Reason.CSAT_LOW, None)


def test_a_thumbs_down_then_a_csat_of_1_is_one_item_keeping_the_first_reason_and_reply() -> None:
    conversation, _, replies = conversation_with_replies(
        ("Where is my parcel?", "It left yesterday."), ("Can I change the address?", "No, never.")
    )
    thumbs_down(conversation, replies[0])
    first = ReviewItem.objects.get()

    services.csat_record(conversation=conversation, score=1)

    item = ReviewItem.objects.get()
    assert item.pk == first.pk
    assert (item.reason, item.latest_reason, item.message_id) == (
        ReviewItem.Reason.THUMBS_DOWN,
        ReviewItem.Reason.CSAT_LOW,
        replies[0].pk,
    )
    assert item.created_at == first.created_at
    assert item.latest_rated_at >= first.latest_rated_at


def test_two_thumbs_downs_are_one_item() -> None:
    conversation, _, replies = conversation_with_replies(
        ("Where is my parcel?", "It left yesterday."), ("Can I change the address?", "No, never.")
    )

    thumbs_down(conversation, replies[0])
    thumbs_down(conversation, replies[1])
    thumbs_down(conversation, replies[1], comment="Still wrong")

    item = ReviewItem.objects.get()
    assert (item.conversation_id, item.message_id) == (conversation.pk, replies[0].pk)


def test_a_rating_changed_to_good_later_leaves_the_item() -> None:
    conversation, reply = one_exchange()
    thumbs_down(conversation, reply)
    services.csat_record(conversation=conversation, score=1)

    services.feedback_record(conversation=conversation, message_id=reply.pk, rating=Feedback.Rating.UP)
    services.csat_record(conversation=conversation, score=5)

    assert ReviewItem.objects.filter(conversation=conversation, verdict="").count() == 1


def test_a_new_bad_rating_after_the_verdict_leaves_the_verdict(reviewer: User) -> None:
    conversation, reply = one_exchange()
    thumbs_down(conversation, reply)
    review_services.review_verdict_record(
        item=ReviewItem.objects.get(), verdict=ReviewItem.Verdict.TONE, note="", reviewer=reviewer
    )

    services.csat_record(conversation=conversation, score=1)

    item = ReviewItem.objects.get()
    assert (item.verdict, item.latest_reason) == (ReviewItem.Verdict.TONE, ReviewItem.Reason.CSAT_LOW)


def in_threads(*targets: Any) -> list[BaseException]:
    """Run the targets at the same moment, each on its own thread and database connection."""
    barrier = threading.Barrier(len(targets))
    errors: list[BaseException] = []

    def run(target: Any) -> None:
        try:
            barrier.wait()
            target()
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return errors


@pytest.mark.django_db(transaction=True)
def test_ratings_saved_at_once_from_threads_make_one_item() -> None:
    conversation, _, replies = conversation_with_replies(
        ("Where is my parcel?", "It left yesterday."), ("Can I change the address?", "No, never.")
    )

    errors = in_threads(
        lambda: thumbs_down(conversation, replies[0]),
        lambda: thumbs_down(conversation, replies[1]),
        lambda: services.csat_record(conversation=conversation, score=1),
    )

    assert errors == []
    assert ReviewItem.objects.filter(conversation=conversation).count() == 1
    # Every rating was saved: the loser's conflict did not undo its rating.
    assert Feedback.objects.filter(message__conversation=conversation, rating=-1).count() == 2
    assert SatisfactionRating.objects.get(conversation=conversation).score == 1


@pytest.mark.django_db(transaction=True)
def test_a_rating_that_loses_the_race_for_the_item_gets_the_winners() -> None:
    """The winner's item is not committed yet when the loser comes: the loser waits for it (on the
    conversation's lock), then returns the winner's item, its own transaction still usable."""
    conversation, reply = one_exchange()
    winner_inserted = threading.Event()
    results: dict[str, Any] = {}

    def winner() -> None:
        with transaction.atomic():
            results["winner"] = review_services.review_item_record(
                conversation_id=conversation.pk, reason=ReviewItem.Reason.THUMBS_DOWN, message_id=reply.pk
            )
            winner_inserted.set()
            # Long enough for the loser to reach its insert and wait on the row.
            time.sleep(1.0)

    def loser() -> None:
        assert winner_inserted.wait(timeout=10)
        with transaction.atomic():
            results["loser"] = review_services.review_item_record(
                conversation_id=conversation.pk, reason=ReviewItem.Reason.CSAT_LOW, message_id=None
            )
            # The loser's transaction is still usable after the conflict (its savepoint was rolled back).
            results["loser_after"] = ReviewItem.objects.filter(conversation=conversation).count()

    errors = in_threads(winner, loser)

    assert errors == []
    winner_item, winner_created = results["winner"]
    loser_item, loser_created = results["loser"]
    assert (winner_created, loser_created) == (True, False)
    assert loser_item.pk == winner_item.pk
    assert results["loser_after"] == 1
    item = ReviewItem.objects.get()
    assert (item.reason, item.latest_reason, item.message_id) == (
        ReviewItem.Reason.THUMBS_DOWN,
        ReviewItem.Reason.CSAT_LOW,
        reply.pk,
    )


def test_the_backfill_queues_existing_ratings_once_in_the_order_they_were_given() -> None:
    first, first_reply = one_exchange()
    second, second_reply = one_exchange()
    good, good_reply = one_exchange()
    # Saved without signals (as before the queue existed).
    Feedback.objects.bulk_create(
        [
            Feedback(message=first_reply, rating=Feedback.Rating.DOWN),
            Feedback(message=good_reply, rating=Feedback.Rating.UP),
        ]
    )
    SatisfactionRating.objects.bulk_create(
        [
            SatisfactionRating(conversation=first, score=1),
            SatisfactionRating(conversation=second, score=2),
            SatisfactionRating(conversation=good, score=4),
        ]
    )
    # After the replies were written (the CSAT judges the last reply before it).
    day = timezone.now().replace(microsecond=0) + timedelta(minutes=5)
    Feedback.objects.filter(message=first_reply).update(updated_at=day)
    SatisfactionRating.objects.filter(conversation=first).update(updated_at=day + timedelta(hours=1))
    SatisfactionRating.objects.filter(conversation=second).update(updated_at=day + timedelta(hours=2))
    assert not ReviewItem.objects.exists()

    first_run, second_run = io.StringIO(), io.StringIO()
    call_command("review_backfill", stdout=first_run)
    call_command("review_backfill", stdout=second_run)

    items = {item.conversation_id: item for item in ReviewItem.objects.all()}
    assert set(items) == {first.pk, second.pk}
    assert (items[first.pk].reason, items[first.pk].latest_reason, items[first.pk].message_id) == (
        ReviewItem.Reason.THUMBS_DOWN,
        ReviewItem.Reason.CSAT_LOW,
        first_reply.pk,
    )
    assert items[first.pk].created_at == day
    assert items[first.pk].latest_rated_at == day + timedelta(hours=1)
    assert (items[second.pk].reason, items[second.pk].message_id, items[second.pk].created_at) == (
        ReviewItem.Reason.CSAT_LOW,
        second_reply.pk,
        day + timedelta(hours=2),
    )
    # Newest first.
    assert list(ReviewItem.objects.values_list("conversation_id", flat=True)) == [second.pk, first.pk]
    assert "3 bad rating(s) read; 2 conversation(s) queued" in first_run.getvalue()
    assert "3 bad rating(s) read; 0 conversation(s) queued" in second_run.getvalue()


# --- review_queue_open (the reports) ------------------------------------------------------------------


def queued_conversation_created_at(at: datetime, *, verdict: str = "") -> Conversation:
    conversation, reply = one_exchange()
    Conversation.objects.filter(pk=conversation.pk).update(created_at=at)
    thumbs_down(conversation, reply)
    if verdict:
        ReviewItem.objects.filter(conversation=conversation).update(
            verdict=verdict, reviewed_at=timezone.now()
        )
    return conversation


def test_the_open_count_counts_items_without_a_verdict_of_conversations_created_in_the_period(
    settings: Any,
) -> None:
    # Days are TIME_ZONE's: Beijing midnight is 16:00 UTC the day before.
    settings.TIME_ZONE = "Asia/Shanghai"
    queued_conversation_created_at(datetime(2026, 11, 1, 0, 0, tzinfo=SHANGHAI))
    queued_conversation_created_at(datetime(2026, 11, 2, 23, 59, tzinfo=SHANGHAI))
    queued_conversation_created_at(datetime(2026, 11, 2, 12, 0, tzinfo=SHANGHAI), verdict="tone")
    queued_conversation_created_at(datetime(2026, 11, 3, 0, 0, tzinfo=SHANGHAI))
    queued_conversation_created_at(datetime(2026, 10, 31, 23, 59, tzinfo=SHANGHAI))
    # Rated, but not badly: not in the queue.
    conversation, _ = one_exchange()
    services.csat_record(conversation=conversation, score=5)

    assert selectors.review_queue_open_count() == 4
    # Dates: whole days, both inclusive.
    assert (
        selectors.review_queue_open_count(created_from=date(2026, 11, 1), created_to=date(2026, 11, 2)) == 2
    )
    # Datetimes: from inclusive, to exclusive.
    assert (
        selectors.review_queue_open_count(
            created_from=datetime(2026, 11, 1, 0, 0, tzinfo=SHANGHAI),
            created_to=datetime(2026, 11, 3, 0, 0, tzinfo=SHANGHAI),
        )
        == 2
    )
    assert selectors.review_queue_open_count(created_from=date(2026, 11, 3)) == 1
    assert selectors.review_queue_open_count(created_to=date(2026, 10, 31)) == 1
    assert selectors.review_verdict_counts(created_from=date(2026, 11, 1), created_to=date(2026, 11, 2)) == {
        "": 2,
        "correct": 0,
        "wrong_answer": 0,
        "missing_knowledge": 0,
        "should_have_handed_off": 0,
        "tone": 1,
        "other": 0,
    }


# --- the queue in admin -------------------------------------------------------------------------------


def listed(client: Client, **params: Any) -> list[ReviewItem]:
    response: Any = client.get(QUEUE_URL, params)
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


def test_the_queue_lists_newest_first_with_the_reply_and_a_link_to_the_transcript(
    manager_client: Client,
) -> None:
    older, older_reply = one_exchange()
    newer, _, newer_replies = conversation_with_replies(("Is it broken?", "Our parcels never break, ever."))
    thumbs_down(older, older_reply)
    thumbs_down(newer, newer_replies[0])
    ReviewItem.objects.filter(conversation=older).update(created_at=timezone.now() - timedelta(hours=1))

    response = manager_client.get(QUEUE_URL)

    assert response.status_code == 200
    page = response.content.decode()
    assert [item.conversation_id for item in response.context["cl"].result_list] == [newer.pk, older.pk]
    assert f'href="/admin/conversations/conversation/{newer.pk}/change/"' in page
    # Each item opens from the list, apart from its conversation's link.
    item = ReviewItem.objects.get(conversation=newer)
    opens = rf'<a href="{QUEUE_URL}{item.pk}/change/[^"]*">(?:<[^>]*>)*Our parcels never break'
    assert re.search(opens, page)
    assert "Our parcels never break, ever." in page
    assert "Thumbs-down" in page


def test_the_queue_filters_by_state_verdict_reason_and_reviewer(
    superuser_client: Client, reviewer: User
) -> None:
    other_reviewer = staff_user(*REVIEWER_PERMISSIONS, username="supervisor-wu")
    open_one, open_reply = one_exchange()
    thumbs_down(open_one, open_reply)
    toned, _ = one_exchange()
    services.csat_record(conversation=toned, score=1)
    wrong, wrong_reply = one_exchange()
    thumbs_down(wrong, wrong_reply)
    review_services.review_verdict_record(
        item=ReviewItem.objects.get(conversation=toned), verdict="tone", note="", reviewer=reviewer
    )
    review_services.review_verdict_record(
        item=ReviewItem.objects.get(conversation=wrong),
        verdict="wrong_answer",
        note="",
        reviewer=other_reviewer,
    )

    def conversations(**params: Any) -> set[Any]:
        return {item.conversation_id for item in listed(superuser_client, **params)}

    assert conversations() == {open_one.pk, toned.pk, wrong.pk}
    assert conversations(state="open") == {open_one.pk}
    assert conversations(state="reviewed") == {toned.pk, wrong.pk}
    assert conversations(verdict__exact="tone") == {toned.pk}
    assert conversations(reason__exact="thumbs_down") == {open_one.pk, wrong.pk}
    assert conversations(reason__exact="csat_low") == {toned.pk}
    assert conversations(reviewer__id__exact=str(other_reviewer.pk)) == {wrong.pk}


def test_the_change_page_shows_the_question_and_the_reply_in_full(manager_client: Client) -> None:
    long_reply = "It left our warehouse yesterday. " + "More detail follows here. " * 40 + "The end."
    conversation, _, replies = conversation_with_replies(("Where is my parcel, please?", long_reply))
    thumbs_down(conversation, replies[0], comment="Not my parcel")
    item = ReviewItem.objects.get()

    response = manager_client.get(f"{QUEUE_URL}{item.pk}/change/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "Where is my parcel, please?" in page
    assert "The end." in page
    assert "Not my parcel" in page
    # A manager reads it: no form to change the verdict or to make a draft.
    assert 'name="verdict"' not in page
    assert "review-correction-form" not in page


def test_a_reviewer_records_a_verdict_and_note_with_their_name(
    reviewer_client: Client, reviewer: User
) -> None:
    conversation, reply = one_exchange()
    thumbs_down(conversation, reply)
    item = ReviewItem.objects.get()

    response = reviewer_client.post(
        f"{QUEUE_URL}{item.pk}/change/", {"verdict": "wrong_answer", "note": "  Quoted the old policy. "}
    )

    assert response.status_code == 302
    item.refresh_from_db()
    assert (item.verdict, item.note, item.reviewer) == ("wrong_answer", "Quoted the old policy.", reviewer)
    assert item.reviewed_at is not None
    assert timezone.now() - item.reviewed_at < timedelta(minutes=1)
    assert selectors.review_queue_open_count() == 0
    listing = reviewer_client.get(QUEUE_URL).content.decode()
    assert "Wrong answer" in listing
    assert "supervisor-lin" in listing


def test_a_verdict_is_required(reviewer_client: Client) -> None:
    conversation, reply = one_exchange()
    thumbs_down(conversation, reply)
    item = ReviewItem.objects.get()

    response: Any = reviewer_client.post(f"{QUEUE_URL}{item.pk}/change/", {"verdict": "", "note": "Hmm"})

    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == ["verdict"]
    item.refresh_from_db()
    assert (item.verdict, item.reviewer, item.reviewed_at) == ("", None, None)


def test_a_user_without_change_permission_cannot_record_a_verdict(manager_client: Client) -> None:
    conversation, reply = one_exchange()
    thumbs_down(conversation, reply)
    item = ReviewItem.objects.get()

    response = manager_client.post(f"{QUEUE_URL}{item.pk}/change/", {"verdict": "correct", "note": ""})
    draft = manager_client.post(
        f"{QUEUE_URL}{item.pk}/draft/", {"kind": "article", "title": "Parcel", "answer": "Answer"}
    )

    assert response.status_code == 403
    assert draft.status_code == 403
    item.refresh_from_db()
    assert (item.verdict, item.reviewer) == ("", None)
    assert not Article.objects.exists()


def test_staff_without_view_permission_do_not_see_the_queue() -> None:
    client = Client()
    client.force_login(staff_user(username="agent-he"))

    assert client.get(QUEUE_URL).status_code == 403


def test_the_queue_cannot_be_added_to_by_hand(superuser_client: Client) -> None:
    assert superuser_client.get(f"{QUEUE_URL}add/").status_code == 403


# --- correct and make a draft ---------------------------------------------------------------------------


def test_one_post_makes_a_draft_article_linked_to_the_review(reviewer_client: Client, reviewer: User) -> None:
    conversation, _, replies = conversation_with_replies(
        ("包裹 多久 能到？", "三个月。"), locale=Conversation.Locale.ZH_HANS
    )
    thumbs_down(conversation, replies[0])
    item = ReviewItem.objects.get()
    page = reviewer_client.get(f"{QUEUE_URL}{item.pk}/change/").content.decode()
    # The title starts as the customer's question.
    assert 'value="包裹 多久 能到？"' in page

    response = reviewer_client.post(
        f"{QUEUE_URL}{item.pk}/draft/",
        {"kind": "article", "title": "包裹多久能到？", "answer": "国内包裹一般 3 到 5 天送达。"},
    )

    assert response.status_code == 302
    assert response["Location"] == f"{QUEUE_URL}{item.pk}/change/"
    article = Article.objects.get()
    assert (article.title, article.body, article.locale, article.status) == (
        "包裹多久能到？",
        "国内包裹一般 3 到 5 天送达。",
        "zh-Hans",
        Article.Status.DRAFT,
    )
    assert article.slug.startswith("review-")
    assert article.updated_by == reviewer
    # Saved through the knowledge services: its first version is kept.
    assert ArticleVersion.objects.filter(article=article, number=1).exists()
    item.refresh_from_db()
    assert (item.draft_article, item.corrected_answer) == (article, "国内包裹一般 3 到 5 天送达。")
    shown = reviewer_client.get(f"{QUEUE_URL}{item.pk}/change/").content.decode()
    assert f'href="/admin/knowledge/article/{article.pk}/change/"' in shown
    assert "Created the draft article" in shown
    # And back: the article's page links to the review item and its conversation.
    article_page = reviewer_client.get(f"/admin/knowledge/article/{article.pk}/change/").content.decode()
    assert "Drafted from review" in article_page
    assert f'href="{QUEUE_URL}{item.pk}/change/"' in article_page
    assert f'href="/admin/conversations/conversation/{conversation.pk}/change/"' in article_page


def test_one_post_makes_an_unpublished_faq_entry_linked_to_the_review(reviewer_client: Client) -> None:
    conversation, _reply = one_exchange()
    services.csat_record(conversation=conversation, score=2)
    item = ReviewItem.objects.get()

    response = reviewer_client.post(
        f"{QUEUE_URL}{item.pk}/draft/",
        {"kind": "faq", "title": "Where is my parcel?", "answer": "Track it on the orders page."},
    )

    assert response.status_code == 302
    entry = FaqEntry.objects.get()
    assert (entry.question, entry.answer, entry.locale, entry.is_published, entry.is_quick_entry) == (
        "Where is my parcel?",
        "Track it on the orders page.",
        "en",
        False,
        False,
    )
    item.refresh_from_db()
    assert item.draft_faq_entry == entry
    assert f'href="/admin/knowledge/faqentry/{entry.pk}/change/"' in (
        reviewer_client.get(f"{QUEUE_URL}{item.pk}/change/").content.decode()
    )
    entry_page = reviewer_client.get(f"/admin/knowledge/faqentry/{entry.pk}/change/").content.decode()
    assert f'href="{QUEUE_URL}{item.pk}/change/"' in entry_page


def test_a_second_draft_article_for_one_review_is_refused(reviewer_client: Client) -> None:
    conversation, reply = one_exchange()
    thumbs_down(conversation, reply)
    item = ReviewItem.objects.get()
    form = {"kind": "article", "title": "Where is my parcel?", "answer": "Track it."}
    reviewer_client.post(f"{QUEUE_URL}{item.pk}/draft/", form)

    again = reviewer_client.post(f"{QUEUE_URL}{item.pk}/draft/", form)

    assert again.status_code == 200
    assert "already has a draft article" in again.content.decode()
    assert Article.objects.count() == 1


def test_a_correction_without_an_answer_shows_the_page_again_with_the_error(reviewer_client: Client) -> None:
    conversation, reply = one_exchange()
    thumbs_down(conversation, reply)
    item = ReviewItem.objects.get()

    response: Any = reviewer_client.post(
        f"{QUEUE_URL}{item.pk}/draft/", {"kind": "article", "title": "Kept title", "answer": ""}
    )

    assert response.status_code == 200
    assert list(response.context["correction_form"].errors) == ["answer"]
    assert 'value="Kept title"' in response.content.decode()
    assert not Article.objects.exists()
    item.refresh_from_db()
    assert item.draft_article is None


def test_a_reviewer_who_may_not_add_articles_gets_only_the_faq_choice() -> None:
    client = Client()
    client.force_login(
        staff_user(
            "review.view_reviewitem", "review.change_reviewitem", "knowledge.add_faqentry", username="sv"
        )
    )
    conversation, reply = one_exchange()
    thumbs_down(conversation, reply)
    item = ReviewItem.objects.get()

    article = client.post(f"{QUEUE_URL}{item.pk}/draft/", {"kind": "article", "title": "Q", "answer": "A"})

    assert article.status_code == 200
    assert not Article.objects.exists()
    assert 'value="faq"' in article.content.decode()
    assert 'value="article"' not in article.content.decode()


def test_the_draft_page_answers_only_posts(reviewer_client: Client) -> None:
    conversation, reply = one_exchange()
    thumbs_down(conversation, reply)

    assert reviewer_client.get(f"{QUEUE_URL}{ReviewItem.objects.get().pk}/draft/").status_code == 405
