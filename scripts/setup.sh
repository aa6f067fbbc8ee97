#!/usr/bin/env bash
# Sets up gaze_rl on this machine, idempotently: a Vulkan renderer for SAPIEN (ManiSkill3's
# renderer), a virtualenv in .venv with the package and its test extras. Never fakes frames:
# where it cannot install a renderer itself it stops and prints the exact fix.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
# torch 2.13.0 is the CPU wheel on the project's machines; set TORCH_SPEC for another build.
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

mesa_version() { dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | sed 's/^[0-9]*://'; }
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

ensure_vulkan() {
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    say "NVIDIA GPU found: SAPIEN renders with the NVIDIA Vulkan driver (no Mesa install)"
    return
  fi
  local have; have=$(mesa_version || true)
  if [ -n "$have" ] && version_ge "$have" "24.3" && dpkg-query -W libvulkan1 >/dev/null 2>&1; then
    say "Mesa lavapipe $have found (SAPIEN needs >= 24.3)"
    return
  fi
  local fix="SAPIEN needs a Vulkan driver: Mesa's lavapipe >= 24.3 (found: ${have:-none}). On Debian 12:
  echo 'Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' | sudo tee /etc/apt/sources.list.d/backports.sources
  sudo apt-get update && sudo apt-get install -y -t bookworm-backports mesa-vulkan-drivers libvulkan1
Elsewhere install Mesa >= 24.3's Vulkan drivers (package mesa-vulkan-drivers / vulkan-swrast) or a GPU driver."
  if ! grep -q 'VERSION_CODENAME=bookworm' /etc/os-release 2>/dev/null; then die "$fix"; fi
  if [ "$(id -u)" != 0 ]; then die "not root, cannot install it myself. $fix"; fi
  say "installing Mesa lavapipe from bookworm-backports"
  local src=/etc/apt/sources.list.d/debian.sources
  if [ -f "$src" ]; then
    # Reuse the mirror apt already uses, with the backports suite.
    awk 'BEGIN{RS="";ORS="\n"} NR==1' "$src" | sed -e 's/^Suites:.*/Suites: bookworm-backports/' \
      > /etc/apt/sources.list.d/backports.sources
  else
    printf 'deb http://deb.debian.org/debian bookworm-backports main\n' > /etc/apt/sources.list.d/backports.list
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
  have=$(mesa_version); version_ge "$have" "24.3" || die "installed Mesa $have is still older than 24.3. $fix"
  say "Mesa lavapipe $have installed"
}

ensure_venv() {
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python >= 3.11 is needed (found $(python3 --version))"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  # Install once per version of pyproject.toml, not on every make train / make test.
  local stamp="$VENV/.gaze_rl-installed" want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && "$VENV/bin/python" -c 'import gaze_rl' 2>/dev/null; then
    say "packages up to date (pyproject.toml unchanged since the last install)"
    return
  fi
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -c 'import torch' 2>/dev/null || "$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
  "$VENV/bin/python" -m pip install -q -e ".[test]"
  echo "$want" > "$stamp"
}

check_renderer() {
  "$VENV/bin/python" - <<'PY' || die "SAPIEN finds no Vulkan rendering device; see the Vulkan fix above (or README)"
import sapien
summary = sapien.render.get_device_summary()
assert "Supported: 1" in summary, summary
PY
  say "SAPIEN renderer OK"
}

ensure_vulkan
ensure_venv
check_renderer
say "ready: $VENV/bin/gaze-rl"
