#!/usr/bin/env python3
"""Check evault custody checkpoints (C2SP signed notes) and a consistency proof between two of
them (RFC 9162) without evault: Python 3.8+ and the `cryptography` package are enough.

  verify-checkpoint.py --key VKEY CHECKPOINT
  verify-checkpoint.py --key VKEY OLD NEW --proof PROOF.json
  verify-checkpoint.py --key VKEY --cosigner-key RECIPIENT.pub ACK [NEW --proof PROOF.json]

VKEY is the log's verifier key `evault/<vault-id>+<key id>+<base64 key>`, or a file holding it.
A CHECKPOINT may also be a sharing receipt or acknowledgement (its "checkpoint" is used).
PROOF.json is what `evault custody consistency OLD NEW -o PROOF.json` writes.
With --cosigner-key (the acknowledging officer's OpenSSH public key), the first file is an
acknowledgement and its "cosigned_checkpoint" is used: the sender's checkpoint must also carry
that key's C2SP cosignature/v1 under the name evault-witness/<the ack's body>.
Prints one OK: or MISMATCH: line per file; exit 0 if all are OK, 3 if not, 2 on bad usage.
"""
import argparse, base64, hashlib, json, os, sys, time  # noqa: E401
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def b64(s):
    return base64.b64decode(s, validate=True)


def parse_vkey(vkey):
    """(name, key id, public key, SSH fingerprint) of a verifier key name+hex(id)+base64(0x01||key)."""
    name, key_id, key = vkey.strip().split("+", 2)  # base64 may hold "+", a name may not
    key, key_id = b64(key), bytes.fromhex(key_id)
    if key[:1] != b"\x01" or len(key) != 33 or hashlib.sha256(
            name.encode() + b"\n" + key).digest()[:4] != key_id:
        raise ValueError("not an ed25519 verifier key whose key id matches its name and key")
    ssh = hashlib.sha256(b"\0\0\0\x0bssh-ed25519\0\0\0\x20" + key[1:]).digest()  # as ssh-keygen -l
    fingerprint = "SHA256:" + base64.b64encode(ssh).decode().rstrip("=")
    return name, key_id, Ed25519PublicKey.from_public_bytes(key[1:]), fingerprint


def open_note(note, vkey):
    """The text of a C2SP signed note; ValueError unless ``vkey`` signed it."""
    name, key_id, key, _ = vkey
    split = note.rfind("\n\n")
    text, lines = note[: split + 1], note[split + 2:].split("\n")
    if split < 0 or lines.pop() != "":
        raise ValueError("not a signed note (text, blank line, signature lines)")
    sigs = [b64(line.split(" ")[2]) for line in lines if line.startswith(f"\u2014 {name} ")]
    sigs = [s[4:] for s in sigs if s[:4] == key_id]
    if not sigs:
        raise ValueError(f"no signature by {name}+{key_id.hex()}")
    for sig in sigs:
        try:
            key.verify(sig, text.encode("utf-8"))
        except InvalidSignature:
            raise ValueError(f"signature by {name}+{key_id.hex()} does not verify") from None
    return text


def parse_ssh_key(line):
    """(raw key, SSH fingerprint) of an OpenSSH public key line ``ssh-ed25519 AAAA...``."""
    blob = b64(line.split()[1])
    if blob[:19] != b"\0\0\0\x0bssh-ed25519\0\0\0\x20" or len(blob) != 51:
        raise ValueError("not an ssh-ed25519 public key")
    fingerprint = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return blob[19:], "SHA256:" + fingerprint


