"""Make the pictures in docs/examples/: a package sheet (A4) and a custody form (Letter).

    .venv/bin/python scripts/make_examples.py            # writes docs/examples/*.png

Builds throwaway vaults from clearly fictional sample data (an office that ingests 25 files
and sends them to ICC-OTP, whose officer opens the package), renders `evault package sheet
--format html --paper a4` in the office and `evault report custody --format html --paper
letter` of a received item at ICC-OTP, prints both to PDF with headless Chromium (Debian
`chromium`) and turns each page into a PNG with `pdftoppm` (poppler-utils). The tests use
:func:`print_to_pdf` from here, so the pictures come from the same printing as the tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
CASE = "XX-2026-0007"

# Headless printing on a machine with no network, no display and no user profile: each of
# these flags stops Chromium from reaching out or waiting for something that is not there.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-pdf-header-footer",
)


def chromium() -> str | None:
    """The Chromium executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def print_to_pdf(page: Path, pdf: Path, *, browser: str = "chromium") -> Path:
    """Print an HTML file to ``pdf`` as Chromium does (its own profile, no header/footer)."""
    with tempfile.TemporaryDirectory(prefix="evault-chromium-") as profile:
        proc = subprocess.run(
            [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
             f"--print-to-pdf={pdf}", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=120,
        )
    if proc.returncode != 0 or not pdf.is_file():
        raise RuntimeError(f"chromium could not print {page} (exit {proc.returncode}): "
                           f"{proc.stderr[-2000:]}")
    return pdf


class Evault:
    """Runs ``python -m vault`` with a throwaway key file and stops at the first failure."""

    def __init__(self, work: Path) -> None:
        self.env = {**os.environ, "EVAULT_KEY_STORAGE": "file",
                    "EVAULT_PASSPHRASE": "fictional example passphrase"}
        self.env.pop("EVAULT_HOME", None)
        self.work = work

    def __call__(self, *args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "vault", *args], env=self.env,
                              capture_output=True, text=True, cwd=self.work)
        if proc.returncode != 0:
            raise SystemExit(f"make_examples: evault {' '.join(args)}: {proc.stderr}")
        return proc.stdout


def build_forms(work: Path) -> tuple[Path, Path]:
    """The sheet (A4) of a 25-item package and the custody form (Letter) of a received item."""
    evault = Evault(work)
    office, icc = str(work / "office"), str(work / "icc")
    evault("init", "--vault", office)
    evault("init", "--vault", icc)
    evault("identity", "create", "registry-office", "--org", "Fictional Ministry of Justice",
           "--vault", office)
    officer = json.loads(evault("identity", "create", "icc-officer", "--json", "--vault", icc))
    evault("identity", "export", "icc-officer", "-o", str(work / "icc.card.json"),
           "--vault", icc)
    evault("body", "add", "ICC-OTP", "--name", "Fictional Office of the Prosecutor",
           "--vault", office)
    evault("body", "key", "add", "ICC-OTP", "--card", str(work / "icc.card.json"),
           "--fingerprint", officer["fingerprint"], "--vault", office)
    samples = work / "samples"
    samples.mkdir()
    for n in range(1, 26):
        (samples / f"photo-{n:02d}.jpg").write_bytes(
            b"FICTIONAL SAMPLE - NOT REAL EVIDENCE\n" + bytes((n * 31 + i) % 256
                                                               for i in range(2000 * n)))
    evault("case", "create", CASE, "--title", "Fictional damage to a village school",
           "--vault", office)
    evault("ingest", str(samples), "--recursive", "--case", CASE, "--title",
           "Photograph of the school's east wall (fictional)", "--source",
           "Fictional field team 3", "--collected-at", "2026-03-14T09:30:00Z",
           "--location", "Fictional village, grid 12-34", "--also-digest", "sha1",
           "--vault", office)
    evault("custody", "checkpoint", "--vault", office)
    built = json.loads(evault("package", "create", "--to", "ICC-OTP", "--case", CASE, "-o",
                              str(work / "package.evpkg"), "--json", "--vault", office))
    outbox = work / "outbox"
    outbox.mkdir()
    evault("send", str(work / "package.evpkg"), "--outbox", str(outbox), "--vault", office)
    evault("identity", "export", "registry-office", "-o", str(work / "office.card.json"),
           "--vault", office)
    sender = json.loads(evault("identity", "show", "--json", "--vault", office))
    evault("contact", "add", str(work / "office.card.json"), "--fingerprint",
           sender["fingerprint"], "--vault", icc)
    evault("open", str(outbox / f"{built['id']}.evpkg"), "--out", str(work / "opened"),
           "--vault", icc)
    evault("custody", "checkpoint", "--vault", icc)
    received = json.loads(evault("items", "list", "--json", "--vault", icc))[0]["id"]
    sheet = work / "package-sheet-a4.html"
    evault("package", "sheet", built["id"], "--format", "html", "--paper", "a4", "-o",
           str(sheet), "--vault", office)
    form = work / "custody-form-letter.html"
    evault("report", "custody", received, "--format", "html", "--paper", "letter", "-o",
           str(form), "--vault", icc)
    return sheet, form


def main() -> None:
    browser = chromium()
    if browser is None or shutil.which("pdftoppm") is None:
        raise SystemExit("make_examples: needs chromium and pdftoppm (apt-get install "
                         "chromium poppler-utils)")
    EXAMPLES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="evault-examples-") as tmp:
        for page in build_forms(Path(tmp)):
            pdf = print_to_pdf(page, page.with_suffix(".pdf"), browser=browser)
            for old in EXAMPLES.glob(f"{page.stem}-*.png"):
                old.unlink()
            subprocess.run(["pdftoppm", "-r", "60", "-png", str(pdf),
                            str(EXAMPLES / page.stem)], check=True)
    for png in sorted(EXAMPLES.glob("*.png")):
        print(f"{png.relative_to(ROOT)}  {png.stat().st_size} bytes")


if __name__ == "__main__":
    main()
