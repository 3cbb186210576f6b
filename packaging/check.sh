#!/usr/bin/env bash
# Packaging checks, run by .ci/run before the tests and runnable alone:
#
#   packaging/check.sh [SCHEDULER]     SCHEDULER: the `scheduler` executable of an installed
#                                      checkout (default: the one on PATH)
#
# 1. The packaged scheduler.yaml and the playbook's example task files pass `scheduler validate`.
# 2. The systemd unit passes `systemd-analyze verify` (systemd is installed with apt-get when
#    missing; a failed install is a failure, never a skip).
# 3. The Ansible playbook passes `ansible-playbook --syntax-check` and ansible-lint, and the
#    role's config template, rendered for typical settings, passes `scheduler validate --config`.
#    Ansible goes into its own virtualenv (ANSIBLE_VENV to reuse one), not the test one.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "packaging/check.sh: $*" >&2; exit 1; }

scheduler="${1:-$(command -v scheduler || true)}"
[[ -n "$scheduler" && -x "$scheduler" ]] || fail "no scheduler executable: pass the path of an installed one"
scheduler="$(cd "$(dirname "$scheduler")" && pwd)/$(basename "$scheduler")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== packaged configuration and example task files"
"$scheduler" validate --config packaging/scheduler.yaml
"$scheduler" validate packaging/ansible/tasks.d

echo "== systemd unit"
if ! command -v systemd-analyze >/dev/null; then
    command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]] \
        || fail "systemd-analyze is missing; install systemd (needs root and apt-get here)"
    echo "installing systemd for systemd-analyze"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd; } \
        >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; fail "apt-get could not install systemd"; }
fi
# `verify` checks that every Exec*= program exists and is executable, and the unit names the
# installed layout (/opt/scheduler/venv), absent here: verify a copy whose venv path points at
# the scheduler under test, so the real command lines are still the ones checked.
sed "s#/opt/scheduler/venv/bin/#$(dirname "$scheduler")/#g" packaging/systemd/scheduler.service >"$work/scheduler.service"
# It exits 0 on unknown keys and unparsable values, only printing them: any output fails.
verify_output="$(systemd-analyze verify "$work/scheduler.service" 2>&1)" || fail "systemd-analyze verify: $verify_output"
[[ -z "$verify_output" ]] || fail "systemd-analyze verify complained: $verify_output"
if systemd-analyze security --help 2>/dev/null | grep -q -- --offline; then
    # For information: systemd's exposure score of the hardening (10 = none).
    systemd-analyze security --offline=yes "$work/scheduler.service" 2>/dev/null | grep "Overall exposure" || true
fi
echo "systemd-analyze verify: ok"

echo "== Ansible role and playbook"
ansible_venv="${ANSIBLE_VENV:-$work/ansible-venv}"
if [[ ! -x "$ansible_venv/bin/ansible-playbook" ]]; then
    python3 -m venv "$ansible_venv"
    # Pinned below the next majors: a new lint rule must not break CI unannounced.
    "$ansible_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        'ansible-core>=2.15,<2.20' 'ansible-lint>=24,<27'
fi
export PATH="$ansible_venv/bin:$PATH" ANSIBLE_NOCOLOR=1 ANSIBLE_LOCALHOST_WARNING=false
(
    cd packaging/ansible
    ansible-playbook --syntax-check -i inventory.example.ini site.yml
    ansible-lint --offline --nocolor  # everything here but tasks.d (.ansible-lint)
    # The local "host" runs modules with the Ansible venv's Python, not a discovered one.
    ansible-playbook -i localhost, tests/render-config.yml -e "ansible_python_interpreter=$ansible_venv/bin/python" \
        -e "scheduler_cli=$scheduler" -e "out_dir=$work/rendered" >"$work/render.log" 2>&1 \
        || { cat "$work/render.log" >&2; exit 1; }
    echo "rendered configurations pass scheduler validate --config: $(ls "$work/rendered" | tr '\n' ' ')"
) || fail "Ansible checks failed"
echo "packaging checks passed"
