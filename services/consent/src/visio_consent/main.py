"""Console script `visio-rdv-consent`: run the consent service."""

from __future__ import annotations

from visio_runtime.service import serve

from visio_consent.app import create_app
from visio_consent.settings import ConsentSettings


def main() -> None:
    settings = ConsentSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
