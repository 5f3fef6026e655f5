from __future__ import annotations

from visio_runtime.service import serve

from visio_booking.app import create_app
from visio_booking.settings import BookingSettings


def main() -> None:
    settings = BookingSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
