"""Auto-assignment: waiting tickets go to online accepting agents under the cap, never twice."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from asgiref.sync import async_to_sync
from celery import current_app
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client
from django.utils import timezone

from agents import assignment, events, presence, tasks
from agents.models import AgentPresence, HandoffSettings
from conversations import handoff_rules, services
from conversations.events import conversation_group
from conversations.models import Conversation, Ticket
from tests import factories
from tests.factories import GroupListener, handed_off, make_user

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("auto_assignment_runs_here")]

ConversationFactory: Any = factories.ConversationFactory


def auto_assignment(*, enabled: bool = True, cap: int = 2) -> None:
    HandoffSettings(pk=1, auto_assign_enabled=enabled, max_conversations_per_agent=cap).save()


def agent(
    *, online: bool = True, accepting: bool = True, group: str | None = "Agent", first_name: str = ""
) -> User:
    user = make_user(group, first_name=first_name)
    online_until = timezone.now() + timedelta(seconds=60) if online else timezone.now() - timedelta(seconds=1)
    AgentPresence.objects.create(user=user, accepting=accepting, online_until=online_until)
    return user


def waiting_ticket(**fields: Any) -> Ticket:
    """A handed-off conversation's ticket, opened without running the listeners (no commit here)."""
    ticket: Ticket = handed_off(**fields).tickets.get()
    return ticket


def assignee_of(ticket: Ticket) -> int | None:
    ticket.refresh_from_db()
    return ticket.assignee_id


def test_it_gives_a_new_ticket_to_the_online_accepting_agent(django_capture_on_commit_callbacks: Any) -> None:
    auto_assignment()
    lin = agent()

    with django_capture_on_commit_callbacks(execute=True):
        ticket = waiting_ticket()

    ticket.refresh_from_db()
    assert (ticket.status, ticket.assignee_id) == (Ticket.Status.ASSIGNED, lin.pk)
    assert ticket.claimed_at is not None


def test_it_leaves_the_ticket_waiting_while_auto_assignment_is_off(
    django_capture_on_commit_callbacks: Any,
) -> None:
    auto_assignment(enabled=False)
    agent()

    with django_capture_on_commit_callbacks(execute=True):
        ticket = waiting_ticket()

    ticket.refresh_from_db()
    assert (ticket.status, ticket.assignee_id, ticket.claimed_at) == (Ticket.Status.OPEN, None, None)


def test_it_leaves_the_ticket_waiting_without_saved_settings(django_capture_on_commit_callbacks: Any) -> None:
    agent()

    with django_capture_on_commit_callbacks(execute=True):
        ticket = waiting_ticket()

    assert assignee_of(ticket) is None


def test_it_gives_nothing_to_agents_offline_away_or_outside_the_agent_groups(
    django_capture_on_commit_callbacks: Any,
) -> None:
    auto_assignment()
    agent(online=False)
    agent(accepting=False)
    agent(group=None)

    with django_capture_on_commit_callbacks(execute=True):
        ticket = waiting_ticket()

    assert assignee_of(ticket) is None
    assert Ticket.objects.filter(assignee__isnull=False).count() == 0


def test_it_gives_the_ticket_to_the_agent_with_the_fewest_unresolved_ones() -> None:
    auto_assignment(cap=5)
    busy, free = agent(), agent()
    for _ in range(2):
        Ticket.objects.filter(pk=waiting_ticket().pk).update(assignee=busy, status=Ticket.Status.ASSIGNED)
    resolved = waiting_ticket()
    Ticket.objects.filter(pk=resolved.pk).update(assignee=free, status=Ticket.Status.ASSIGNED)
    services.ticket_resolve(ticket=resolved)
    Ticket.objects.filter(pk=waiting_ticket().pk).update(assignee=free, status=Ticket.Status.ASSIGNED)
    ticket = waiting_ticket()

    assert assignment.auto_assign() == [ticket]

    # free holds one unresolved ticket (the resolved one does not count), busy two.
    assert assignee_of(ticket) == free.pk


def test_between_equally_busy_agents_it_picks_who_was_assigned_least_recently() -> None:
    auto_assignment(cap=5)
    recent, earlier, never = agent(), agent(), agent()
    now = timezone.now()
    for holder, claimed_at in ((recent, now - timedelta(minutes=1)), (earlier, now - timedelta(hours=1))):
        old = waiting_ticket()
        Ticket.objects.filter(pk=old.pk).update(
            assignee=holder, status=Ticket.Status.ASSIGNED, claimed_at=claimed_at
        )
        services.ticket_resolve(ticket=old)
    first, second, third = waiting_ticket(), waiting_ticket(), waiting_ticket()

    assert assignment.auto_assign() == [first, second, third]

    assert [assignee_of(ticket) for ticket in (first, second, third)] == [never.pk, earlier.pk, recent.pk]


