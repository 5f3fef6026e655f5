"""The versions of the CGU (terms of use), as data: each version's exact text ships with this
package and its SHA-256 is fixed here, so booking validates and consent proves against the same
bytes. A new version is a new text file and a new entry; old entries are never edited."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class CguVersion:
    version: str
    sha256: str
    effective_from: date
    text_file: str

    def text(self) -> str:
        return _read(self.text_file)

    def computed_sha256(self) -> str:
        return hashlib.sha256(self.text().encode("utf-8")).hexdigest()


@cache
def _read(name: str) -> str:
    return resources.files("visio_shared.cgu").joinpath(name).read_text(encoding="utf-8")


CGU_VERSIONS: dict[str, CguVersion] = {
    "1": CguVersion(
        version="1",
        sha256="56311bfe82d28c24b805c9fd491d62c0216d522287bc30b09997861ac922afc1",
        effective_from=date(2024, 1, 1),
        text_file="v1.txt",
    ),
}


def current_cgu() -> CguVersion:
    return max(CGU_VERSIONS.values(), key=lambda version: version.effective_from)
