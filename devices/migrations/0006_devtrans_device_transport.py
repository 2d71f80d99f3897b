from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("devices", "0005_device_presence_and_broker_password"),
    ]

    operations = [
        migrations.AddField(
            model_name="device",
            name="transport",
            field=models.CharField(blank=True, default="", editable=False, max_length=16),
        ),
    ]
