"""Sample files that carry their own provenance, for the intake tests and `make demo` (issue 22).

- :func:`c2pa_signer` makes a fictional test CA and a signing certificate under it (ES256,
  P-256), as a C2PA claim signer needs: not a CA, digitalSignature, emailProtection.
- :func:`signed_png` signs a small PNG with the C2PA library's own signing API
  (``c2pa.Builder.sign``) and that certificate; :func:`tampered` flips one byte of the
  pixels it covers; :func:`png` has no manifest at all.
- :func:`proofmode_bundle` lays a zip out as ProofMode shares a capture: the media, its
  ``<sha256>.proof.json`` and ``.proof.csv``, ``.asc`` signatures and ``pubkey.asc``.

Every name in them is fictional.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import struct
import zipfile
import zlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ORG = "Fictional Test Camera Authority"


def png(width: int = 8, height: int = 8, shade: int = 128) -> bytes:
    """A small RGB PNG, made byte by byte (no imaging library)."""
    rows = b"".join(
        b"\x00" + b"".join(bytes([(x * 30) % 256, (y * 30) % 256, shade]) for x in range(width))
        for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


@dataclass(frozen=True)
class Signer:
    """A test CA (``ca_pem``, the trust anchor) and a claim signer's chain and key."""

    ca_pem: bytes
    chain_pem: bytes
    key_pem: bytes


def _name(common: str, org: str = ORG) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])


def c2pa_signer(common_name: str = "Fictional Camera 7", org: str = ORG) -> Signer:
    """A fresh CA (of :data:`ORG`) and claim signer (of ``org``; P-256, SHA-256), valid from
    yesterday for a year."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Fictional Test Root CA")
    no_usage = dict(content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False)
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, key_cert_sign=True,
                                       crl_sign=True, **no_usage), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(common_name, org)).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False,
                                         crl_sign=False, **no_usage), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))

    def pem(c: x509.Certificate) -> bytes:
        return c.public_bytes(serialization.Encoding.PEM)

    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return Signer(pem(ca), pem(cert) + pem(ca), key_pem)


def serial_of(signer: Signer) -> str:
    """The claim signer's certificate serial number, in decimal (as C2PA reports it)."""
    return str(x509.load_pem_x509_certificates(signer.chain_pem)[0].serial_number)


def signed_png(signer: Signer, media: bytes | None = None, *,
               generator: str = "evault-test-camera") -> bytes:
    """``media`` (default :func:`png`) with a C2PA manifest signed by ``signer``, whose
    claim was made by ``generator`` 1.0."""
    import c2pa

    manifest = {
        "claim_generator_info": [{"name": generator, "version": "1.0"}],
        "title": "fictional-capture.png",
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [{
            "action": "c2pa.created",
            "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/"
                                 "digitalCapture"}]}}],
    }
    info = c2pa.C2paSignerInfo(alg=b"es256", sign_cert=signer.chain_pem,
                               private_key=signer.key_pem, ta_url=None)
    out = io.BytesIO()
    with c2pa.Signer.from_info(info) as sign, c2pa.Builder(manifest) as builder:
        builder.sign(sign, "image/png", io.BytesIO(media or png()), out)
    return out.getvalue()


def tampered(signed: bytes) -> bytes:
    """``signed`` with one byte of its pixel data (which the manifest's hash covers)
    flipped: the manifest itself is untouched."""
    data = bytearray(signed)
    at = data.index(b"IDAT") + 10
    data[at] ^= 0x01
    return bytes(data)


def proofmode_bundle(media: bytes, *, media_name: str = "IMG_20260301_101010.png",
                     named_hash: str | None = None, csv_hash: str | None = None,
                     extra: dict[str, bytes] | None = None) -> bytes:
    """A ProofMode-style share zip for ``media``: its proof names ``named_hash`` (default:
    the media's real SHA-256) in the JSON and ``csv_hash`` (default: the same) in the CSV."""
    real = hashlib.sha256(media).hexdigest()
    named = named_hash or real
    proof = {"File Hash SHA256": named, "File Path": f"/storage/fictional/{media_name}",
             "File Modified": "2026-03-01T10:10:10.000Z", "Proof Generated":
             "2026-03-01T10:10:11.000Z", "Hardware": "fictional-phone",
             "Location.Latitude": 0.0, "Location.Longitude": 0.0}
    csv_text = ("File Hash SHA256,File Path,Proof Generated\n"
                f"{csv_hash or named},/storage/fictional/{media_name},2026-03-01T10:10:11Z\n")
    fake_sig = b"-----BEGIN PGP SIGNATURE-----\nZmljdGlvbmFs\n-----END PGP SIGNATURE-----\n"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(media_name, media)
        z.writestr(f"{real}.asc", fake_sig)
        z.writestr(f"{real}.proof.json", json.dumps(proof))
        z.writestr(f"{real}.proof.json.asc", fake_sig)
        z.writestr(f"{real}.proof.csv", csv_text)
        z.writestr(f"{real}.proof.csv.asc", fake_sig)
        z.writestr("pubkey.asc", b"-----BEGIN PGP PUBLIC KEY BLOCK-----\nZmljdGlvbmFs\n"
                                 b"-----END PGP PUBLIC KEY BLOCK-----\n")
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return out.getvalue()
