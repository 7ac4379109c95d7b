# Sourced by scripts/test.sh and scripts/schemathesis.sh (which define `say`): a Python venv made
# from a pinned requirements file, once, and made again only when that file changes (the venv
# keeps a copy of the requirements it was made from) or the venv no longer passes its check.
#
#   pinned_venv REQUIREMENTS VENV WHAT CHECK...   (CHECK: a command that works in a good venv)
pinned_venv() {
    local requirements=$1 venv=$2 what=$3 lock
    shift 3
    mkdir -p "$(dirname "$venv")"
    # One installer at a time when several checkouts share the state dir.
    exec {lock}>"$venv.lock"
    flock "$lock"
    if ! cmp -s "$requirements" "$venv/requirements.txt" || ! "$@" >/dev/null 2>&1; then
        say "installing $what pinned in $requirements into $venv"
        command -v python3 >/dev/null || {
            say "ERROR: $what needs Python 3 (python3), with venv and pip"
            exit 1
        }
        python3 -m venv --clear "$venv" || {
            say "ERROR: python3 -m venv failed (Debian: apt-get install python3-venv)"
            exit 1
        }
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements" || {
            say "ERROR: pip install -r $requirements failed"
            exit 1
        }
        cp "$requirements" "$venv/requirements.txt"
    fi
    exec {lock}>&-
}
