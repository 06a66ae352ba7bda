# The moderation rule that stopped a reply, for staff (conversations/moderation/).

import importlib

from django.db import migrations, models

search_triggers_recreate = importlib.import_module(
    "conversations.migrations.0004_search"
).sqlite_triggers_recreate


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0009_shares"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="moderation_rule",
            field=models.CharField(blank=True, max_length=100),
        ),
        # On SQLite, adding a NOT NULL column rebuilds the table, which drops the
        # search triggers: make them again.
        migrations.RunPython(search_triggers_recreate, migrations.RunPython.noop, elidable=False),
    ]
