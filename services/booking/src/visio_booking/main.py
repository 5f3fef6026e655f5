from __future__ import annotations

from visio_runtime.settings import load_settings

from visio_booking.settings import BookingSettings


def main() -> None:
    settings = load_settings(BookingSettings, "visio-rdv-booking")
    # Imported once the settings are accepted: a refused start needs none of it.
    from visio_runtime.service import serve

    from visio_booking.app import create_app

    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
