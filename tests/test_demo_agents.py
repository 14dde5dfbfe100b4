"""The demo's staff: make run's newcomer can log in as an agent (lin, sam), a supervisor (mei) or a
manager (wang) right away."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from agents.permissions import user_is_agent, user_is_supervisor
from cs_platform import demo

pytestmark = pytest.mark.django_db


def test_it_creates_two_agents_with_the_admin_password_on_the_first_load(settings, tmp_path: Path) -> None:
    settings.VAR_DIR = tmp_path
    password = demo.demo_data_load()

    assert password is not None
    users = get_user_model().objects.filter(username__in=["lin", "sam"]).order_by("username")
    assert [user.get_full_name() for user in users] == ["Lin Wei", "Sam Taylor"]
    for user in users:
        assert user.check_password(password)
        assert user_is_agent(user)
        assert not user_is_supervisor(user)
        # Agents read their tickets' transcripts in admin, which needs the staff flag.
        assert user.is_staff
        assert not user.is_superuser


def test_it_creates_a_supervisor_and_a_manager_with_the_admin_password(settings, tmp_path: Path) -> None:
    settings.VAR_DIR = tmp_path
    password = demo.demo_data_load()

    assert password is not None
    users = {user.username: user for user in get_user_model().objects.filter(username__in=["mei", "wang"])}
    assert {name: user.get_full_name() for name, user in users.items()} == {
        "mei": "Mei Chen",
        "wang": "Wang Fang",
    }
    assert list(users["mei"].groups.values_list("name", flat=True)) == ["Supervisor"]
    assert list(users["wang"].groups.values_list("name", flat=True)) == ["Manager"]
    for user in users.values():
        assert user.check_password(password)
        assert user.is_staff
        assert not user.is_superuser
        assert user_is_supervisor(user)  # both may act on conversations other agents hold
    assert users["mei"].has_perm("knowledge.change_article")
    assert not users["wang"].has_perm("knowledge.change_article")
    assert users["wang"].has_perm("conversations.view_conversation")


def test_it_adds_missing_agents_to_a_platform_set_up_before_them(settings, tmp_path: Path) -> None:
    settings.VAR_DIR = tmp_path
    password = demo.demo_data_load()
    get_user_model().objects.filter(username__in=["sam", "mei"]).delete()

    assert demo.demo_data_load() is None

    assert get_user_model().objects.get(username="sam").check_password(password)
    assert get_user_model().objects.get(username="mei").check_password(password)
    assert get_user_model().objects.filter(username="lin").count() == 1


def test_it_keeps_an_existing_agent_and_its_password(settings, tmp_path: Path) -> None:
    settings.VAR_DIR = tmp_path
    get_user_model().objects.create_user(username="lin", password="chosen-by-lin")

    demo.demo_data_load()

    lin = get_user_model().objects.get(username="lin")
    assert lin.check_password("chosen-by-lin")
    assert not lin.groups.exists()


def test_it_has_the_staff_groups_from_the_migration() -> None:
    assert sorted(Group.objects.values_list("name", flat=True)) == ["Agent", "Manager", "Supervisor"]
