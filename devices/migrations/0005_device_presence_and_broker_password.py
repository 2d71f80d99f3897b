from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("devices", "0004_ws_tickets"),
    ]

    operations = [
        migrations.AddField(
            model_name="device",
            name="mqtt_password_hash",
            field=models.CharField(blank=True, editable=False, max_length=200),
        ),
        migrations.AddField(
            model_name="device",
            name="offline_after",
            field=models.PositiveIntegerField(
                blank=True, null=True,
                help_text="seconds of silence before the device is marked offline; empty: the gateway's default "
                          "(IOTGW_OFFLINE_AFTER); 0: never"),
        ),
    ]
