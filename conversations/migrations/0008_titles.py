import importlib

from django.db import migrations, models

#: The SQLite search triggers, re-made after the table is rebuilt (see 0004_search).
search_triggers_recreate = importlib.import_module(
    "conversations.migrations.0004_search"
).sqlite_triggers_recreate


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0007_attachments"),
    ]

    operations = [
        migrations.AddField(
            model_name="conversation",
            name="title_generated",
            field=models.BooleanField(default=False),
        ),
        migrations.RunPython(search_triggers_recreate, migrations.RunPython.noop, elidable=False),
    ]
