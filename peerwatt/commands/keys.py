"""`peerwatt keys`: create key pairs and show a key's id and public key."""

from __future__ import annotations

import re
from pathlib import Path

import click

from chain.keys import (
    KeyFileError,
    generate_private_key,
    key_id,
    load_private_key,
    load_public_key,
    public_key_pem,
    public_key_sec1,
    save_private_key,
)
from peerwatt.errors import UserError


def read_passphrase(passphrase_file: Path | None) -> bytes | None:
    """The passphrase stored in a file (first line), or None when no file is given."""
    if passphrase_file is None:
        return None
    try:
        text = passphrase_file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError(f"cannot read passphrase file {passphrase_file}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:  # a traceback, found in a QA pass
        raise UserError(
            f"passphrase file {passphrase_file} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
            f"offset {exc.start}): write the passphrase as UTF-8 text on its first line"
        ) from None
    if not text or not text[0]:
        raise UserError(f"passphrase file {passphrase_file} is empty")
    return text[0].encode("utf-8")


def load_key(path: Path, passphrase_file: Path | None = None):
    """Load a private key for a command, turning every key problem into a one-line UserError."""
    try:
        return load_private_key(path, read_passphrase(passphrase_file))
    except KeyFileError as exc:
        raise UserError(str(exc)) from None


@click.group()
def keys() -> None:
    """Create and inspect ECDSA P-256 key pairs."""


@keys.command("new")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Folder.")
@click.option("--name", default="peerwatt", show_default=True, help="File name stem.")
@click.option(
    "--passphrase-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Encrypt the key with the passphrase in this file.",
)
def new(out_dir: Path, name: str, passphrase_file: Path | None) -> None:
    """Generate a key pair: NAME.key (PKCS#8, mode 0600) and NAME.pub (PEM) in --out."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise UserError(f"key name {name!r} must be letters, digits, '.', '_' or '-'")
    passphrase = read_passphrase(passphrase_file)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {out_dir}: {exc.strerror}") from None
    key = generate_private_key()
    key_path, pub_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    if pub_path.exists():
        raise UserError(f"{pub_path} already exists; refusing to overwrite (choose another --name)")
    try:
        save_private_key(key, key_path, passphrase)
        pub_path.write_text(public_key_pem(key.public_key()))
    except KeyFileError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot write key files in {out_dir}: {exc.strerror}") from None
    click.echo(f"key id: {key_id(key.public_key())}")
    click.echo(f"private key: {key_path} (mode 0600, keep it secret)")
    click.echo(f"public key: {pub_path}")


@keys.command("show")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def show(file: Path, passphrase_file: Path | None) -> None:
    """Print the key id and public key of a private or public key FILE."""
    data = file.read_bytes()
    if b"PRIVATE KEY" in data:
        public = load_key(file, passphrase_file).public_key()
    else:
        try:
            public = load_public_key(data)
        except KeyFileError as exc:
            raise UserError(f"{file}: {exc}") from None
    click.echo(f"key id: {key_id(public)}")
    click.echo(f"public key (SEC1, compressed): {public_key_sec1(public).hex()}")
    click.echo(public_key_pem(public).rstrip())
