# prefork's settings for the example site. prefork reads ./prefork.conf.py
# from the directory it starts in (the one holding manage.py), or the file
# named with -c. See docs/django.md.
import os

wsgi_app = "mysite.wsgi:application"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))

# Import Django once, in the master, before forking: the workers share its
# memory and start at once. The cost: HUP cannot load new code (use USR2).
preload_app = True


def pre_fork(server, worker):
    # A database connection the master opened while loading the application
    # (a query in an AppConfig.ready(), say) would be inherited by every
    # worker: one socket used by several processes at once. Close it in the
    # master before each fork; every worker then opens its own on first use.
    from django.db import connections

    connections.close_all()
