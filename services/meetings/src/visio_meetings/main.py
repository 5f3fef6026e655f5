"""`visio-rdv-meetings`: run the meetings service (settings from `MEETINGS_*`)."""

from __future__ import annotations

from visio_runtime.settings import load_settings

from visio_meetings.settings import MeetingsSettings


def main() -> None:
    settings = load_settings(MeetingsSettings, "visio-rdv-meetings")
    # Imported once the settings are accepted: a refused start needs none of it.
    from visio_runtime.service import serve

    from visio_meetings.app import create_app

    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
