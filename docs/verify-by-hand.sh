#!/usr/bin/env bash
# Verify evault packages with stock tools only: tar, ssh-keygen, sha256sum, and with -i also
# age and (if installed) bagit.py. See docs/verify-by-hand.md for the same steps typed by hand.
#
#   verify-by-hand.sh -s ALLOWED_SIGNERS [-I PRINCIPAL] [-i AGE_IDENTITY_FILE] PACKAGE...
#
# Every check prints "OK: PACKAGE: ..." or "MISMATCH: PACKAGE: ...", then one summary line.
# Exit status: 0 all OK, 3 any mismatch, 2 usage, 1 a tool is missing.
# With -i the payload is decrypted into a private temporary folder (mode 0700) that is
# removed after each package and on exit; nothing decrypted is written anywhere else.
set -u
set -o pipefail

usage() {
  echo "usage: verify-by-hand.sh -s ALLOWED_SIGNERS [-I PRINCIPAL] [-i AGE_IDENTITY_FILE] PACKAGE..." >&2
  exit 2
}
fail() { echo "verify-by-hand: $1" >&2; exit "$2"; }

# An option given twice is refused: a file named like "-sother.evpkg" in a folder that
# someone else fills must not become the allowed_signers file when a glob expands to it.
signers='' principal='' identity='' seen=''
while getopts 's:I:i:h' opt; do
  case $seen in *"$opt"*) fail "-$opt given twice; put -- before package files whose names start with '-'" 2 ;; esac
  seen=$seen$opt
  case $opt in
    s) signers=$OPTARG ;;
    I) principal=$OPTARG ;;
    i) identity=$OPTARG ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
principal=${principal:-sender}
[ -n "$signers" ] && [ $# -gt 0 ] || usage
[ -f "$signers" ] || fail "$signers: no such allowed_signers file" 2
[ -z "$identity" ] || [ -r "$identity" ] || fail "$identity: cannot read the age identity file" 2
for pkg in "$@"; do
  case $pkg in
    *[[:cntrl:]]*) fail "$(printf '%q' "$pkg"): a control character in a package file name could forge output lines; rename the file" 2 ;;
  esac
  [ -f "$pkg" ] || fail "$pkg: no such package file" 2
done

for tool in tar sha256sum ssh-keygen ${identity:+age}; do
  command -v "$tool" >/dev/null ||
    fail "$tool is not installed; install it with: apt-get install age openssh-client" 1
done
if [ -n "$identity" ] && ! command -v bagit.py >/dev/null; then
  echo "verify-by-hand: bagit.py not found (pip install bagit); checking the bag with sha256sum -c" >&2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/evault-verify.XXXXXX") || fail "cannot make a temporary folder" 1
chmod 700 "$work"
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
[ -z "$identity" ] || echo "verify-by-hand: decrypting into $work (mode 0700), removed on exit" >&2

mismatches=0 bad_packages=0
ok() { echo "OK: $pkg: $1"; }
mismatch() { echo "MISMATCH: $pkg: $1"; mismatches=$((mismatches + 1)); }
field() { grep -o "\"$1\":\"[^\"]*\"" "$2" | head -n 1 | cut -d'"' -f4; }
signed() { ssh-keygen -Y verify -f "$signers" -I "$principal" -n "$1" -s "$2.sig" < "$2" >/dev/null 2>&1; }