def check_cosignature(note, text, name, raw):
    """The time of ``name``'s C2SP cosignature/v1 by key ``raw``; ValueError unless it verifies."""
    key_id = hashlib.sha256(name.encode() + b"\n\x04" + raw).digest()[:4]
    lines = note[note.rfind("\n\n") + 2:].split("\n")
    blobs = [b64(line.split(" ")[2]) for line in lines if line.startswith(f"\u2014 {name} ")]
    blobs = [b for b in blobs if b[:4] == key_id]
    if not blobs:
        raise ValueError(f"no cosignature by {name}+{key_id.hex()}")
    for blob in blobs:  # key ID, u64 big-endian time, Ed25519 signature
        when = int.from_bytes(blob[4:12], "big")
        message = f"cosignature/v1\ntime {when}\n{text}".encode("utf-8")
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(blob[12:], message)
        except InvalidSignature:
            raise ValueError(f"cosignature by {name}+{key_id.hex()} does not verify") from None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def open_checkpoint(path, vkey, cosigner=None):
    """(origin, size, root, what) of the checkpoint in ``path``; ValueError unless ``vkey``
    signed it (and, given ``cosigner``, an ack's cosigned checkpoint was cosigned by it)."""
    with open(path, "rb") as f:
        note = f.read(1 << 20).decode("utf-8", "replace")
    doc = json.loads(note) if note.startswith("{") else None
    if cosigner and not (doc and doc.get("cosigned_checkpoint")):
        raise ValueError("not an acknowledgement with a cosigned_checkpoint (version 2)")
    if doc:
        note = doc["cosigned_checkpoint"] if cosigner else doc["checkpoint"]
    text = open_note(note, vkey)
    origin, size, root = text.split("\n")[:3]
    if origin != vkey[0] or not size.isascii() or str(int(size)) != size or len(b64(root)) != 32:
        raise ValueError(f"not a checkpoint of log {vkey[0]} (origin, size, 32-byte root)")
    what = f"checkpoint of {origin} at size {size}, signed by {vkey[0]}+{vkey[1].hex()} " \
           f"(key {vkey[3]})"
    if cosigner:
        name = "evault-witness/" + doc["body"]
        when = check_cosignature(note, text, name, cosigner[0])
        what += f", cosigned by {name} (key {cosigner[1]}) at {when}"
    return origin, int(size), b64(root), what


def consistent(size1, size2, proof, root1, root2):
    """RFC 9162 2.1.4.2: does ``proof`` show the tree of size1 leaves is a prefix of size2's?"""
    node = lambda left, right: hashlib.sha256(b"\x01" + left + right).digest()  # noqa: E731
    if not 0 < size1 <= size2 or (size1 == size2 and (proof or root1 != root2)):
        return False
    if size1 == size2:
        return True
    if not proof or any(len(h) != 32 for h in (root1, root2, *proof)):
        return False
    path = list(proof) if size1 & (size1 - 1) else [root1, *proof]  # size1 a power of two
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == root1 and sr == root2


def check_proof(path, old, new):
    """Raise ValueError unless the proof file leads from checkpoint ``old`` to ``new``."""
    with open(path, "rb") as f:
        p = json.loads(f.read(1 << 20))
    if (p["origin"], p["old_size"], p["new_size"]) != (old[0], old[1], new[1]):
        raise ValueError(f"is from size {p['old_size']} to {p['new_size']} of {p['origin']}; "
                         f"the checkpoints are at {old[1]} and {new[1]} of {old[0]}")
    if (b64(p["old_root"]), b64(p["new_root"])) != (old[2], new[2]):
        raise ValueError("its roots are not the checkpoints' signed roots")
    hashes = [b64(h) for h in p["proof"]]
    empty = hashlib.sha256(b"").digest()
    if not (consistent(old[1], new[1], hashes, old[2], new[2]) if old[1] else
            (not hashes and old[2] == empty)):
        raise ValueError(f"does not prove that the log of size {new[1]} extends size {old[1]}")
    return f"the log grew from {old[1]} to {new[1]} events without rewriting ({len(hashes)} " \
           "proof hashes)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--key", required=True, help="verifier key name+id+key, or a file with it")
    ap.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT")
    ap.add_argument("--proof", help="consistency proof from OLD to NEW (JSON)")
    ap.add_argument("--cosigner-key", help="the acknowledging officer's OpenSSH public key file")
    a = ap.parse_args()
    if len(a.checkpoints) > 2 or (a.proof is None) != (len(a.checkpoints) == 1):
        ap.error("give one CHECKPOINT, or OLD NEW --proof PROOF.json")
    try:
        vkey = parse_vkey(open(a.key).read() if os.path.isfile(a.key) else a.key)
        cosigner = a.cosigner_key and parse_ssh_key(open(a.cosigner_key).read())
    except (OSError, ValueError, IndexError) as e:
        ap.error(f"--key or --cosigner-key: {e}")
    errors = (OSError, ValueError, KeyError, TypeError, IndexError)
    heads, bad = [], 0
    for i, path in enumerate(a.checkpoints):
        try:
            heads.append(open_checkpoint(path, vkey, cosigner if i == 0 else None))
            print(f"OK: {path}: {heads[-1][3]}")
        except errors as e:
            bad += 1
            print(f"MISMATCH: {path}: {e}")
    if a.proof:
        try:
            if len(heads) < 2:
                raise ValueError("not checked: a checkpoint did not verify")
            print(f"OK: {a.proof}: {check_proof(a.proof, *(h[:3] for h in heads))}")
        except errors as e:
            bad += 1
            print(f"MISMATCH: {a.proof}: {e}")
    sys.exit(3 if bad else 0)


if __name__ == "__main__":
    main()
