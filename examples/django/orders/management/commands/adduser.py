"""manage.py adduser NAME: a user whose password is read from stdin (so that
it shows in no process list); the launcher's alice and bob."""
import sys

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create or update a user; the password is the first line of stdin."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, username, **options):
        password = sys.stdin.readline().rstrip("\n")
        user, _ = get_user_model().objects.get_or_create(username=username)
        user.set_password(password)
        user.save()
