#!/usr/local/bin/python3
"""Container HEALTHCHECK probe: GET $HEALTHCHECK_URL, exit 0 on a 2xx answer, 1 otherwise.

python:3.11-slim ships no curl, and the standard library is enough. For HTTPS with a private
CA (the Graph emulator's dev CA) set HEALTHCHECK_CA_FILE to the PEM bundle to trust.
"""

import os
import ssl
import sys
import urllib.error
import urllib.request


def probe(url: str, ca_file: str | None, timeout: float) -> str | None:
    """Return None when healthy, else a one-line reason."""
    try:
        # A missing CA file is an unhealthy container (the emulator has not written it yet).
        context = ssl.create_default_context(cafile=ca_file) if ca_file else None
        # No proxy: HTTP(S)_PROXY set for the app's outbound calls must not reroute the probe.
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        with opener.open(url, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        return f"{url} answered {error.code}"
    except (OSError, ValueError) as error:
        return f"{url} unreachable: {error}"
    if not 200 <= status < 300:
        return f"{url} answered {status}"
    return None


def main() -> int:
    url = os.environ.get("HEALTHCHECK_URL", "http://127.0.0.1:8080/health/live")
    ca_file = os.environ.get("HEALTHCHECK_CA_FILE") or None
    timeout = float(os.environ.get("HEALTHCHECK_TIMEOUT", "3"))
    reason = probe(url, ca_file, timeout)
    if reason is not None:
        # Docker keeps the probe's output in `docker inspect`: say why it failed.
        print(reason, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