n=0
for pkg in "$@"; do
  n=$((n + 1))
  before=$mismatches
  d="$work/$n"
  mkdir -m 700 "$d"
  sealed=no

  members=$(tar -tf "$pkg" 2>"$d/tar.err" | tr '\n' ' ')
  case "$members" in  # the payload first (layout 2), or the envelope first (layout 1)
    "payload.age envelope.json envelope.json.sig "|"envelope.json envelope.json.sig payload.age ")
      layout=ok ;;
    *) layout=bad ;;
  esac
  # A header tar only warns about (a size field it reads otherwise than evault would) may
  # hide other members from it: a warning is a mismatch.
  if [ "$layout" = ok ] && [ -s "$d/tar.err" ]; then
    mismatch "tar warns about its headers: $(head -n 1 "$d/tar.err")"
    layout=warned
  fi
  if [ "$layout" = ok ] &&
     tar -xf "$pkg" -C "$d" envelope.json envelope.json.sig 2>/dev/null; then
    ok "tar members $(printf '%s' "${members% }" | sed 's/ /, /g')"
    if signed evault-envelope "$d/envelope.json"; then
      ok "envelope signed by $principal (evault-envelope)"
      sealed=yes
    else
      mismatch "envelope signature does not verify for $principal in $signers (evault-envelope)"
    fi
    want=$(grep -o '"payload_size":[0-9]*' "$d/envelope.json" | head -n 1 | cut -d: -f2)
    have=$(tar -tvf "$pkg" payload.age | awk '{print $3}')
    if [ -n "$want" ] && [ "$want" = "$have" ]; then
      ok "payload size $have bytes as the envelope says"
    else
      mismatch "payload size is $have bytes, the envelope says ${want:-nothing}"; sealed=no
    fi
    want=$(field payload_sha256 "$d/envelope.json")
    have=$(tar -xOf "$pkg" payload.age | sha256sum | cut -d' ' -f1)
    if [ -n "$want" ] && [ "$want" = "$have" ]; then
      ok "payload SHA-256 $have as the envelope says"
    else
      mismatch "payload SHA-256 is $have, the envelope says ${want:-nothing}"; sealed=no
    fi
  elif [ "$layout" = bad ]; then
    mismatch "not an evault package: tar members are '${members% }', expected payload.age, envelope.json, envelope.json.sig (or envelope.json, envelope.json.sig, payload.age)"
  fi

  if [ -n "$identity" ]; then
    id=$(field package_id "$d/envelope.json" 2>/dev/null)
    bag="$d/bag/$id"
    if [ "$sealed" != yes ]; then
      mismatch "payload not decrypted: the envelope or the payload did not verify"
    elif ! mkdir -m 700 "$d/bag" ||
         ! tar -xOf "$pkg" payload.age | age -d -i "$identity" 2>/dev/null |
           tar -x --no-same-owner -C "$d/bag" 2>/dev/null; then
      mismatch "payload does not decrypt with $identity"
    elif [ -z "$id" ] || [ ! -f "$bag/bagit.txt" ]; then
      mismatch "payload holds no bag named ${id:-after the package}"
    else
      ok "payload decrypts with $identity"
      if command -v bagit.py >/dev/null; then
        if bagit.py --validate "$bag" >/dev/null 2>&1; then
          ok "bag valid (bagit.py --validate)"
        else
          mismatch "bag is not valid (bagit.py --validate)"
        fi
      else
        listed=$(grep -c '' "$bag/manifest-sha256.txt")
        found=$(cd "$bag" && find data -type f | grep -c '')
        if (cd "$bag" && sha256sum -c --quiet manifest-sha256.txt >/dev/null 2>&1 &&
            sha256sum -c --quiet tagmanifest-sha256.txt >/dev/null 2>&1) &&
           [ "$listed" = "$found" ]; then
          ok "bag valid (sha256sum -c on manifest-sha256.txt and tagmanifest-sha256.txt)"
        else
          mismatch "bag is not valid (sha256sum -c on its manifests; $found files for $listed listed)"
        fi
      fi
      statement="$bag/evault/statement.json"
      if [ -f "$statement" ] && [ -f "$statement.sig" ] && signed evault-statement "$statement"; then
        ok "statement signed by $principal (evault-statement)"
      else
        mismatch "statement signature does not verify for $principal in $signers (evault-statement)"
      fi
      want=$(field tagmanifest_sha256 "$statement" 2>/dev/null)
      have=$(sha256sum "$bag/tagmanifest-sha256.txt" | cut -d' ' -f1)
      if [ -n "$want" ] && [ "$want" = "$have" ]; then
        ok "statement covers tagmanifest-sha256.txt ($have)"
      else
        mismatch "tagmanifest-sha256.txt has SHA-256 $have, the statement says ${want:-nothing}"
      fi
      said="$(field package_id "$statement" 2>/dev/null) $(field body "$statement" 2>/dev/null)"
      meant="$id $(field body "$d/envelope.json")"
      if [ "$said" = "$meant" ]; then
        ok "statement is for package $id and body ${meant#* }"
      else
        mismatch "statement is for package/body '$said', the envelope for '$meant'"
      fi
    fi
  fi
  rm -rf "$d"
  [ "$mismatches" = "$before" ] || bad_packages=$((bad_packages + 1))
done

scope="envelope and payload digest"
[ -z "$identity" ] || scope="envelope, payload digest, bag and statement"
if [ "$mismatches" -eq 0 ]; then
  echo "SUMMARY: all $n package(s) verified ($scope)"
  exit 0
fi
echo "SUMMARY: $bad_packages of $n package(s) with mismatches ($mismatches MISMATCH line(s))"
exit 3
