"""Console script `visio-rdv-consent`: run the consent service."""

from __future__ import annotations

from visio_runtime.settings import load_settings

from visio_consent.settings import ConsentSettings


def main() -> None:
    settings = load_settings(ConsentSettings, "visio-rdv-consent")
    # Imported once the settings are accepted: a refused start needs none of it.
    from visio_runtime.service import serve

    from visio_consent.app import create_app

    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
