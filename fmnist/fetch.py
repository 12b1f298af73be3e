"""Obtains the four official Fashion-MNIST files and verifies them against recorded checksums.

Sources, in order: a directory the caller names, the Debian package location (installing
`dataset-fashion-mnist` with apt when allowed and running as root on Debian), then the official
download URLs. Checksums are of the *decompressed* content: Debian re-writes the gzip headers,
so compressed bytes differ between sources while the IDX data is identical.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from fmnist.dataset import IDX_FILES, TEST, TRAIN

log = logging.getLogger(__name__)

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
OFFICIAL_BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


@dataclass(frozen=True)
class DataFile:
    name: str
    sha256: str  # of the decompressed IDX content
    size: int  # decompressed bytes


DATA_FILES = (
    DataFile(IDX_FILES[TRAIN][0], "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 47040016),
    DataFile(IDX_FILES[TRAIN][1], "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60008),
    DataFile(IDX_FILES[TEST][0], "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7840016),
    DataFile(IDX_FILES[TEST][1], "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10008),
)


class ChecksumError(RuntimeError):
    """A data file whose decompressed content is not the official one."""


def decompressed_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    except (OSError, EOFError) as err:
        raise ChecksumError(f"{path}: cannot be decompressed ({err})") from err
    return digest.hexdigest()


def verify(path: Path, expected: DataFile, origin: Path | str | None = None) -> None:
    """Raises ChecksumError naming `origin` (where the bytes came from; default `path`)."""
    actual = decompressed_sha256(path)
    if actual != expected.sha256:
        raise ChecksumError(
            f"{origin or path}: checksum mismatch for {expected.name}: decompressed sha256 is {actual}, "
            f"expected {expected.sha256}"
        )


def _all_present(directory: Path) -> bool:
    return all((directory / f.name).is_file() for f in DATA_FILES)


def _install_debian_package() -> bool:
    if os.geteuid() != 0 or not Path("/etc/debian_version").exists() or not shutil.which("apt-get"):
        return False
    log.info("installing the Debian package %s", DEBIAN_PACKAGE)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", DEBIAN_PACKAGE]):
        if subprocess.run(command, env=env, check=False).returncode != 0:
            log.warning("%s failed", " ".join(command))
            return False
    return _all_present(DEBIAN_DIR)


def _download(url: str, target: Path) -> None:
    from tqdm import tqdm  # only the download path needs a progress bar

    with urllib.request.urlopen(url, timeout=60) as response:
        total = int(response.headers.get("Content-Length") or 0)
        with open(target, "wb") as out, tqdm(
            total=total or None, unit="B", unit_scale=True, desc=target.name
        ) as bar:
            for chunk in iter(lambda: response.read(1 << 16), b""):
                out.write(chunk)
                bar.update(len(chunk))


def _copy_verified(source: Path | str, dest_dir: Path, data_file: DataFile) -> None:
    """Copies (a Path) or downloads (a URL string) through a temporary name, so a failed check
    leaves nothing behind."""
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{data_file.name}.")
    os.close(fd)
    try:
        if isinstance(source, Path):
            shutil.copyfile(source, tmp)
        else:
            _download(source, Path(tmp))
        verify(Path(tmp), data_file, origin=source)
        os.replace(tmp, dest_dir / data_file.name)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch(
    dest: Path,
    source_dir: Path | None = None,
    allow_apt: bool = True,
    allow_download: bool = True,
    base_url: str = OFFICIAL_BASE_URL,
) -> Path:
    """Makes `dest` hold the four verified files and returns it."""
    dest.mkdir(parents=True, exist_ok=True)
    if _all_present(dest):
        for data_file in DATA_FILES:
            verify(dest / data_file.name, data_file)
        log.info("data already present and verified in %s", dest)
        return dest

    if source_dir is not None:
        if not _all_present(source_dir):
            missing = [f.name for f in DATA_FILES if not (source_dir / f.name).is_file()]
            raise FileNotFoundError(f"{source_dir} lacks {', '.join(missing)}")
        origin: str | Path = source_dir
    elif _all_present(DEBIAN_DIR) or (allow_apt and _install_debian_package()):
        origin = DEBIAN_DIR
    elif allow_download:
        origin = base_url
    else:
        raise FileNotFoundError(
            f"no Fashion-MNIST files: pass a source directory, install the Debian package "
            f"{DEBIAN_PACKAGE}, or allow the download from {base_url}"
        )
    log.info("fetching Fashion-MNIST from %s into %s", origin, dest)
    for data_file in DATA_FILES:
        source = origin / data_file.name if isinstance(origin, Path) else origin + data_file.name
        _copy_verified(source, dest, data_file)
    return dest
