#!/usr/bin/env bash
# Builds fastlb-base:bookworm, the one base of the replica and balancer images, without any
# registry: mmdebstrap makes a minimal Debian bookworm root file system from Debian's own
# packages and `docker import` turns it into an image. Nothing is pulled, so this works where
# only Debian's mirror and PyPI can be reached.
#
# Cached by tag: if fastlb-base:bookworm exists, this does nothing (remove it with
# `docker rmi fastlb-base:bookworm` to rebuild). Needs root, mmdebstrap and a running engine.
set -euo pipefail

TAG="${FASTLB_BASE_TAG:-fastlb-base:bookworm}"
SUITE=bookworm
# The balancer's and the replica's runtime, as Debian packages.
PACKAGES=(
  python3 python3-uvloop python3-httptools python3-h11 python3-xxhash python3-docker
  python3-prometheus-client ca-certificates
)
# Bookworm's python3-uvloop (0.17) has no uvloop.run, which `python -m fastlb` and
# `python -m replica` call (uvloop >= 0.18), and its python3-httptools (0.1.1) is the old
# http-parser binding, not the llhttp one fastlb's parsers are written and tested against
# (setup.cfg: httptools >= 0.6). So these two come from PyPI as manylinux wheels, fetched on this
# host (no network is needed inside the image) into /usr/local/lib/python3.11/dist-packages,
# which Debian's python3 searches before the Debian packages. Leave empty to use Debian's only.
PYTHON_VERSION=3.11  # bookworm's python3
PYPI_OVERRIDES=("uvloop>=0.19" "httptools>=0.6")

if docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "base-image: $TAG exists; nothing to do"
  exit 0
fi
for tool in mmdebstrap docker apt-cache; do
  command -v "$tool" >/dev/null || {
    echo "base-image: $tool not found; run: apt-get install -y docker.io mmdebstrap" >&2
    exit 1
  }
done

# A package missing from the archive would fail mmdebstrap after minutes of work; check first,
# and drop (saying so) what bookworm does not have.
include=()
for pkg in "${PACKAGES[@]}"; do
  if apt-cache show "$pkg" >/dev/null 2>&1; then
    include+=("$pkg")
  else
    echo "base-image: warning: $pkg is not in the apt lists (run apt-get update?); left out" >&2
  fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

started=$SECONDS
hooks=()
if ((${#PYPI_OVERRIDES[@]})); then
  echo "base-image: wheels from PyPI: ${PYPI_OVERRIDES[*]}"
  python3 -m pip --version >/dev/null 2>&1 || {
    echo "base-image: python3 -m pip not found; run: apt-get install -y python3-pip" >&2
    exit 1
  }
  # --target with an explicit platform: the wheels are for the image's python, not this one;
  # --no-deps: both have no dependencies, and everything else is Debian's.
  PIP_DISABLE_PIP_VERSION_CHECK=1 python3 -m pip install --quiet --no-deps \
    --only-binary=:all: --implementation cp --python-version "$PYTHON_VERSION" \
    --platform "manylinux2014_$(uname -m)" --target "$work/site" "${PYPI_OVERRIDES[@]}"
  rm -rf "$work/site/bin"
  hooks+=(--customize-hook="sync-in $work/site /usr/local/lib/python$PYTHON_VERSION/dist-packages")
fi
echo "base-image: mmdebstrap $SUITE (${include[*]})"
# essential: dpkg and the shell, no apt: the images install nothing at run time.
# The dpkg path excludes keep docs, man pages and translations out of the image.
mmdebstrap --quiet --variant=essential \
  --include="$(IFS=,; echo "${include[*]}")" \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  "${hooks[@]}" \
  "$SUITE" "$work/rootfs.tar"
echo "base-image: docker import -> $TAG"
docker import \
  --change 'ENV LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1' \
  --change 'CMD ["python3"]' \
  "$work/rootfs.tar" "$TAG" >/dev/null
echo "base-image: built $TAG in $((SECONDS - started)) s"
