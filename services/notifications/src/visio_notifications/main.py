"""Console script `visio-rdv-notifications`: the service, for containers."""

from __future__ import annotations

from visio_runtime.settings import load_settings

from visio_notifications.settings import NotificationsSettings


def main() -> None:
    settings = load_settings(NotificationsSettings, "visio-rdv-notifications")
    # Imported once the settings are accepted: a refused start needs none of it.
    from visio_runtime.service import serve

    from visio_notifications.app import create_app

    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
