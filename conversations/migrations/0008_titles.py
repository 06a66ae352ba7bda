import importlib

from django.db import migrations, models


def search_triggers_recreate(apps, schema_editor) -> None:
    """Adding a NOT NULL column rebuilds the SQLite table, and its search
    triggers go with the old one (see 0004_search)."""
    if schema_editor.connection.vendor == "sqlite":
        search = importlib.import_module("conversations.migrations.0004_search")
        search.sqlite_triggers_create(schema_editor)


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
