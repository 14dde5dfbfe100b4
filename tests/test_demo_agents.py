"""The demo's agents: make run's newcomer can log into the console as lin or sam right away."""

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
        assert not user.is_staff


def test_it_adds_missing_agents_to_a_platform_set_up_before_them(settings, tmp_path: Path) -> None:
    settings.VAR_DIR = tmp_path
    password = demo.demo_data_load()
    get_user_model().objects.filter(username="sam").delete()

    assert demo.demo_data_load() is None

    assert get_user_model().objects.get(username="sam").check_password(password)
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