def test_it_gives_the_oldest_waiting_ticket_first_and_stops_at_the_cap() -> None:
    auto_assignment(cap=2)
    lin = agent()
    tickets = [waiting_ticket() for _ in range(3)]

    assert assignment.auto_assign() == tickets[:2]

    assert [assignee_of(ticket) for ticket in tickets] == [lin.pk, lin.pk, None]


def test_it_gives_an_agent_at_the_cap_nothing_more() -> None:
    auto_assignment(cap=1)
    lin = agent()
    Ticket.objects.filter(pk=waiting_ticket().pk).update(assignee=lin, status=Ticket.Status.ASSIGNED)
    ticket = waiting_ticket()

    assert assignment.auto_assign() == []

    assert assignee_of(ticket) is None


def test_an_agent_coming_online_gets_the_waiting_tickets(django_capture_on_commit_callbacks: Any) -> None:
    auto_assignment(cap=2)
    lin = User.objects.create_user(username="lin", password="unused-password")
    lin.groups.add(Group.objects.get_or_create(name="Agent")[0])
    tickets = [waiting_ticket() for _ in range(3)]

    with django_capture_on_commit_callbacks(execute=True):
        state = presence.presence_mark_online(user=lin)

    assert state == presence.PresenceState(accepting=True, online_agents=1)
    assert [assignee_of(ticket) for ticket in tickets] == [lin.pk, lin.pk, None]


def test_an_agent_who_starts_accepting_gets_a_waiting_ticket(django_capture_on_commit_callbacks: Any) -> None:
    auto_assignment()
    lin = agent(accepting=False)
    ticket = waiting_ticket()

    with django_capture_on_commit_callbacks(execute=True):
        presence.presence_mark_online(user=lin, accepting=True)

    assert assignee_of(ticket) == lin.pk


def test_an_agent_who_stops_accepting_gets_nothing(django_capture_on_commit_callbacks: Any) -> None:
    auto_assignment()
    lin = agent()

    with django_capture_on_commit_callbacks(execute=True):
        state = presence.presence_mark_online(user=lin, accepting=False)
        ticket = waiting_ticket()

    assert state.accepting is False
    assert assignee_of(ticket) is None


def test_a_resolved_ticket_makes_room_for_the_next_waiting_one(
    django_capture_on_commit_callbacks: Any,
) -> None:
    auto_assignment(cap=1)
    lin = agent()
    with django_capture_on_commit_callbacks(execute=True):
        first = waiting_ticket()
        second = waiting_ticket()
    assert (assignee_of(first), assignee_of(second)) == (lin.pk, None)

    with django_capture_on_commit_callbacks(execute=True):
        services.ticket_resolve(ticket=first)

    assert assignee_of(second) == lin.pk


def test_the_assignment_tells_the_customer_the_console_and_the_agent(
    django_capture_on_commit_callbacks: Any,
) -> None:
    auto_assignment()
    lin = agent(first_name="Lin")
    ticket = waiting_ticket()
    customer = GroupListener(conversation_group(ticket.conversation_id))
    console = GroupListener(events.agents_conversation_group(ticket.conversation_id))
    own = GroupListener(events.agent_user_group(lin.pk))
    queue = GroupListener(events.AGENTS_QUEUE_GROUP)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            assert assignment.auto_assign() == [ticket]

        joined, updated, assigned = customer.receive(), console.receive(), own.receive()
        queue_event = queue.receive()
    finally:
        for listener in (customer, console, own, queue):
            listener.close()

    conversation_id = str(ticket.conversation_id)
    assert joined == {"type": "agent.joined", "conversation": conversation_id, "agent": {"name": "Lin"}}
    assert (updated["type"], updated["conversation"]) == ("ticket.updated", conversation_id)
    assert (updated["ticket"]["status"], updated["ticket"]["assignee"]["id"]) == ("assigned", lin.pk)
    assert assigned == {
        "type": "conversation.assigned",
        "conversation": conversation_id,
        "ticket": updated["ticket"],
    }
    assert queue_event == {"type": "queue.changed"}


def test_a_run_that_assigns_several_tickets_tells_the_queues_once(
    django_capture_on_commit_callbacks: Any,
) -> None:
    auto_assignment(cap=5)
    agent()
    tickets = [waiting_ticket(), waiting_ticket()]
    queue = GroupListener(events.AGENTS_QUEUE_GROUP)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            assert assignment.auto_assign() == tickets
        # Group events arrive in order: a marker sent now comes next unless a second queue.changed did.
        async_to_sync(queue.layer.group_send)(queue.group, {"type": "test.marker"})
        received = [queue.receive(), queue.receive()]
    finally:
        queue.close()

    assert received == [{"type": "queue.changed"}, {"type": "test.marker"}]


