# Sourced by scripts/test, scripts/demo and bench/run: makes sure the system programs Gatehouse's
# tests and demo drive are installed. As root on Debian it installs what is missing;
# otherwise it names the packages and stops.

# install_packages PACKAGE ...: as root on Debian installs them; otherwise names them and stops.
install_packages() {
    if [ "$#" -eq 0 ]; then
        return 0
    fi
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing missing packages: $*" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >&2
        apt-get install -y -q --no-install-recommends "$@" >&2
    else
        echo "missing packages: $*" >&2
        echo "install them with: sudo apt-get install -y $*" >&2
        exit 1
    fi
}

# ensure_packages PROGRAM:PACKAGE ...
ensure_packages() {
    local missing=()
    local pair prog pkg
    for pair in "$@"; do
        prog=${pair%%:*}
        pkg=${pair#*:}
        if ! command -v "$prog" >/dev/null 2>&1 \
            && ! [ -x "/usr/sbin/$prog" ] \
            && ! compgen -G "/usr/lib/postgresql/*/bin/$prog" >/dev/null; then
            case " ${missing[*]} " in *" $pkg "*) ;; *) missing+=("$pkg") ;; esac
        fi
    done
    install_packages "${missing[@]}"
}

# ensure_files PATH:PACKAGE ...: files a package installs that are not programs (pgjdbc's jar).
ensure_files() {
    local missing=()
    local pair path pkg
    for pair in "$@"; do
        path=${pair%%:*}
        pkg=${pair#*:}
        if ! [ -e "$path" ]; then
            case " ${missing[*]} " in *" $pkg "*) ;; *) missing+=("$pkg") ;; esac
        fi
    done
    install_packages "${missing[@]}"
}

# ensure_user NAME: a system user without home or password (a target login that is not
# root: sshd serves root without privilege separation, which refuses some requests).
ensure_user() {
    if id -u "$1" >/dev/null 2>&1; then
        return 0
    fi
    if [ "$(id -u)" -eq 0 ]; then
        echo "creating the system user $1 (tests log in to their sshd as it)" >&2
        # password '*': none valid, yet not locked ('!'), which sshd without PAM refuses
        useradd --system --no-create-home --home-dir /nonexistent --shell /bin/sh --password '*' "$1"
    else
        echo "missing user: $1; create it with: sudo useradd --system --no-create-home --shell /bin/sh --password '*' $1" >&2
        exit 1
    fi
}

ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo not found: install the Rust toolchain (https://rustup.rs), then run this again" >&2
        exit 1
    fi
}

# The test command also checks formatting and lints.
ensure_cargo_lints() {
    ensure_cargo
    if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
        echo "cargo fmt or cargo clippy missing: rustup component add rustfmt clippy" >&2
        exit 1
    fi
}

# ensure_python_modules MODULE:PACKAGE ...: Python modules from Debian's packages, imported
# by Debian's own /usr/bin/python3 (the adversarial tests drive paramiko and psycopg 3 with it).
ensure_python_modules() {
    local missing=()
    local pair module pkg
    command -v /usr/bin/python3 >/dev/null 2>&1 || missing+=(python3)
    for pair in "$@"; do
        module=${pair%%:*}
        pkg=${pair#*:}
        if ! /usr/bin/python3 -c "import $module" >/dev/null 2>&1; then
            missing+=("$pkg")
        fi
    done
    install_packages "${missing[@]}"
}
