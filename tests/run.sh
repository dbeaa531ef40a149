#!/usr/bin/env bash
# The test command (README's Quickstart, and .ci/run): installs the Debian packages some tests use
# when they are missing, then runs pytest with the arguments given (bash tests/run.sh -m "not slow").
#   chromium              the report is checked as a picture in a headless browser (test_report_check.py)
#   slurm-wlm, munge      a one-node SLURM cluster runs the SLURM profile for real (test_slurm.py; the
#                         test starts and stops its own daemons)
# Installing needs root or sudo and the Debian package index; without them the script says which
# packages are missing and pytest runs anyway (those tests then fail and name the package).
set -euo pipefail
cd "$(dirname "$0")/.."
export DVC_NO_ANALYTICS=1 NO_ALBUMENTATIONS_UPDATE=1
PKGS=""
command -v chromium >/dev/null 2>&1 || PKGS="$PKGS chromium"
{ command -v slurmctld && command -v slurmd && command -v sbatch; } >/dev/null 2>&1 || PKGS="$PKGS slurm-wlm slurm-client"
{ command -v munged || [ -x /usr/sbin/munged ]; } >/dev/null 2>&1 || PKGS="$PKGS munge"
if [ -n "$PKGS" ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
    export DEBIAN_FRONTEND=noninteractive
    echo "tests/run.sh: installing$PKGS (apt-get)" >&2
    $SUDO apt-get install -y -q $PKGS >/dev/null 2>&1 \
        || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q $PKGS >/dev/null 2>&1; } \
        || echo "tests/run.sh: could not install$PKGS; install them yourself (apt-get install$PKGS)" >&2
fi
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
exec "$PY" -m pytest "$@"