def test_a_run_that_assigns_nothing_tells_the_queues_nothing(django_capture_on_commit_callbacks: Any) -> None:
    auto_assignment()
    ticket = waiting_ticket()
    queue = GroupListener(events.AGENTS_QUEUE_GROUP)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            assert assignment.auto_assign() == []
        async_to_sync(queue.layer.group_send)(queue.group, {"type": "test.marker"})
        received = queue.receive()
    finally:
        queue.close()

    assert received == {"type": "test.marker"}
    assert assignee_of(ticket) is None


def test_it_queues_the_assignment_task_by_name_on_commit_and_runs_nothing_itself(
    django_capture_on_commit_callbacks: Any,
) -> None:
    auto_assignment()
    agent()

    with (
        mock.patch.object(current_app, "send_task") as send_task,
        django_capture_on_commit_callbacks(execute=True),
    ):
        ticket = waiting_ticket()

    send_task.assert_called_once_with(handoff_rules.AUTO_ASSIGN_TASK)
    # The name a worker knows the task by.
    assert tasks.auto_assign.name == handoff_rules.AUTO_ASSIGN_TASK == "agents.tasks.auto_assign"
    ticket.refresh_from_db()
    assert (ticket.status, ticket.assignee_id) == (Ticket.Status.OPEN, None)


def test_a_closed_conversations_ticket_is_not_assigned() -> None:
    auto_assignment()
    agent()
    ticket = waiting_ticket()
    services.conversation_close(conversation=Conversation.objects.get(pk=ticket.conversation_id))

    assert assignment.auto_assign() == []

    ticket.refresh_from_db()
    assert (ticket.status, ticket.assignee_id) == (Ticket.Status.RESOLVED, None)


@pytest.mark.django_db(transaction=True)
def test_concurrent_assigners_never_give_one_ticket_twice_nor_exceed_the_cap() -> None:
    # Off while the tickets open (each commits here, and would be assigned at once), then on.
    auto_assignment(enabled=False)
    agents = [agent() for _ in range(3)]
    tickets = [waiting_ticket() for _ in range(9)]
    auto_assignment(cap=2)
    runners = 4
    barrier = threading.Barrier(runners)
    given: list[Ticket] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait(timeout=10)
            given.extend(assignment.auto_assign())
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(runners)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert [thread for thread in threads if thread.is_alive()] == []
    assert errors == []
    assert sorted(ticket.pk for ticket in given) == [ticket.pk for ticket in tickets[:6]]
    loads = Counter(Ticket.objects.filter(assignee__isnull=False).values_list("assignee_id", flat=True))
    assert loads == {user.pk: 2 for user in agents}
    assert Ticket.objects.filter(assignee__isnull=True, status=Ticket.Status.OPEN).count() == 3


def settings_saved_in_admin(**fields: str) -> Any:
    """The handoff settings' change form posted by a superuser (unticked boxes are left out)."""
    client = Client()
    client.force_login(User.objects.create_superuser(username="boss", password="unused-password"))
    form = {
        "knowledge_miss_turns": "2",
        "thumbs_down_in_a_row": "2",
        "time_zone": "Asia/Shanghai",
        "expected_handle_minutes": "5",
        **fields,
    }
    return client.post("/admin/agents/handoffsettings/1/change/", form)


@pytest.mark.parametrize("change", ["switched_on", "cap_raised"])
def test_saving_the_settings_in_admin_gives_out_the_conversations_already_waiting(
    django_capture_on_commit_callbacks: Any, change: str
) -> None:
    auto_assignment(enabled=change == "cap_raised", cap=1)
    lin = agent()
    tickets = [waiting_ticket() for _ in range(2)]
    if change == "cap_raised":
        assignment.auto_assign()
        assert [assignee_of(ticket) for ticket in tickets] == [lin.pk, None]

    with django_capture_on_commit_callbacks(execute=True):
        response = settings_saved_in_admin(auto_assign_enabled="on", max_conversations_per_agent="2")

    assert response.status_code == 302
    assert [assignee_of(ticket) for ticket in tickets] == [lin.pk, lin.pk]


def test_saving_the_settings_with_auto_assignment_off_gives_nothing_out(
    django_capture_on_commit_callbacks: Any, auto_assignment_runs_here: list[str]
) -> None:
    auto_assignment(enabled=False)
    agent()
    ticket = waiting_ticket()

    with django_capture_on_commit_callbacks(execute=True):
        response = settings_saved_in_admin(expected_handle_minutes="9", max_conversations_per_agent="2")

    assert response.status_code == 302
    assert HandoffSettings.objects.get().expected_handle_minutes == 9
    assert assignee_of(ticket) is None
    assert auto_assignment_runs_here == []
