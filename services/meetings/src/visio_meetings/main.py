"""`visio-rdv-meetings`: run the meetings service (settings from `MEETINGS_*`)."""

from __future__ import annotations

from visio_runtime.service import serve

from visio_meetings.app import create_app
from visio_meetings.settings import MeetingsSettings


def main() -> None:
    settings = MeetingsSettings()  # from the environment
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
