"""Console script `visio-rdv-notifications`: the service, for containers."""

from __future__ import annotations

from visio_runtime.service import serve

from visio_notifications.app import create_app
from visio_notifications.settings import NotificationsSettings


def main() -> None:
    settings = NotificationsSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
