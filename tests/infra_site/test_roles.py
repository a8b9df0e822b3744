"""The role hierarchy and the groups created for the roles."""

import pytest
from django.contrib.auth.models import Group

from infra_site import roles


def test_hierarchy_expands_to_implied_roles():
    assert roles.expand({"migrations:manage"}) == {"migrations:manage", "migrations:execute", "migrations:read"}
    assert roles.expand({"databases:manage"}) == {"databases:manage", "databases:read"}
    assert roles.expand({"infrastructure:admin"}) == set(roles.ALL_ROLES)
    assert roles.expand({"migrations:read", "unknown:role"}) == {"migrations:read"}


@pytest.mark.django_db
def test_a_group_exists_for_every_role():
    assert set(Group.objects.values_list("name", flat=True)) >= set(roles.ALL_ROLES)


@pytest.mark.django_db
def test_user_roles_follow_group_membership(make_user, django_user_model):
    user = make_user("migrations:execute")
    assert roles.has_role(user, "migrations:read")
    assert not roles.has_role(user, "migrations:manage")
    assert not roles.has_role(user, "databases:read")
    superuser = django_user_model.objects.create_superuser("root", password="x")
    assert roles.user_roles(superuser) == set(roles.ALL_ROLES)


@pytest.mark.django_db
def test_a_local_role_holder_without_staff_can_sign_in_to_the_admin(client, make_user):
    make_user("databases:read", username="operator", password="op-password-1")
    make_user(username="nobody", password="op-password-1")
    response = client.post("/admin/login/", {"username": "operator", "password": "op-password-1", "next": "/admin/"})
    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200
    client.logout()
    response = client.post("/admin/login/", {"username": "nobody", "password": "op-password-1", "next": "/admin/"})
    assert response.status_code == 200
    assert "/admin/" not in response.get("Location", "")
